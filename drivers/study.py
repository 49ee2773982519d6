"""`make study`: the study on digits (budgets 5, 10, 25 labels per class; seeds 0, 1, 2; every method of
the registry), offline, as DVC experiments that leave the workspace's tracked files as they are.

The runs are one pipeline (dvc.yaml's matrix), but `dvc repro` runs stages one after another and most of
a small run's time is process start-up, so two queued experiments run side by side on two workers
(`dvc queue start -j 2`), sharing DVC's cache and run cache:
- `study-<key>-part` runs the cheaper half of the methods (by images encoded per step);
- `study-<key>` runs them all, its own methods first: by the time it reaches the other experiment's
  methods, that one has run their stages, and DVC restores them from the run cache instead of running them
  again (were it ever first, it would run them itself: slower, never wrong). It ends with the report.
Both run in temporary copies (`--queue`): the workspace is left alone; `dvc exp show` lists them and
`dvc exp apply study-<key>` brings the report and figures into the workspace. The key is a digest of the
commit, the uncommitted changes and the profile, as for `make demo`: a second `make study` on the same
code shows the recorded table at once.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import click
import yaml

from drivers import dvcexp, slices
from drivers.dvcexp import ACTIVE, EXIT_FAILED, EXIT_INTERRUPTED, fail
from drivers.profiles import PAPER_PROFILES, STUDY, Part, folder_study, method_of, parse_sets
from drivers.progress import StudyProgress
from semisup.core.errors import UserError
from semisup.methods import METHODS
from semisup.reporting.report import format_table


def images_per_step(name: str, profile: Mapping[str, object] = STUDY) -> int:
    """Images a method or configuration encodes per training step in the study profile (or `profile`): its
    cost, roughly."""
    method = METHODS[method_of(name)]
    unlabeled = int(str(profile[f"methods.{name}.unlabeled_batch"])) * method.unlabeled_views
    return unlabeled + (int(str(profile[f"methods.{name}.labeled_batch"])) if method.uses_labeled else 0)


# The experiment beside the main one: the cheaper half of the methods, so that it stays ahead of the main
# one. The main experiment: its own methods first, then the ones the other experiment has run by then.
_BY_COST = sorted(METHODS, key=images_per_step)
BESIDE = tuple(_BY_COST[: len(_BY_COST) // 2])
MAIN = tuple(m for m in METHODS if m not in BESIDE) + BESIDE
PAGE = Path("study") / "report.html"  # git-ignored: a copy of the experiment's study page


def overrides(
    methods: tuple[str, ...], extra: dict[str, str], profile: dict[str, object] | None = None
) -> list[str]:
    """`-S key=value` arguments of the study profile (or `profile`), then `extra`, with these methods."""
    settings = {
        **(STUDY if profile is None else profile),
        **extra,
        "method_names": "[" + ",".join(methods) + "]",
    }
    return [f"-S{key}={value}" for key, value in settings.items()]


def study_methods(extra: Mapping[str, str]) -> tuple[str, ...]:
    """The study's methods: every one of the registry, or the `-S method_names=[...]` given."""
    given = extra.get("method_names")
    return tuple(str(m) for m in yaml.safe_load(given)) if given else tuple(METHODS)


def run_costs(extra: Mapping[str, str], profile: Mapping[str, object] | None = None) -> dict[str, float]:
    """The study's runs `M-B-S` -> expected cost: images encoded per step x epochs."""
    settings = {**(STUDY if profile is None else profile), **extra}
    budgets = yaml.safe_load(str(settings["study.labeled_per_class"]))
    seeds = yaml.safe_load(str(settings["study.seeds"]))
    epochs = int(str(settings["train.epochs"]))
    return {
        f"{m}-{b}-{s}": float(images_per_step(m, settings) * epochs)
        for m in study_methods(extra)
        for b in budgets
        for s in seeds
    }


def states(names: tuple[str, ...]) -> tuple[dict[str, str], dict[str, dvcexp.Experiment]]:
    """(state of each of `names` that DVC knows, every experiment of the commit), from dvc exp show --json."""
    shown = dvcexp.experiments()
    return {n: shown[n].state for n in names if n in shown}, shown


