"""Benchmark: what the study's own stages add to `dvc repro` of the default single run (one seed, budget
all) on the digits demo profile.

Builds a git + DVC copy of this project's working tree (tests/support.git_project) with the demo's params
(drivers/profiles.py) and runs the whole pipeline with `dvc repro` (then `dvc repro -f`, for the repeats). Each
stage is charged the wall time from DVC's "Running stage" line for it to the next stage's line (or the end):
its command plus DVC's own work on it (hashing, run cache, dvc.lock). The study's stages are splits@all-0
and the four linear@<method>-all-0 probes; their share of the whole repro is the figure. Medians over the
repeats. Prints a line per stage kind, the share, and, last, one JSON object.

    .venv/bin/python bench/study_overhead.py [--repeats 3] [--epochs 25]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devtools.support import git_project, tool_env  # noqa: E402
from drivers.profiles import DEMO as DEMO_PARAMS  # noqa: E402

STUDY_KINDS = ("splits", "linear")  # the stages the study added; `report` existed before it
RUNNING = re.compile(r"Running stage '([^']+)'")


def timed_repro(repo: Path, *args: str) -> tuple[float, float, dict[str, float]]:
    """One `dvc repro ARGS` -> (wall s, s before the first stage, {stage: s from its start to the next's})."""
    start = time.monotonic()
    proc = subprocess.Popen(
        ["dvc", "repro", *args],
        cwd=repo,
        env=tool_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    marks, tail = [], []
    for line in proc.stdout:
        tail = (tail + [line])[-40:]
        if match := RUNNING.match(line):
            marks.append((match.group(1), time.monotonic() - start))
    if proc.wait() != 0:
        raise SystemExit(f"dvc repro {' '.join(args)} failed:\n{''.join(tail)}")
    wall = time.monotonic() - start
    ends = [t for _, t in marks[1:]] + [wall]
    return wall, marks[0][1], {name: end - t for (name, t), end in zip(marks, ends, strict=True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="whole repros to take the medians of")
    parser.add_argument("--epochs", type=int, default=25, help="train.epochs (the demo runs 25)")
    args = parser.parse_args()
    walls, shares, startups, kinds = [], [], [], defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="study-overhead-") as tmp:
        repo = git_project(Path(tmp), {**DEMO_PARAMS, "train.epochs": args.epochs})
        for i in range(args.repeats):
            wall, startup, stages = timed_repro(repo, *(["-f"] if i else []))
            per_kind = defaultdict(float)
            for name, seconds in stages.items():
                per_kind[name.split("@")[0]] += seconds
            added = sum(per_kind[k] for k in STUDY_KINDS)
            print(f"repro {i + 1}: {wall:.1f} s, study's stages {added:.2f} s = {100 * added / wall:.2f}%")
            walls.append(wall)
            shares.append(added / wall)
            startups.append(startup)
            for kind, seconds in per_kind.items():
                kinds[kind].append(seconds)
    median = {kind: statistics.median(s) for kind, s in kinds.items()}
    print(
        f"\ndvc repro, demo profile ({args.epochs} epochs, one seed, budget all), medians of {args.repeats}:"
    )
    print(f"  {'whole repro':<14}{statistics.median(walls):8.1f} s")
    print(f"  {'DVC start-up':<14}{statistics.median(startups):8.2f} s (before the first stage)")
    for kind, seconds in median.items():
        mark = "  <- the study's" if kind in STUDY_KINDS else ""
        print(f"  {kind:<14}{seconds:8.2f} s{mark}")
    share = statistics.median(shares)
    added_s = sum(median[k] for k in STUDY_KINDS)
    print(f"study's stages: {added_s:.2f} s, {100 * share:.2f}% of the whole repro (median share)")
    figures = {"repro_s": statistics.median(walls), "added_s": added_s, "added_share": share}
    print(json.dumps({**figures, "shares": shares, "per_kind_s": median}))


if __name__ == "__main__":
    main()
