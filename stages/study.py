"""`make study`: the study on digits (budgets 5, 10, 25 labels per class; seeds 0, 1, 2; all four
methods), offline, as DVC experiments that leave the workspace's tracked files as they are.

The 36 runs are one pipeline (dvc.yaml's matrix), but `dvc repro` runs stages one after another and
most of a small run's time is process start-up, so two queued experiments run side by side on two
workers (`dvc queue start -j 2`), sharing DVC's cache and run cache:
- `study-<key>-part` runs the two cheaper methods (CrossEntropy, PAWS);
- `study-<key>` runs all four, InfoNCE and SuNCEt first: by the time it reaches CrossEntropy's and PAWS'
  stages the other experiment has run them, and DVC restores them from the run cache instead of running
  them again (were it ever first, it would run them itself: slower, never wrong). It ends with the report.
Both run in temporary copies (`--queue`): the workspace is left alone; `dvc exp show` lists them and
`dvc exp apply study-<key>` brings the report and figures into the workspace. The key is a digest of the
commit, the uncommitted changes and the profile, as for `make demo`: a second `make study` on the same
code shows the recorded table at once.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import click

from semisup.config import parse_params, read_params, with_overrides
from semisup.errors import UserError
from semisup.report import format_table
from stages.demo import _git_identity, code_key, exp_ref, fail, git
from stages.study_progress import StudyProgress

# The demo's digits profile (32x32, a 25-per-class labeled split, narrow encoder, digit-fit augmentation)
# at 10 epochs, with batches that the 5-per-class budget (50 labeled images) can fill, and k = 20 (a bank
# of 50 cannot vote with 200 neighbours).
STUDY_PARAMS = {
    "data.source": "digits",
    "data.image_size": 32,
    "data.labeled_per_class": 25,
    "data.num_shards": 2,
    "train.epochs": 10,
    "train.shuffle_buffer": 2000,
    "encoder.filters": 32,
    "augment.flip": "false",
    "augment.crop_scale": "[0.5,1.0]",
    "methods.crossentropy.unlabeled_batch": 128,
    "methods.crossentropy.labeled_batch": 50,
    "methods.infonce.unlabeled_batch": 256,
    "methods.infonce.labeled_batch": 25,
    "methods.suncet.unlabeled_batch": 128,
    "methods.suncet.labeled_batch": 50,
    "methods.paws.unlabeled_batch": 128,
    "methods.paws.labeled_batch": 50,
    "knn.k": "[20]",
    "study.labeled_per_class": "[5,10,25]",
    "study.seeds": "[0,1,2]",
}
ALL_METHODS = ("crossentropy", "infonce", "suncet", "paws")
PAGE = Path("study") / "report.html"  # git-ignored: a copy of the experiment's study page
# The experiment beside the main one: the two cheaper methods, so that it stays ahead of the main one.
BESIDE = ("crossentropy", "paws")
# The main experiment: its own two methods first, then the ones the other experiment has run by then.
MAIN = ("infonce", "suncet", "crossentropy", "paws")


def _git_env() -> dict[str, str]:
    """The environment for dvc, with the demo's stand-in git identity where git has none."""
    return {**os.environ, **_git_identity()}


def settings(methods: tuple[str, ...], extra: dict[str, str]) -> dict[str, object]:
    """The study profile, then `extra`, with these methods: what each experiment sets with -S."""
    return {**STUDY_PARAMS, **extra, "method_names": "[" + ",".join(methods) + "]"}


def overrides(methods: tuple[str, ...], extra: dict[str, str]) -> list[str]:
    """`-S key=value` arguments of the study profile, then `extra`, with these methods."""
    return [f"-S{key}={value}" for key, value in settings(methods, extra).items()]


def parse_sets(sets: tuple[str, ...]) -> dict[str, str]:
    """`-S KEY=VALUE` options -> {KEY: VALUE}, checked against params.yaml's rules as the stages will check
    them, so that a mistake stops here, not in a queued experiment after the set-up (a UserError)."""
    extra = {}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(
                f"-S {item!r}: expected KEY=VALUE, as dvc exp run -S (e.g. -S 'study.seeds=[0,1]')"
            )
        extra[key] = value
    try:
        parse_params(with_overrides(read_params("params.yaml"), settings(ALL_METHODS, extra)))
    except UserError as exc:
        given = f" and -S {' -S '.join(sets)}" if sets else ""
        raise UserError(f"{exc} (params.yaml with the study profile{given})") from None
    return extra


def dvc(*args: str, check: bool = True, capture: bool = False) -> subprocess.CompletedProcess:
    """Run a dvc command, echoing it unless captured; exit with its status when it fails and `check`."""
    if not capture:
        click.echo("$ dvc " + " ".join(args), err=True)
    proc = subprocess.run(["dvc", *args], env=_git_env(), capture_output=capture, text=True)
    if check and proc.returncode != 0:
        if capture:
            click.echo(proc.stdout + proc.stderr, err=True)
        sys.exit(proc.returncode)
    return proc


ACTIVE = ("Running", "Queued")


def queue_states(status: str, names: tuple[str, ...]) -> dict[str, str]:
    """The state (Queued, Running, Success, Failed, ...) of each of `names` in `dvc queue status` output.

    A name listed twice (a task of an earlier, interrupted attempt) counts by its running or queued task.
    """
    states: dict[str, str] = {}
    for line in status.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 2 and fields[1] in names and states.get(fields[1]) not in ACTIVE:
            states[fields[1]] = fields[-1]
    return states