# `dvc exp show --json` over a running study takes seconds of CPU (6 s of CPU, 11 s of wall on 2 busy
# cores, with 3 experiments of 300 stages): polling every 5 s took a third of a core from the study. The
# wait between polls is at least POLL_S and at least POLL_SHARE times what the last poll took, so that
# polling costs at most a twentieth of the time.
# A task's end wakes the wait at once (`nap`): on a busy machine, where a poll took 15 s, a finished
# experiment was seen up to 5 minutes late.
POLL_S, POLL_SHARE = 5.0, 19.0
STALLED_S = 60.0  # queued with no experiment running this long: DVC's workers left it behind
QUEUE_RESULTS = Path(".dvc") / "tmp" / "exps" / "celery" / "result"  # DVC's queue: a file per task's state


def queue_results() -> frozenset[tuple[str, int]]:
    """The task states DVC's queue has recorded in this repository, as (file name, time written)."""
    try:
        return frozenset((e.name, e.stat().st_mtime_ns) for e in os.scandir(QUEUE_RESULTS))
    except OSError:  # none yet (or gone meanwhile): nothing to wake on
        return frozenset()


def nap(seconds: float) -> None:
    """Sleep `seconds`, but wake within a second of DVC's queue recording a task's state (a few stat calls
    a second, where `dvc exp show` takes seconds of CPU)."""
    seen = queue_results()
    for _ in range(max(1, round(seconds))):
        time.sleep(1.0)
        if queue_results() != seen:
            return


def wait_for_queue(names: tuple[str, ...], poll_s: float = POLL_S, every_s: float = 60.0) -> None:
    """Until none of the experiments `names` is queued or running, with a line every `every_s` saying how
    many stages are done and the time left (drivers.progress); exit 1 when one of them failed."""
    start = last = time.monotonic()
    progress = StudyProgress(Path.cwd(), names, main=names[-1])
    stalled: float | None = None  # since when experiments are queued and none is running
    while True:
        polled = time.monotonic()
        now, shown = states(names)
        took = time.monotonic() - polled
        queued = [n for n, state in now.items() if state == "queued"]
        if not queued or "running" in now.values():
            stalled = None
        elif stalled is None:
            stalled = polled
        elif polled - stalled >= STALLED_S:
            # DVC's queue workers stop once they see no task of their own, and can leave a queued one
            # behind (with fewer workers than experiments, the last part of the papers' study stayed
            # queued with none): start workers for what is left.
            dvcexp.dvc("queue", "start", "-j", str(len(queued)), capture=True)
            stalled = None
        progress.poll(shown)
        failed = sorted(name for name, state in now.items() if state == "failed")
        if failed:
            fail(f"study experiment {failed[0]} failed: see `dvc queue logs {failed[0]}`", EXIT_FAILED)
        if not any(state in ACTIVE for state in now.values()):
            return
        if time.monotonic() - last >= every_s:
            last = time.monotonic()
            shown_states = ", ".join(f"{n} {s}" for n, s in now.items())
            done = progress.line()
            click.echo(
                f"study: {(last - start) / 60:.0f} min: {done + '; ' if done else ''}{shown_states}", err=True
            )
        nap(max(poll_s, POLL_SHARE * took))


def stop_experiments(names: tuple[str, ...]) -> None:
    """Ctrl-C: stop the study's running experiments and drop its queued ones (finished stages stay in the
    run cache, which the next `make study` restores them from)."""
    running = [n for n, s in states(names)[0].items() if s == "running"]
    if running:
        dvcexp.dvc("queue", "kill", *running, check=False, capture=True)
    deadline = time.monotonic() + 60
    while any(s in ACTIVE for s in states(names)[0].values()) and time.monotonic() < deadline:
        dvcexp.dvc("queue", "remove", *names, check=False, capture=True)
        time.sleep(1)
    dvcexp.dvc("queue", "remove", *names, check=False, capture=True)


def start_workers(jobs: int) -> None:
    """`dvc queue start` for `jobs` workers; on a machine with GPUs, one at a time, worker i with
    CUDA_VISIBLE_DEVICES of GPU i (a worker inherits the environment of the command that starts it, and
    `-j k` starts workers up to k in all)."""
    envs = slices.worker_envs(jobs, slices.gpu_ids())
    if not any(envs):
        dvcexp.dvc("queue", "start", "-j", str(jobs))
        return
    for i, env in enumerate(envs):
        click.echo(
            f"$ CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']} dvc queue start -j {i + 1}", err=True
        )
        subprocess.run(
            ["dvc", "queue", "start", "-j", str(i + 1)],
            env={**os.environ, **dvcexp.git_identity(), **env},
            check=False,
        )


