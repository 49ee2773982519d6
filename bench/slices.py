"""Benchmark: a tiny study in 2 slices at once into a local DVC remote, assembled in a third clone, against
one clone running it all (docs/scaling.md, "A study on many machines").

Builds a git + DVC copy of this project (tests/support.git_project) on the tests' digits data, with a default
DVC remote (a local folder) and a bare git repository; every machine is a `git clone` of it. Runs, in order:
one clone's whole study (`python -m drivers.study`, the remote empty), two clones' `--slice 1/2` and `--slice
2/2` at the same time, a third clone's plain study (the assembly), each timed. Prints the figures and, last,
one JSON object: the walls, the assembler's trained and restored counts, whether its table equals the one
clone's to the last digit, and the assembly's wall per restored run (an upper bound on what DVC costs per
restored run: it includes the assembly's maps and report stages and the fetch of the run cache).

    .venv/bin/python bench/slices.py [--methods crossentropy,infonce] [--seeds 0,1] [--epochs 1]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devtools.support import DATA, TINY_PARAMS, git_project, run, tool_env  # noqa: E402

COUNTS = re.compile(
    r"(\d+) runs restored from the run cache \((\d+) brought from remote \w+\), (\d+) trained here"
)


def study(repo: Path, *args: str) -> subprocess.Popen:
    """`python -m drivers.study ARGS` started in `repo`."""
    return subprocess.Popen(
        [sys.executable, "-m", "drivers.study", *args],
        cwd=repo,
        env=tool_env() | {"PYTHONPATH": str(repo)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(procs: list[subprocess.Popen]) -> tuple[float, list[str]]:
    """Wait for `procs` (started together) -> (wall s, their stdouts); exit with the stderr of a failed one."""
    start = time.monotonic()
    outs = []
    for proc in procs:
        out, err = proc.communicate()
        if proc.returncode != 0:
            sys.exit(f"study failed ({proc.returncode}):\n{err[-3000:]}")
        outs.append(out)
    return time.monotonic() - start, outs


def table(stdout: str) -> str:
    """The study's table from the driver's output."""
    return re.search(r"\(experiment study-\w+\):\n(.*?)\n\n", stdout, re.S)[1]


def shared_project(root: Path) -> Path:
    """The project with its digits data and a default DVC remote, pushed to a bare git repository -> it."""
    seed = git_project(root / "seed", DATA)
    run(seed, "dvc", "repro", "-q", "splits@all-0")
    run(seed, "dvc", "remote", "add", "-d", "shared", str(root / "remote"))
    run(seed, "git", "add", "-A")
    run(seed, "git", "commit", "-qm", "data and a shared remote")
    run(seed, "dvc", "push", "-q")
    run(root, "git", "init", "-q", "--bare", "origin.git")
    run(seed, "git", "push", "-q", str(root / "origin.git"), "HEAD:refs/heads/main")
    return root / "origin.git"


def main() -> None:
    """Run the three steps and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="crossentropy,infonce")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--epochs", type=int, default=1)
    opts = parser.parse_args()
    sets = [f"-S{k}={v}" for k, v in (TINY_PARAMS | {"train.epochs": opts.epochs}).items()]
    sets += [
        f"-Smethod_names=[{opts.methods}]",
        "-Sstudy.labeled_per_class=[5]",
        f"-Sstudy.seeds=[{opts.seeds}]",
    ]
    with tempfile.TemporaryDirectory(prefix="semisup-slices-") as tmp:
        root = Path(tmp)
        origin = shared_project(root)
        clones = {}
        for name in ("one", "slice1", "slice2", "third"):
            run(root, "git", "clone", "-q", "-b", "main", str(origin), str(root / name))
            clones[name] = root / name
        one_s, (one,) = finish([study(clones["one"], *sets)])
        print(f"one machine, the whole study: {one_s:.0f} s; {COUNTS.search(one)[0]}")
        slices_s, outs = finish(
            [study(clones[f"slice{k}"], "--slice", f"{k}/2", "--jobs", "1", *sets) for k in (1, 2)]
        )
        for k, out in enumerate(outs, start=1):
            print(f"slice {k}/2: {COUNTS.search(out)[0]}")
        print(f"2 slices at once (on the same cores): {slices_s:.0f} s")
        third_s, (third,) = finish([study(clones["third"], *sets)])
        restored, brought, trained = (int(x) for x in COUNTS.search(third).groups())
        same = table(third) == table(one)
        print(f"assembly in a third clone: {third_s:.0f} s; {COUNTS.search(third)[0]}; table equal: {same}")
        print(table(third))
        figures = {
            "one_machine_s": round(one_s, 1),
            "slices_at_once_s": round(slices_s, 1),
            "assembly_s": round(third_s, 1),
            "assembly_restored": restored,
            "assembly_brought_from_remote": brought,
            "assembly_trained": trained,
            "tables_equal": same,
            "assembly_s_per_restored_run": round(third_s / max(restored, 1), 1),
        }
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
