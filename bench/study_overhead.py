"""Benchmark: what the study's extra stages add to `dvc repro` of the default single run (one seed, budget
all) on the digits demo profile.

Builds a git + DVC copy of this project's working tree (tests/support.git_project) with the demo's params
(stages/demo.py), times a full `dvc repro`, then times `dvc repro -f -s` of the stages the study added
(splits@all-0 and linear@<method>-all-0), less DVC's own start-up (paid once by a whole repro), and, for
reference, the report. Prints the figures and, last, one JSON object.

    .venv/bin/python bench/study_overhead.py [--epochs 25]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stages.demo import DEMO_PARAMS  # noqa: E402
from tests.support import git_project, run  # noqa: E402

METHODS = ("crossentropy", "infonce", "suncet", "paws")


def sh(cwd: Path, *cmd: str) -> float:
    """Run a command (this venv's tools first on PATH); -> its wall time in seconds."""
    start = time.monotonic()
    run(cwd, *cmd)
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=25, help="train.epochs (the demo runs 25)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="study-overhead-") as tmp:
        repo = Path(tmp)
        git_project(repo, {**DEMO_PARAMS, "train.epochs": args.epochs})
        total = sh(repo, "dvc", "repro")
        added = ["splits@all-0"] + [f"linear@{m}-all-0" for m in METHODS]
        # Medians of 3: the added stages forced, and DVC's own start-up (a repro of one stage that is up
        # to date), which a whole `dvc repro` pays once, not once more for the added stages.
        extra = statistics.median(sh(repo, "dvc", "repro", "-f", "-s", *added) for _ in range(3))
        startup = statistics.median(sh(repo, "dvc", "repro", "-s", "splits@all-0") for _ in range(3))
        report = sh(repo, "dvc", "repro", "-f", "-s", "report")
    share, marginal = extra / total, (extra - startup) / total
    print(f"dvc repro, demo profile ({args.epochs} epochs, one seed, budget all): {total:.1f} s")
    print(f"study's added stages ({', '.join(added)}): {extra:.1f} s = {100 * share:.1f}% of it")
    print(
        f"less DVC's start-up ({startup:.1f} s, paid once by a whole repro): {extra - startup:.1f} s = "
        f"{100 * marginal:.1f}% of it"
    )
    print(f"report stage (existed before, now over seeds): {report:.1f} s")
    figures = {"repro_s": total, "added_stages_s": extra, "added_share": share, "dvc_startup_s": startup}
    print(json.dumps({**figures, "added_share_less_startup": marginal, "report_s": report}))


if __name__ == "__main__":
    main()
