"""`make demo`: the whole pipeline, offline, on scikit-learn's digits, as one DVC experiment.

params.yaml keeps the STL10 reference recipe; the demo applies a small digits profile on top of it with
`dvc exp run -S ...`, so the run is recorded like any other experiment (`dvc exp show`) and its results
land in the workspace (`dvc metrics show`, `dvc plots show`). `git checkout params.yaml` returns to the
reference recipe.
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

from semisup.report import format_table

# The digits profile: 32x32 images (the smallest the 4-layer encoder takes), 25 labels per class (a bank
# large enough for kNN@200), a narrower encoder, and augmentation fit for digits (no flip: a mirrored 2 is
# not a 2; crops of at least half the area). It runs all four methods in a few minutes on two CPU cores.
# The methods' maths, temperatures and optimizer stay the reference recipe's.
DEMO_PARAMS = {
    "data.source": "digits",
    "data.image_size": 32,
    "data.labeled_per_class": 25,
    "data.num_shards": 2,
    "train.epochs": 25,
    "train.shuffle_buffer": 2000,
    "encoder.filters": 32,
    "augment.flip": "false",
    "augment.crop_scale": "[0.5,1.0]",
    "methods.crossentropy.unlabeled_batch": 128,
    "methods.crossentropy.labeled_batch": 100,
    "methods.infonce.unlabeled_batch": 256,
    "methods.infonce.labeled_batch": 25,
    "methods.suncet.unlabeled_batch": 128,
    "methods.suncet.labeled_batch": 100,
    "methods.paws.unlabeled_batch": 128,
    "methods.paws.labeled_batch": 100,
}


def _git_env() -> dict[str, str]:
    """DVC commits each experiment: lend it an identity where git has none, so a fresh machine works."""
    env = dict(os.environ)
    name = subprocess.run(["git", "config", "user.name"], capture_output=True, text=True).stdout.strip()
    email = subprocess.run(["git", "config", "user.email"], capture_output=True, text=True).stdout.strip()
    if not (name and email):
        for role in ("AUTHOR", "COMMITTER"):
            env.setdefault(f"GIT_{role}_NAME", "semisup demo")
            env.setdefault(f"GIT_{role}_EMAIL", "demo@localhost")
    return env


@click.command()
@click.option("--dry-run", is_flag=True, help="Print the dvc command and exit.")
def main(dry_run: bool) -> None:
    """Run the digits demo as a DVC experiment and print the method x k accuracy table."""
    if shutil.which("dvc") is None:
        sys.exit("error: dvc is not on PATH (run `make demo`, or activate .venv first)")
    inside = subprocess.run(["git", "rev-parse", "--verify", "HEAD"], capture_output=True).returncode == 0
    if not inside:
        sys.exit(
            "error: the demo runs as a DVC experiment and needs a git clone with a commit (git clone ...)"
        )
    cmd = ["dvc", "exp", "run"] + [f"-S{key}={value}" for key, value in DEMO_PARAMS.items()]
    click.echo("$ " + " ".join(cmd), err=True)
    if dry_run:
        return
    start = time.monotonic()
    proc = subprocess.run(cmd, env=_git_env())
    if proc.returncode != 0:
        sys.exit(proc.returncode)
    summary = json.loads(Path("metrics/summary.json").read_text())
    click.echo("\nTest accuracy on digits (demo profile; `dvc metrics show` for every figure):")
    click.echo(format_table(summary))
    click.echo(f"\npipeline wall time: {time.monotonic() - start:.0f} s; plots: `dvc plots show`")


if __name__ == "__main__":
    main()
