"""`make demo`: the whole pipeline, offline, on scikit-learn's digits, as a DVC experiment beside the workspace.

params.yaml stays the STL10 reference recipe and no tracked file changes: the demo runs
`dvc exp run --temp -n demo-<key> -S ...` (a small digits profile on top of the recipe) in a temporary copy
of the repository, so the run is recorded as an experiment (`dvc exp show`, `dvc plots diff demo-<key>`)
and its figures are copied to demo/ (git-ignored). The key is a digest of the commit, the uncommitted
changes and the profile: a second `make demo` on the same code shows the recorded results at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import click

from semisup.methods import METHODS
from semisup.report import format_table


def method_batches(unlabeled, labeled) -> dict[str, int]:
    """`-S` batch sizes for every method of the registry: unlabeled(method, its default params) and
    labeled(method, its default params), in registry order."""
    out = {}
    for method in METHODS.values():
        defaults = method.params()
        out[f"methods.{method.name}.unlabeled_batch"] = unlabeled(method, defaults)
        out[f"methods.{method.name}.labeled_batch"] = labeled(method, defaults)
    return out


def scaled_unlabeled(size: int):
    """Each method's reference unlabeled batch scaled from 250 images to `size` (InfoNCE's 500 -> 2 x size)."""
    return lambda method, defaults: round(defaults.unlabeled_batch * size / 250)


def labeled_if_used(size: int, otherwise: int | None = None):
    """`size` labeled images for a method that encodes them; one that only draws them keeps its default
    (or `otherwise`)."""
    return lambda method, defaults: size if method.uses_labeled else (otherwise or defaults.labeled_batch)


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
    # The reference batches scaled to 128 unlabeled images (InfoNCE's 256), 100 labeled where encoded.
    **method_batches(scaled_unlabeled(128), labeled_if_used(100)),
}

# For the test suite: every stage for real, in seconds (one epoch, a tiny encoder, small batches).
TINY_PARAMS = DEMO_PARAMS | {
    "train.epochs": 1,
    "train.shuffle_buffer": 500,
    "encoder.filters": 8,
    **method_batches(lambda method, defaults: 128, labeled_if_used(64, otherwise=16)),
}
PROFILES = {"digits": DEMO_PARAMS, "tiny": TINY_PARAMS}
OUT = Path("demo")  # git-ignored: the experiment's table and figures, for people to open


def fail(message: str) -> None:
    """One line on stderr and exit status 2 (the project's user-error convention)."""
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


def git(*args: str, check: bool = True) -> str:
    """Output of a git command in the current repository."""
    proc = subprocess.run(["git", *args], capture_output=True, check=False)
    if check and proc.returncode != 0:
        fail(f"git {' '.join(args)}: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout.decode(errors="replace")


def _git_identity() -> dict[str, str]:
    """DVC commits each experiment: lend it an identity where git has none, so a fresh machine works."""
    name = git("config", "user.name", check=False).strip()
    email = git("config", "user.email", check=False).strip()
    if name and email:
        return {}
    return {
        f"GIT_{role}_{key}": value
        for role in ("AUTHOR", "COMMITTER")
        for key, value in (("NAME", "semisup demo"), ("EMAIL", "demo@localhost"))
        if f"GIT_{role}_{key}" not in os.environ
    }


# What DVC writes in a workspace (`dvc repro`): results, not inputs of the demo's experiment.
NOT_INPUTS = (":(exclude)dvc.lock", ":(exclude)metrics", ":(exclude,glob)**/.gitignore")


def code_key(profile: dict[str, object]) -> str:
    """What the experiment ran: the commit, every uncommitted change (untracked files too), the profile."""
    digest = hashlib.sha256(git("rev-parse", "HEAD").encode())
    diff = subprocess.run(["git", "diff", "HEAD", "--binary", "--", ".", *NOT_INPUTS], capture_output=True)
    digest.update(diff.stdout)
    untracked = git("ls-files", "-z", "--others", "--exclude-standard", "--", ".", *NOT_INPUTS)
    for rel in sorted(filter(None, untracked.split("\0"))):
        digest.update(rel.encode() + b"\0")
        path = Path(rel)
        digest.update(path.read_bytes() if path.is_file() else b"")
    digest.update(json.dumps(profile, sort_keys=True).encode())
    return digest.hexdigest()[:8]


def exp_ref(name: str) -> str | None:
    """The git ref of experiment `name` on the current commit, or None when it has not run."""
    head = git("rev-parse", "HEAD").strip()
    ref = f"refs/exps/{head[:2]}/{head[2:]}/{name}"
    return ref if git("rev-parse", "--verify", "-q", ref, check=False).strip() else None


class _DemoNoise(logging.Filter):
    """Drops two DVC warnings that every demo run on a fresh clone gets and no user can act on: "No file
    hash info found for '<out>'" (the temporary copy's first checkout, in a clone without dvc.lock: every
    output is one the run is about to make) and "untracked files ... will not be included" when those are
    only the .gitignore files DVC itself wrote next to its outputs."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("No file hash info found for"):
            return False
        if message.startswith("The following untracked files were present in the experiment directory"):
            files = message.rsplit("\t", 1)[-1].split(", ")
            return not all(f.strip().endswith(".gitignore") for f in files)
        return True


def run_experiment(name: str, profile: dict[str, object]) -> float:
    """`dvc exp run --temp -n name -S ...` in this process, the stages' output streaming through; -> seconds.

    In-process rather than a `dvc` subprocess only to filter the warnings above; the stages still write to
    this terminal (a live bar there, lines in a log).
    """
    from dvc.cli import main as dvc

    args = ["exp", "run", "--temp", "-n", name] + [f"-S{k}={v}" for k, v in profile.items()]
    click.echo("$ dvc " + " ".join(args), err=True)
    os.environ.update(_git_identity())
    for logger in ("dvc_data.index.checkout", "dvc.repo.experiments.executor.base"):
        logging.getLogger(logger).addFilter(_DemoNoise())
    start = time.monotonic()
    status = dvc(args)
    if status != 0:
        sys.exit(status)
    return time.monotonic() - start


def export(ref: str, name: str) -> dict:
    """Copy the experiment's summary, figures and study page into demo/; write demo/plots/ (dvc plots diff)."""
    OUT.mkdir(exist_ok=True)
    summary = json.loads(git("show", f"{ref}:metrics/summary.json"))
    (OUT / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    for rel in git("ls-tree", "-r", "--name-only", f"{ref}", "metrics/plots/").split():
        png = subprocess.run(["git", "show", f"{ref}:{rel}"], capture_output=True, check=True).stdout
        (OUT / Path(rel).name).write_bytes(png)
    page = subprocess.run(["git", "show", f"{ref}:metrics/report.html"], capture_output=True)
    if page.returncode == 0:  # the study page (an experiment of older code may not have one)
        (OUT / "report.html").write_bytes(page.stdout)
    # Every curve and confusion matrix of the experiment in one page (a failure here costs nothing).
    subprocess.run(["dvc", "plots", "diff", name, "-o", str(OUT / "plots")], capture_output=True)
    return summary


def check_repository() -> None:
    """dvc on PATH, inside a git clone with a commit: the demo is a DVC experiment."""
    if shutil.which("dvc") is None:
        fail("dvc: not on PATH: run `make demo`, or activate .venv first")
    if subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], capture_output=True).returncode != 0:
        fail(".git: no commit here: the demo runs as a DVC experiment, run it in a git clone of the project")


@click.command()
@click.option("--dry-run", is_flag=True, help="Print the dvc command and exit.")
@click.option("--profile", type=click.Choice(sorted(PROFILES)), default="digits", hidden=True)
def main(dry_run: bool, profile: str) -> None:
    """Run the digits demo as a DVC experiment and print the method x k accuracy table."""
    check_repository()
    overrides = PROFILES[profile]
    name = f"demo-{code_key(overrides)}" if profile == "digits" else f"demo-{profile}-{code_key(overrides)}"
    if dry_run:
        click.echo("dvc exp run --temp -n " + name + "".join(f" -S{k}={v}" for k, v in overrides.items()))
        return
    ref = exp_ref(name)
    if ref is None:
        seconds = run_experiment(name, overrides)
        ref = exp_ref(name)
        ran = f"pipeline wall time: {seconds:.0f} s"
    else:
        ran = (
            f"already ran on this code: shown from experiment {name} (`dvc exp remove {name}` runs it again)"
        )
    if ref is None:
        fail(f"{name}: dvc exp run finished but recorded no experiment: rerun `make demo`")
    summary = export(ref, name)
    click.echo(f"\nTest accuracy on digits (demo profile, experiment {name}):")
    click.echo(format_table(summary))
    click.echo(
        f"\n{ran}\n"
        f"figure: {OUT}/knn_k20.png (the experiment's metrics/plots/knn_per_epoch/knn_k20.png)\n"
        f"the study page: {OUT}/report.html (table, curves, per-class accuracy, confusion, maps)\n"
        f"every curve: {OUT}/plots/index.html, or `dvc plots diff {name}`\n"
        f"every figure: `dvc exp show`; params.yaml is untouched (still the STL10 recipe: `dvc repro` runs it)"
    )


if __name__ == "__main__":
    main()
