"""What a command's start costs: the CPU seconds of `import tensorflow` in a fresh process, as a bare Python
does it and as the commands do it (their runtime leaves Keras's optional scikit-learn and matplotlib
integrations out: semisup/process/console.py). Every stage of every run pays this once.

    python bench/startup.py [--repeats 5]

CPU (user + system) of each child process, not wall time: the figure does not move with the machine's
load. Medians over --repeats; the last line is one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "bare": "import tensorflow",
    "command": "import stages, tensorflow",  # what `python -m stages.<name>` does before its own code
}


def child_cpu(code: str) -> float:
    """CPU seconds (user + system) of one `python -c code` run in the repository root."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    env = os.environ | {"TF_CPP_MIN_LOG_LEVEL": "2"}
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    figures = {}
    for _ in range(args.repeats):  # interleaved: a change of load touches both cases alike
        for name, code in CASES.items():
            figures.setdefault(name, []).append(child_cpu(code))
    medians = {name: round(statistics.median(values), 2) for name, values in figures.items()}
    for name, code in CASES.items():
        print(f"{name:8s} `{code}`: {medians[name]:.2f} CPU s (median of {args.repeats})")
    ratio = round(medians["command"] / medians["bare"], 2)
    print(f"command / bare: {ratio:.2f}")
    print(json.dumps({"cpu_s": medians, "ratio": ratio, "repeats": args.repeats}))


if __name__ == "__main__":
    main()
