"""Benchmark: DVC's own work per stage as a study grows. After every stage it runs, DVC reads and rewrites
the whole dvc.lock (ruamel.yaml's round-trip loader and dumper, through dvc's modify_yaml), so that
update costs time in proportion to the stages already locked, and a whole `dvc repro` of N stages spends
time in proportion to N^2 on it.

Builds lock files of this pipeline's shape (per run: pretrain, embed, knn and linear entries, per (budget,
seed): a splits entry, and the code stage's entry where dvc.yaml has one, each with the deps, params and outs
dvc.yaml gives it) for studies of growing size, times DVC's update of one stage entry in each (median of
--repeats), and prints, per study: stages, lock lines, seconds per stage update, and the sum over a whole
repro of that study (each stage updates a lock holding the stages before it). `--dvc-yaml` takes another
version's dvc.yaml (`git show REV:dvc.yaml > old.yaml`), to compare two lock shapes on the same machine.

    .venv/bin/python bench/dvc_lock.py [--repeats 5] [--dvc-yaml dvc.yaml]
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
RUN_STAGES = ("pretrain", "embed", "knn", "linear")  # dvc.yaml's matrix over method x budget x seed


def _dep(path: str) -> dict:
    """A dvc.lock entry for `path`: a file (it has a suffix) or a folder (`.dir` hash, file count)."""
    md5 = hashlib.md5(path.encode()).hexdigest()
    entry = {"path": path, "hash": "md5", "md5": md5, "size": 12345}
    return entry if Path(path).suffix else entry | {"md5": md5 + ".dir", "nfiles": 6}


def _param(params: dict, key: str) -> object:
    """params.yaml's value of a dvc.yaml params key: a section (`train`) or a dotted key (`knn.k`)."""
    node = params
    for part in key.split("."):
        node = node[part]
    return node


def lock_entry(definition: dict, params: dict, item: dict[str, object]) -> dict:
    """The dvc.lock entry `dvc repro` writes for one item of a dvc.yaml stage: its deps, params, outs."""

    def expand(text: str) -> str:
        for key, value in item.items():
            text = text.replace(f"${{item.{key}}}", str(value))
        return text

    outs = [expand(o if isinstance(o, str) else next(iter(o))) for o in definition.get("outs", [])]
    entry = {"cmd": expand(definition["cmd"]), "deps": [_dep(expand(d)) for d in sorted(definition["deps"])]}
    keys = sorted(expand(k) for k in definition.get("params", []))
    if keys:
        entry["params"] = {"params.yaml": {key: _param(params, key) for key in keys}}
    return entry | {"outs": [_dep(o) for o in outs]}


def study_lock(stages: dict, params: dict, budgets: list[str], seeds: list[int]) -> dict:
    """The dvc.lock of a study: dvc.yaml's splits stage per (budget, seed), its run stages per method too."""
    lock = {"code": lock_entry(stages["code"], params, {})} if "code" in stages else {}
    for budget in budgets:
        for seed in seeds:
            lock[f"splits@{budget}-{seed}"] = lock_entry(
                stages["splits"], params, {"budget": budget, "seed": seed}
            )
            for method in params["method_names"]:
                item = {"method": method, "budget": budget, "seed": seed}
                for name in RUN_STAGES:
                    lock[f"{name}@{method}-{budget}-{seed}"] = lock_entry(stages[name], params, item)
    return {"schema": "2.0", "stages": lock}


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
    parser.add_argument(
        "--dvc-yaml", type=Path, default=ROOT / "dvc.yaml", help="the pipeline whose lock to build"
    )
    args = parser.parse_args()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    stages = yaml.safe_load(args.dvc_yaml.read_text())["stages"]
    studies = [  # (name, budgets, seeds)
        ("default single run", ["all"], [0]),
        ("make study (3 budgets x 3 seeds)", ["5", "10", "25"], [0, 1, 2]),
        ("5 budgets x 5 seeds", ["5", "10", "25", "100", "all"], [0, 1, 2, 3, 4]),
    ]
    entry = lock_entry(stages["pretrain"], params, {"method": "paws", "budget": "all", "seed": 0})
    results = []
    print(f"{'study':<34}{'stages':>7}{'lock lines':>11}{'s/update':>10}{'s in a whole repro':>20}")
    with tempfile.TemporaryDirectory(prefix="dvc-lock-") as tmp:
        path = Path(tmp) / "dvc.lock"
        for name, budgets, seeds in studies:
            lock = study_lock(stages, params, budgets, seeds)
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