def run_study(
    names: tuple[str, ...],
    extra: dict[str, str],
    jobs: int,
    profile: dict[str, object] | None = None,
    pull: bool = False,
) -> None:
    """Queue the study's two experiments (unless an earlier make study's are still queued or running),
    start the queue and wait for them."""
    now = states(names)[0]
    active = {n for n, s in now.items() if s in ACTIVE}
    if active:  # a study on this code already in the queue (an earlier make study, still running)
        click.echo(f"study: waiting for {', '.join(sorted(active))}, already in DVC's queue", err=True)
    # Failed tasks of an earlier attempt would read as this one's state: drop them.
    stale = [n for n in names if now.get(n) == "failed"]
    if stale:
        dvcexp.dvc("queue", "remove", *stale, check=False, capture=True)
    # `--pull` with a remote: DVC restores from the remote's run cache, outputs pulled, every run it holds.
    pulls = ["--pull"] if pull else []
    chosen = study_methods(extra)  # -S method_names=[...] narrows the study to these methods
    beside = tuple(m for m in BESIDE if m in chosen) or chosen[:1]
    main = tuple(m for m in MAIN if m in chosen)
    if now.get(names[0]) not in (*ACTIVE, "success"):  # (an interrupted study may have finished it)
        dvcexp.dvc("exp", "run", "--queue", *pulls, "-n", names[0], *overrides(beside, extra, profile))
    if names[1] not in active:
        dvcexp.dvc("exp", "run", "--queue", *pulls, "-n", names[1], *overrides(main, extra, profile))
    start_workers(jobs)
    wait_for_queue(names)


def run_parts(parts: tuple[Part, ...], names: tuple[str, ...], extra: dict[str, str], jobs: int) -> None:
    """Queue each part's experiment (unless it is queued, running or finished), start the queue and wait."""
    now = states(names)[0]
    stale = [n for n in names if now.get(n) == "failed"]
    if stale:
        dvcexp.dvc("queue", "remove", *stale, check=False, capture=True)
    for part, name in zip(parts, names, strict=True):
        if now.get(name) not in (*ACTIVE, "success"):
            settings = {**part.profile(), **extra}
            dvcexp.dvc("exp", "run", "--queue", "-n", name, *[f"-S{k}={v}" for k, v in settings.items()])
    dvcexp.dvc("queue", "start", "-j", str(jobs))
    wait_for_queue(names)


def slice_plan(
    text: str, extra: dict[str, str], profile: dict[str, object] | None, jobs: int | None
) -> tuple[int, int, list[list[str]], str]:
    """Check a slice before anything runs (exit 2 on a bad K/N, N over the study's runs, no default remote):
    -> (K, N, its runs in one group per queue worker, the remote's name)."""
    try:
        k, n = slices.parse_slice(text)
        costs = run_costs(extra, profile)
        runs = slices.slice_runs(costs, k, n)
    except UserError as exc:
        fail(str(exc))
    remote = slices.default_remote()
    if remote is None:
        fail(
            f"--slice {k}/{n}: this project has no default DVC remote to share its runs through: add one "
            "(`dvc remote add -d shared /shared/folder` or s3://..., committed in .dvc/config) and rerun"
        )
    workers = min(len(runs), jobs or max(len(slices.gpu_ids()), 2))
    groups = [g for g in slices.balance({r: costs[r] for r in runs}, workers) if g]
    return k, n, groups, remote