def current_states(names: tuple[str, ...]) -> dict[str, str]:
    """`queue_states` of `dvc queue status` now."""
    return queue_states(dvc("queue", "status", capture=True).stdout, names)


def wait_for_queue(names: tuple[str, ...], poll_s: float = 5.0, every_s: float = 60.0) -> None:
    """Until none of the experiments `names` is queued or running, with a line every `every_s` saying how
    many stages are done and the time left (stages.study_progress); exit 1 when one of them failed.

    Only these experiments count: a failed or running experiment of an earlier study stays in the queue's
    list (`dvc queue remove --failed` clears it) and says nothing about this one.
    """
    start = last = time.monotonic()
    progress = StudyProgress(Path.cwd(), names, main=names[-1])
    while True:
        progress.poll()
        states = current_states(names)
        failed = sorted(name for name, state in states.items() if state == "Failed")
        if failed:
            sys.exit(f"error: study experiment {failed[0]} failed: see `dvc queue logs {failed[0]}`")
        if not any(state in ACTIVE for state in states.values()):
            return
        if time.monotonic() - last >= every_s:
            last = time.monotonic()
            shown = ", ".join(f"{n} {s.lower()}" for n, s in states.items())
            done = progress.line()
            click.echo(
                f"study: {(last - start) / 60:.0f} min: {done + '; ' if done else ''}{shown}", err=True
            )
        time.sleep(poll_s)


def stop_experiments(names: tuple[str, ...]) -> None:
    """Ctrl-C: stop the study's running experiments and drop its queued ones (finished stages stay in the
    run cache, which the next `make study` restores them from)."""
    running = [n for n, s in current_states(names).items() if s == "Running"]
    if running:
        dvc("queue", "kill", *running, check=False, capture=True)
    deadline = time.monotonic() + 60
    while any(s in ACTIVE for s in current_states(names).values()) and time.monotonic() < deadline:
        dvc("queue", "remove", *names, check=False, capture=True)
        time.sleep(1)
    dvc("queue", "remove", *names, check=False, capture=True)


@click.command()
@click.option("--jobs", default=2, show_default=True, type=click.IntRange(min=1), help="Queue workers.")
@click.option(
    "-S", "--set", "sets", multiple=True, help="KEY=VALUE on top of the study profile, as dvc's -S."
)
def main(jobs: int, sets: tuple[str, ...]) -> None:
    """Run the digits study and print its table (method x budget, mean and 95% interval over seeds)."""
    if shutil.which("dvc") is None:
        sys.exit("error: dvc is not on PATH (run `make study`, or activate .venv first)")
    if subprocess.run(["git", "rev-parse", "--verify", "HEAD"], capture_output=True).returncode != 0:
        sys.exit(
            "error: the study runs as DVC experiments and needs a git clone with a commit (git clone ...)"
        )
    try:
        extra = parse_sets(sets)
    except UserError as exc:
        fail(str(exc))
    name = f"study-{code_key({**STUDY_PARAMS, **extra})}"
    start = time.monotonic()
    names = (f"{name}-part", name)
    if exp_ref(name) is None:
        try:
            active = {n for n, s in current_states(names).items() if s in ACTIVE}
            if active:  # a study on this code already in the queue (an earlier make study, still running)
                click.echo(
                    f"study: waiting for {', '.join(sorted(active))}, already in DVC's queue", err=True
                )
            # Finished or failed tasks of an earlier attempt would read as this one's state: drop them.
            stale = [n for n in names if n not in active]
            if stale:
                dvc("queue", "remove", *stale, check=False, capture=True)
            if exp_ref(names[0]) is None and names[0] not in active:  # (an interrupted study may have it)
                dvc("exp", "run", "--queue", "-n", names[0], *overrides(BESIDE, extra))
            if name not in active:
                dvc("exp", "run", "--queue", "-n", name, *overrides(MAIN, extra))
            dvc("queue", "start", "-j", str(jobs))
            wait_for_queue(names)
        except KeyboardInterrupt:
            click.echo("study: interrupted: stopping its experiments", err=True)
            stop_experiments(names)
            click.echo(
                "error: interrupted: the study's experiments are stopped; `make study` again reuses every "
                "stage they finished (DVC's run cache)",
                err=True,
            )
            sys.exit(130)
        ran = f"study wall time: {time.monotonic() - start:.0f} s"
    else:
        ran = (
            f"already ran on this code: shown from experiment {name} (`dvc exp remove {name}` runs it again)"
        )
    ref = exp_ref(name)
    if ref is None:
        sys.exit(f"error: {name}: the queue finished but recorded no experiment: see `dvc queue logs {name}`")
    summary = json.loads(git("show", f"{ref}:metrics/summary.json"))
    click.echo(f"\nThe digits study (experiment {name}):")
    click.echo(format_table(summary))
    page = subprocess.run(["git", "show", f"{ref}:metrics/report.html"], capture_output=True)
    if page.returncode == 0:  # the study page, to open without touching the workspace (git-ignored)
        PAGE.parent.mkdir(exist_ok=True)
        PAGE.write_bytes(page.stdout)
    click.echo(
        f"\n{ran}. The study page: {PAGE} (table, figures, every run's curves, per-class accuracy, "
        f"confusion matrices, maps). `dvc exp show` lists the experiments; `dvc exp apply {name}` brings its "
        "metrics/report.md, report.html and plots/ into the workspace."
    )


if __name__ == "__main__":
    main()
