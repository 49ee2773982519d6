"""`make study`: the study on digits (budgets 5, 10, 25 labels per class; seeds 0, 1, 2; all four
methods), offline, as DVC experiments that leave the workspace's tracked files as they are.

The 36 runs are one pipeline (dvc.yaml's matrix), but `dvc repro` runs stages one after another and
most of a small run's time is process start-up, so the study runs as two queued experiments, two
methods each (method_names is a param), side by side on two workers (`dvc queue start -j 2`). A last
experiment with all four methods then finds every run's stages in DVC's run cache, runs only the report
and prints its table. Every experiment runs in a temporary copy (`--queue`, `--temp`): the workspace is
left alone; `dvc exp show` lists them and `dvc exp apply <name>` brings one into the workspace.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import click

from stages.demo import _git_identity

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
# Two workers, two methods each: CrossEntropy (cheapest) with PAWS, InfoNCE with SuNCEt.
GROUPS = (("crossentropy", "paws"), ("infonce", "suncet"))
ALL_METHODS = ("crossentropy", "infonce", "suncet", "paws")


def _git_env() -> dict[str, str]:
    """The environment for dvc, with the demo's stand-in git identity where git has none."""
    return {**os.environ, **_git_identity()}


def overrides(methods: tuple[str, ...], extra: dict[str, str]) -> list[str]:
    """`-S key=value` arguments of the study profile, then `extra`, with these methods."""
    settings = {**STUDY_PARAMS, **extra, "method_names": "[" + ",".join(methods) + "]"}
    return [f"-S{key}={value}" for key, value in settings.items()]


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


def wait_for_queue(poll_s: float = 5.0) -> None:
    """Until no queued experiment is queued or running; exit 1 when one of them failed."""
    while True:
        status = dvc("queue", "status", capture=True).stdout
        states = [
            line.split()[-1] for line in status.splitlines()[1:] if line.strip() and len(line.split()) > 2
        ]
        if "Failed" in status:
            sys.exit("error: a queued study experiment failed: see `dvc queue logs <name>`")
        if not any(state in ("Running", "Queued") for state in states):
            return
        time.sleep(poll_s)


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
    extra = dict(item.split("=", 1) for item in sets if "=" in item)
    start = time.monotonic()
    for methods in GROUPS:
        dvc("exp", "run", "--queue", *overrides(methods, extra))
    dvc("queue", "start", "-j", str(jobs))
    wait_for_queue()
    click.echo(f"runs done in {time.monotonic() - start:.0f} s; the report over all methods:", err=True)
    dvc("exp", "run", "--temp", *overrides(ALL_METHODS, extra))
    click.echo(
        f"\nstudy wall time: {time.monotonic() - start:.0f} s. `dvc exp show` lists the experiment; "
        "`dvc exp apply <name>` brings its metrics/report.md and metrics/plots/ into the workspace."
    )


if __name__ == "__main__":
    main()