def run_slice(
    text: str, key: str, extra: dict[str, str], jobs: int | None, profile: dict[str, object] | None
) -> None:
    """`make study SLICE=K/N`: restore what the remote's run cache holds, train the rest of slice K's runs
    (one queued experiment per worker, each of its runs' stage targets), push outputs and run cache."""
    k, n, groups, remote = slice_plan(text, extra, profile, jobs)
    runs = [r for g in groups for r in g]
    click.echo(f"study slice {k}/{n}: {len(runs)} runs: {' '.join(sorted(runs))}", err=True)
    names = tuple(f"{key}-slice{k}of{n}-{i + 1}" for i in range(len(groups)))
    brought = slices.pretrained_runs(slices.pull_run_cache()) & set(runs)
    before = slices.entries(slices.run_cache_dir())
    methods = study_methods(extra)
    start = time.monotonic()
    try:
        with dvcexp.compile_cache():
            now = states(names)[0]
            stale = [n for n in names if now.get(n) == "failed"]
            if stale:
                dvcexp.dvc("queue", "remove", *stale, check=False, capture=True)
            for name, group in zip(names, groups, strict=True):
                if now.get(name) not in (*ACTIVE, "success"):
                    sets = overrides(methods, extra, profile)
                    dvcexp.dvc("exp", "run", "--queue", "--pull", "-n", name, *sets, *slices.targets(group))
            start_workers(len(names))
            wait_for_queue(names)
    except KeyboardInterrupt:
        click.echo("study: interrupted: stopping the slice's experiments", err=True)
        stop_experiments(names)
        fail(
            f"interrupted: `make study SLICE={k}/{n}` again resumes it (run cache, checkpoints)",
            EXIT_INTERRUPTED,
        )
    finished = [dvcexp.finished(name) for name in names]
    if any(exp is None for exp in finished):
        fail(
            f"slice {k}/{n}: the queue finished but recorded no experiment: see `dvc queue logs`", EXIT_FAILED
        )
    click.echo(f"$ dvc push --run-cache (the slice's {len(finished)} experiments' outputs)", err=True)
    slices.push_results([exp.rev for exp in finished if exp is not None])
    trained = slices.pretrained_runs(slices.entries(slices.run_cache_dir()) - before) & set(runs)
    click.echo(
        f"study slice {k}/{n}: {len(runs) - len(trained)} runs restored from the run cache "
        f"({len(brought)} brought from remote {remote}), {len(trained)} trained here, in "
        f"{time.monotonic() - start:.0f} s; pushed to remote {remote}"
    )


def paper_study(profile: str, jobs: int, sets: tuple[str, ...]) -> None:
    """`make study PROFILE=paper` (or paper-extra): the profile's parts (drivers.profiles.PAPER_PROFILES),
    each an experiment with its own table."""
    parts = PAPER_PROFILES[profile]
    try:
        extra = {}
        for part in parts:
            extra = parse_sets(sets, part.profile(), f"{profile} study's {part.name} part", True)
    except UserError as exc:
        fail(str(exc))
    key = dvcexp.code_key({p.name: p.profile() for p in parts} | {"extra": extra})
    names = tuple(f"study-{profile}-{key}-{part.name}" for part in parts)
    start = time.monotonic()
    if any(dvcexp.finished(n) is None for n in names):
        try:
            with dvcexp.compile_cache():
                run_parts(parts, names, extra, jobs)
        except KeyboardInterrupt:
            click.echo("study: interrupted: stopping its experiments", err=True)
            stop_experiments(names)
            fail(
                f"interrupted: the study's experiments are stopped; `make study PROFILE={profile}` again "
                "reuses every stage they finished (DVC's run cache)",
                EXIT_INTERRUPTED,
            )
        click.echo(f"study wall time: {time.monotonic() - start:.0f} s")
    for part, name in zip(parts, names, strict=True):
        exp = dvcexp.finished(name)
        if exp is None:
            fail(
                f"{name}: the queue finished but recorded no experiment: see `dvc queue logs {name}`",
                EXIT_FAILED,
            )
        summary = json.loads(dvcexp.read(exp, "metrics/summary.json"))
        click.echo(f"\nThe papers' study, part {part.name} (experiment {name}):")
        click.echo(format_table(summary))
    click.echo(
        "\n`dvc exp apply <experiment>` brings a part's metrics/report.md and report.html into the workspace."
    )


