"""Benchmark: the linear probe's fit (C picked by 5-fold CV over 4 values, then the refit) with OpenBLAS's
default thread pool against one BLAS thread (what semisup.evaluation.linear.linear_probe uses), on an idle
machine and on a busy one (one busy-looping process per core beside it, as when `make study` runs two
experiments on two cores).

Synthetic clustered features, L2-normalised, 10 classes, D = 128: the digits demo's size (250 labeled,
360 test) and STL10's (5,000 labeled, 8,000 test). Prints the median seconds of --runs fits per case and
the ratio, and, last, one JSON object.

    .venv/bin/python bench/linear_probe.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_info, threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from semisup.evaluation.linear import l2_normalise, make_probe, select_c  # noqa: E402

SIZES = {"digits demo": (250, 360), "STL10": (5000, 8000)}
DIM, CLASSES, GRID = 128, 10, (0.1, 1.0, 10.0, 100.0)


def features(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    labels = np.arange(n) % CLASSES
    centres = np.random.default_rng(0).normal(size=(CLASSES, DIM))
    return l2_normalise(centres[labels] + 2.5 * rng.normal(size=(n, DIM))), labels


def fit(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]) -> float:
    """linear_probe's work (CV over the grid, refit, score) without its thread limit; -> seconds."""
    start = time.perf_counter()
    choice = select_c(*train, c_grid=GRID, folds=5, fixed_c=10.0, max_iter=1000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        probe = make_probe(choice["C"], 1000).fit(*train)
    np.mean(probe.predict(test[0]) == test[1])
    return time.perf_counter() - start


def spin() -> None:
    while True:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    blas = [(i["internal_api"], i["num_threads"]) for i in threadpool_info() if i["user_api"] == "blas"]
    print(f"BLAS pools: {blas}")
    rng = np.random.default_rng(1)
    data = {name: (features(n, rng), features(m, rng)) for name, (n, m) in SIZES.items()}
    results = []
    for load in ("idle", "busy"):
        spinners = []
        if load == "busy":
            spinners = [
                multiprocessing.Process(target=spin, daemon=True) for _ in range(multiprocessing.cpu_count())
            ]
            for p in spinners:
                p.start()
        try:
            for name, (train, test) in data.items():
                runs = args.runs if name != "STL10" or load == "idle" else max(2, args.runs // 2)
                default = statistics.median(fit(train, test) for _ in range(runs))
                with threadpool_limits(limits=1, user_api="blas"):
                    one = statistics.median(fit(train, test) for _ in range(runs))
                print(
                    f"{load:<5} {name:<12} default threads {default:7.3f} s   one thread {one:7.3f} s"
                    f"   ratio {default / one:5.2f}"
                )
                results.append({"load": load, "size": name, "default_s": default, "one_thread_s": one})
        finally:
            for p in spinners:
                p.terminate()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
