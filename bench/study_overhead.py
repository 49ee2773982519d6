"""Benchmark: what the study's extra stages add to `dvc repro` of the default single run (one seed, budget
all) on the digits demo profile.

Builds a git + DVC copy of this project with the demo's params (stages/demo.py), times a full `dvc repro`,
then times `dvc repro -f -s` of the stages the study added (splits@all-0 and linear@<method>-all-0), less
DVC's own start-up (paid once by a whole repro), and, for reference, the report. Prints the figures and, last, one JSON object.

    .venv/bin/python bench/study_overhead.py [--epochs 25]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stages.demo import DEMO_PARAMS  # noqa: E402

METHODS = ("crossentropy", "infonce", "suncet", "paws")


def copy_project(dest: Path, epochs: int) -> None:
    """The tracked sources into `dest`, with the demo profile applied to params.yaml, committed."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True).stdout
    for rel in filter(None, files.split("\0")):
        if rel.startswith(("semisup/", "stages/", ".dvc/")) or rel in (
            "dvc.yaml",
            ".dvcignore",
            ".gitignore",
        ):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for dotted, value in {**DEMO_PARAMS, "train.epochs": epochs}.items():
        *parents, leaf = dotted.split(".")
        node = params
        for key in parents:
            node = node[key]
        node[leaf] = yaml.safe_load(value) if isinstance(value, str) else value
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "bench"]):
        sh(dest, *cmd)


def sh(cwd: Path, *cmd: str) -> float:
    """Run a command; -> its wall time in seconds."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.update(TF_CPP_MIN_LOG_LEVEL="2", GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@b")
    env.update(GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@b")
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=25, help="train.epochs (the demo runs 25)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="study-overhead-") as tmp:
        repo = Path(tmp)
        copy_project(repo, args.epochs)
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
