"""Benchmark: DVC's own work per stage as a study grows. After every stage it runs, DVC reads and rewrites
the whole dvc.lock (ruamel.yaml's round-trip loader and dumper, through dvc's modify_yaml), so that
update costs time in proportion to the stages already locked, and a whole `dvc repro` of N stages spends
time in proportion to N^2 on it.

Builds lock files of this pipeline's shape (per run: pretrain, embed, knn and linear entries with this
project's deps and params; per (budget, seed): a splits entry) for studies of growing size, times DVC's
update of one stage entry in each (median of --repeats), and prints, per study: stages, lock lines,
seconds per stage update, and the sum over a whole repro of that study (each stage updates a lock holding
the stages before it).

    .venv/bin/python bench/dvc_lock.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import tempfile
import time
from pathlib import Path

import yaml
from dvc.utils.serialize import modify_yaml

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("crossentropy", "infonce", "suncet", "paws")
PRETRAIN_CODE = [
    "semisup/augment.py",
    "semisup/distribute.py",
    "semisup/encoder.py",
    "semisup/knn.py",
    "semisup/methods/__init__.py",
    "semisup/pretrain.py",
    "semisup/train.py",
    "stages/pretrain.py",
]


def _file(path: str) -> dict:
    return {"path": path, "hash": "md5", "md5": hashlib.md5(path.encode()).hexdigest(), "size": 12345}


def _dir(path: str) -> dict:
    return _file(path) | {"md5": hashlib.md5(path.encode()).hexdigest() + ".dir", "nfiles": 6}


def lock_entries(params: dict, method: str, budget: str, seed: int) -> dict[str, dict]:
    """dvc.lock entries for one run, in the shape `dvc repro` of this project's dvc.yaml writes them."""
    run, split = f"{method}-{budget}-{seed}", f"data/splits/{budget}-{seed}.json"
    p = {"params.yaml": {}}
    pretrain_params = {k: params[k] for k in ("augment", "encoder", "train")} | {
        "knn.k": params["knn"]["k"],
        "knn.monitor_every": params["knn"]["monitor_every"],
        f"methods.{method}": params["methods"][method],
    }
    code = [*PRETRAIN_CODE, f"semisup/methods/{method}.py"]
    return {
        f"pretrain@{run}": {
            "cmd": f"python -m stages.pretrain --method {method} --budget {budget} --seed {seed} --split {split}",
            "deps": [_dir("data/shards"), _file(split), *map(_file, sorted(code))],
            "params": {"params.yaml": pretrain_params},
            "outs": [_dir(f"metrics/runs/{run}/train"), _dir(f"models/{run}")],
        },
        f"embed@{run}": {
            "cmd": f"python -m stages.embed --method {method} --run {run}",
            "deps": [
                _dir("data/shards"),
                _dir(f"models/{run}"),
                _file("semisup/embed.py"),
                _file("stages/embed.py"),
            ],
            "params": p | {"params.yaml": {"embed": params["embed"]}},
            "outs": [_dir(f"data/embeddings/{run}")],
        },
        f"knn@{run}": {
            "cmd": f"python -m stages.knn --method {method} --run {run} --split {split}",
            "deps": [
                _dir(f"data/embeddings/{run}"),
                _file(split),
                _file("data/shards/manifest.json"),
                _file("semisup/knn.py"),
                _file("stages/knn.py"),
            ],
            "params": {
                "params.yaml": {f"knn.{k}": params["knn"][k] for k in ("k", "temperature", "query_chunk")}
            },
            "outs": [
                _file(f"metrics/runs/{run}/{name}")
                for name in ("knn.json", "per_class.json", "confusion.csv")
            ],
        },
        f"linear@{run}": {
            "cmd": f"python -m stages.linear --run {run} --split {split}",
            "deps": [
                _dir(f"data/embeddings/{run}"),
                _file(split),
                _file("semisup/linear.py"),
                _file("stages/linear.py"),
            ],
            "params": {"params.yaml": {"linear": params["linear"]}},
            "outs": [_file(f"metrics/runs/{run}/linear.json")],
        },
    }


def study_lock(params: dict, budgets: list[str], seeds: list[int]) -> dict:
    stages = {}
    for budget in budgets:
        for seed in seeds:
            stages[f"splits@{budget}-{seed}"] = {
                "cmd": f"python -m stages.splits --budget {budget} --seed {seed}",
                "deps": [_dir("data/shards"), _file("semisup/data/subsets.py"), _file("stages/splits.py")],
                "outs": [_file(f"data/splits/{budget}-{seed}.json")],
            }
            for method in METHODS:
                stages.update(lock_entries(params, method, budget, seed))
    return {"schema": "2.0", "stages": stages}


def time_update(path: Path, entry: dict, repeats: int) -> float:
    """Median seconds of DVC's update of one stage entry in the lock at `path` (read, change, write)."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        with modify_yaml(path) as data:
            data["stages"]["bench@entry"] = entry
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    studies = [  # (name, budgets, seeds)
        ("default single run", ["all"], [0]),
        ("make study (3 budgets x 3 seeds)", ["5", "10", "25"], [0, 1, 2]),
        ("5 budgets x 5 seeds", ["5", "10", "25", "100", "all"], [0, 1, 2, 3, 4]),
    ]
    entry = lock_entries(params, "paws", "all", 0)["pretrain@paws-all-0"]
    results = []
    print(f"{'study':<34}{'stages':>7}{'lock lines':>11}{'s/update':>10}{'s in a whole repro':>20}")
    with tempfile.TemporaryDirectory(prefix="dvc-lock-") as tmp:
        path = Path(tmp) / "dvc.lock"
        for name, budgets, seeds in studies:
            lock = study_lock(params, budgets, seeds)
            n = len(lock["stages"])
            text = yaml.safe_dump(lock, sort_keys=False)
            path.write_text(text)
            full = time_update(path, entry, args.repeats)
            # A whole repro: stage i updates a lock of i entries; the update's cost is about linear in the
            # lock's size, so the sum is about n/2 updates of the full lock (measured at half, times n).
            half = {"schema": "2.0", "stages": dict(list(lock["stages"].items())[: n // 2])}
            path.write_text(yaml.safe_dump(half, sort_keys=False))
            total = n * time_update(path, entry, args.repeats)
            lines = text.count("\n")
            print(f"{name:<34}{n:>7}{lines:>11}{full:>10.3f}{total:>20.1f}")
            results.append(
                {"study": name, "stages": n, "lock_lines": lines, "update_s": full, "repro_s": total}
            )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