@click.command()
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    help="Queue workers (default: one per experiment: 2; 5 with --profile paper).",
)
@click.option(
    "-S", "--set", "sets", multiple=True, help="KEY=VALUE on top of the study profile, as dvc's -S."
)
@click.option(
    "--profile",
    type=click.Choice(["reference", *PAPER_PROFILES]),
    default="reference",
    show_default=True,
    help="reference: the four methods' recipe; paper: the papers' PAWS and SuNCEt, PAWS's options one by "
    "one; paper-extra: float32 vs the default precision, the papers' PAWS without multi-crop.",
)
@click.option(
    "--slice",
    "slice_text",
    default=None,
    metavar="K/N",
    help="Train only slice K (from 1) of N of the study's runs here, then push them to the default DVC "
    "remote; a plain `make study` with that remote restores them.",
)
@click.option(
    "--data",
    "data_path",
    type=click.Path(file_okay=False),
    default=None,
    help="Your image folder (a sub-folder of images per class, unlabeled/ optional) instead of digits: "
    "the study picks its budgets, image size and epochs and says so first.",
)
def main(
    jobs: int | None, sets: tuple[str, ...], profile: str, data_path: str | None, slice_text: str | None
) -> None:
    """Run the study (digits, or your image folder with --data) and print its table (method x budget,
    mean and 95% interval over seeds)."""
    dvcexp.check_repository("make study")
    dvcexp.keep_checkpoints_here()
    if profile in PAPER_PROFILES:
        if slice_text:
            fail(f"--slice: slices are of the reference study (and --data), not of --profile {profile}")
        if data_path:
            fail(f"--data: the {profile} profile is the papers' study on digits: leave out one of them")
        # Every part at once: a part's evaluation stages and DVC's bookkeeping leave a core idle that
        # another part's training fills, and no part runs alone at the end.
        paper_study(profile, jobs or len(PAPER_PROFILES[profile]), sets)
        return
    base, title, key_extra = STUDY, "The digits study", {}
    if data_path:
        try:
            folder = folder_study(data_path)
        except UserError as exc:
            fail(str(exc))
        for line in folder.lines():
            click.echo(line, err=True)
        base, title = folder.profile, f"The study of {folder.profile['data.path']}"
        key_extra = {"folder": folder_digest(Path(str(folder.profile["data.path"])))}
    try:
        extra = parse_sets(sets, {**base, "method_names": "[" + ",".join(METHODS) + "]"}, "study", True)
    except UserError as exc:
        fail(str(exc))
    name = f"study-{dvcexp.code_key({**base, **extra, **key_extra})}"
    if slice_text:
        run_slice(slice_text, name, extra, jobs, None if base is STUDY else base)
        return
    reference_study(
        name, extra, jobs or max(len(slices.gpu_ids()), 2), None if base is STUDY else base, title
    )


def folder_digest(root: Path) -> str:
    """A digest of a folder's files (names, sizes, times): the study's key changes when the images do."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def reference_study(
    name: str, extra: dict[str, str], jobs: int, profile: dict[str, object] | None, title: str
) -> None:
    """Run (or show, when this code already ran it) the study's experiments; print the table, copy the page."""
    start = time.monotonic()
    names = (f"{name}-part", name)
    counts = ""
    if dvcexp.finished(name) is None:
        remote = slices.default_remote()
        if remote is not None:  # restore what any slice (any machine) pushed; train only what is missing
            click.echo(f"$ dvc fetch --run-cache (remote {remote})", err=True)
            brought = slices.pretrained_runs(slices.pull_run_cache())
            before = slices.entries(slices.run_cache_dir())
        try:
            with dvcexp.compile_cache():
                run_study(names, extra, jobs, profile, pull=remote is not None)
        except KeyboardInterrupt:
            click.echo("study: interrupted: stopping its experiments", err=True)
            stop_experiments(names)
            fail(
                "interrupted: the study's experiments are stopped; `make study` again reuses every "
                "stage they finished (DVC's run cache)",
                EXIT_INTERRUPTED,
            )
        ran = f"study wall time: {time.monotonic() - start:.0f} s"
        if remote is not None:
            runs = set(run_costs(extra, profile))
            trained = slices.pretrained_runs(slices.entries(slices.run_cache_dir()) - before) & runs
            counts = (
                f"study: {len(runs) - len(trained)} runs restored from the run cache "
                f"({len(brought & runs)} brought from remote {remote}), {len(trained)} trained here"
            )
    else:
        ran = (
            f"already ran on this code: shown from experiment {name} (`dvc exp remove {name}` runs it again)"
        )
    exp = dvcexp.finished(name)
    if exp is None:
        fail(
            f"{name}: the queue finished but recorded no experiment: see `dvc queue logs {name}`", EXIT_FAILED
        )
    summary = json.loads(dvcexp.read(exp, "metrics/summary.json"))
    click.echo(f"\n{title} (experiment {name}):")
    click.echo(format_table(summary))
    if dvcexp.files(exp, "metrics/report.html"):  # the study page, to open without touching the workspace
        PAGE.parent.mkdir(exist_ok=True)
        PAGE.write_bytes(dvcexp.read(exp, "metrics/report.html"))
    click.echo(
        f"\n{ran}. The study page: {PAGE} (table, figures, every run's curves, per-class accuracy, "
        f"confusion matrices, maps). `dvc exp show` lists the experiments; `dvc exp apply {name}` brings its "
        "metrics/report.md, report.html and plots/ into the workspace."
    )
    if counts:
        click.echo(counts)


if __name__ == "__main__":
    main()
