"""How long the project takes to give up: the figures behind the tests' liveness bounds (never asserted).

- probe: `stl10.host_reachable("host.invalid", timeout=1.0)` (name resolution that fails; docs/scaling.md's
  "fails within seconds" offline).
- offline: `stl10.prepare_stl10` with no archive and the probe answering no (tfds' import included in
  the first repeat).
- grace: `cluster.launch_local` of a worker that fails (exit 3) beside one that never stops, with
  `cluster.GRACE_S` = 1 s: seconds until the run returns, the stuck worker killed.
- worker (with --worker, a few minutes): two CrossEntropy workers of the tests' tiny digits run on
  loopback (tests/test_distributed.py's set-up), worker 1 killed in epoch 2: seconds until worker 0 exits
  (docs/scaling.md's "the others stop within a minute").

    python bench/liveness.py [--repeats 3] [--worker]

Medians over --repeats; the last line is one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Worker 0 never stops by itself; worker 1 fails at once.
HANG = (
    "import json, os, sys, time\n"
    "if json.loads(os.environ['TF_CONFIG'])['task']['index'] == 0:\n    time.sleep(600)\n"
    "sys.exit(3)"
)


def timed(call: Callable[[], object]) -> float:
    start = time.monotonic()
    call()
    return time.monotonic() - start


def probe() -> None:
    from semisup.data import stl10

    assert not stl10.host_reachable("host.invalid", timeout=1.0)


def offline() -> None:
    from semisup.core.errors import UserError
    from semisup.data import stl10

    saved = stl10.host_reachable
    stl10.host_reachable = lambda *a, **k: False
    try:
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            stl10.prepare_stl10(d / "raw", manual_dir=d / "m", download_dir=d / "dl", labeled_per_class=None)
    except UserError:
        return
    finally:
        stl10.host_reachable = saved
    raise SystemExit("prepare_stl10 did not refuse to run offline")


def grace() -> None:
    from semisup.training import cluster

    cluster.GRACE_S = 1.0
    code = cluster.launch_local([sys.executable, "-c", HANG], 2)
    assert code == 3, code


def worker_stop() -> float:
    """Seconds from killing worker 1 in epoch 2 to worker 0's exit (status 2)."""
    import numpy as np

    from devtools.cluster import kill, killed_workers, wait_for_steps, write_tiny_params
    from devtools.support import make_shards

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shards = make_shards(root, write_tiny_params(root))
        out = root / "killed"
        procs = killed_workers(root, shards, out)
        try:
            wait_for_steps(out, 1, procs)
            steps = int(np.loadtxt(out / "steps.tsv", ndmin=2)[0, 1])
            wait_for_steps(out, steps + 2, procs)  # both workers saved epoch 1 and are in epoch 2
            os.killpg(procs[1].pid, signal.SIGKILL)
            killed_at = time.monotonic()
            procs[0].communicate(timeout=600)
            waited = time.monotonic() - killed_at
        finally:
            for p in procs:
                kill(p)
        if procs[0].returncode != 2:
            raise SystemExit(f"worker 0 ended with status {procs[0].returncode}, not 2")
        return waited


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", action="store_true", help="also the killed-worker stop (minutes)")
    args = parser.parse_args()
    figures: dict = {"cpu_count": os.cpu_count(), "repeats": args.repeats}
    for name, call in (("probe", probe), ("offline", offline), ("grace", grace)):
        seconds = [timed(call) for _ in range(args.repeats)]
        figures[f"{name}_s"] = round(statistics.median(seconds), 3)
        print(f"{name:>8}: median {statistics.median(seconds):.3f} s of {[round(s, 3) for s in seconds]}")
    if args.worker:
        seconds = [worker_stop() for _ in range(args.repeats)]
        figures["worker_stop_s"] = round(statistics.median(seconds), 3)
        print(f"  worker: median {statistics.median(seconds):.3f} s of {[round(s, 3) for s in seconds]}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
