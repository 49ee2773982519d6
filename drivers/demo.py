"""`make demo`: the whole pipeline, offline, on scikit-learn's digits, as a DVC experiment beside the workspace.

params.yaml stays the STL10 reference recipe and no tracked file changes: the demo runs
`dvc exp run --temp -n demo-<key> -S ...` (the digits profile of drivers/profiles.py on top of the recipe)
in a temporary copy of the repository, so the run is recorded as an experiment (`dvc exp show`,
`dvc plots diff demo-<key>`) and its figures are copied to demo/ (git-ignored). The key is a digest of the
commit, the uncommitted changes and the profile: a second `make demo` on the same code shows the recorded
results at once.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from pathlib import Path

import click

from drivers import dvcexp
from drivers.dvcexp import EXIT_FAILED, fail
from drivers.profiles import DEMO, parse_sets
from semisup.core.errors import UserError
from semisup.reporting.report import format_table

OUT = Path("demo")  # git-ignored: the experiment's table and figures, for people to open


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
    os.environ.update(dvcexp.git_identity())
    for logger in ("dvc_data.index.checkout", "dvc.repo.experiments.executor.base"):
        logging.getLogger(logger).addFilter(_DemoNoise())
    start = time.monotonic()
    if dvc(args) != 0:
        fail(
            f"{name}: a stage of the experiment failed (its error is above): fix it, then `make demo`",
            EXIT_FAILED,
        )
    return time.monotonic() - start


def export(exp: dvcexp.Experiment) -> dict:
    """Copy the experiment's summary, figures and study page into demo/; write demo/plots/ (dvc plots diff)."""
    OUT.mkdir(exist_ok=True)
    summary = json.loads(dvcexp.read(exp, "metrics/summary.json"))
    (OUT / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    for rel in dvcexp.files(exp, "metrics/plots/"):
        (OUT / Path(rel).name).write_bytes(dvcexp.read(exp, rel))
    if dvcexp.files(exp, "metrics/report.html"):  # the study page (an experiment of older code has none)
        (OUT / "report.html").write_bytes(dvcexp.read(exp, "metrics/report.html"))
    # Every curve and confusion matrix of the experiment in one page (a failure here costs nothing).
    subprocess.run(["dvc", "plots", "diff", exp.name, "-o", str(OUT / "plots")], capture_output=True)
    return summary


@click.command()
@click.option("--dry-run", is_flag=True, help="Print the dvc command and exit.")
@click.option("-S", "--set", "sets", multiple=True, help="KEY=VALUE on top of the demo profile, as dvc's -S.")
def main(dry_run: bool, sets: tuple[str, ...]) -> None:
    """Run the digits demo as a DVC experiment and print the method x k accuracy table."""
    dvcexp.check_repository("make demo")
    dvcexp.keep_checkpoints_here()
    try:
        profile = {**DEMO, **parse_sets(sets, DEMO, "demo")}
    except UserError as exc:
        fail(str(exc))
    name = f"demo-{dvcexp.code_key(profile)}"
    if dry_run:
        click.echo("dvc exp run --temp -n " + name + "".join(f" -S{k}={v}" for k, v in profile.items()))
        return
    exp = dvcexp.finished(name)
    if exp is None:
        with dvcexp.compile_cache():
            seconds = run_experiment(name, profile)
        exp = dvcexp.finished(name)
        ran = f"pipeline wall time: {seconds:.0f} s"
    else:
        ran = (
            f"already ran on this code: shown from experiment {name} (`dvc exp remove {name}` runs it again)"
        )
    if exp is None:
        fail(f"{name}: dvc exp run finished but recorded no experiment: rerun `make demo`", EXIT_FAILED)
    summary = export(exp)
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
