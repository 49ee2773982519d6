"""A study over many machines: slices of its runs (`make study SLICE=K/N`), each trained on its own machine,
sharing results through the project's default DVC remote and its run cache; GPUs handed to queue workers.

No scheduler of our own: the cluster's (SLURM arrays, Kubernetes Indexed Jobs: examples/) starts one slice
per task. A slice's runs are fixed by the study's run list alone (greedy longest-processing-time by expected
cost, ties by name), so every machine computes the same slices without talking to the others.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path

import yaml

from semisup.core.errors import UserError

STAGES = (
    "pretrain",
    "embed",
    "knn",
    "linear",
)  # a run's stages, `<stage>@<run>` as dvc.yaml's matrix names them


def parse_slice(text: str) -> tuple[int, int]:
    """'K/N' -> (K, N), K from 1; a UserError when it is not two integers with 1 <= K <= N."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise UserError(f"--slice {text!r}: expected K/N, two whole numbers (e.g. --slice 1/4)")
    k, n = int(match[1]), int(match[2])
    if n < 1 or not 1 <= k <= n:
        raise UserError(f"--slice {text}: K must be 1 to N (N >= 1): slices are numbered 1..{max(n, 1)}")
    return k, n


def run_names(methods: Iterable[str], budgets: Iterable[object], seeds: Iterable[object]) -> list[str]:
    """The study's runs `M-B-S` (method x budget x seed), in dvc.yaml's matrix order."""
    return [f"{m}-{b}-{s}" for m in methods for b in budgets for s in seeds]


def balance(costs: Mapping[str, float], bins: int) -> list[list[str]]:
    """Greedy longest-processing-time: runs by decreasing cost (ties by name) each to the bin with the least
    cost so far (ties: the lowest index). -> `bins` lists of run names, each in its runs' order of cost."""
    loads = [0.0] * bins
    out: list[list[str]] = [[] for _ in range(bins)]
    for name in sorted(costs, key=lambda n: (-costs[n], n)):
        i = min(range(bins), key=lambda j: (loads[j], j))
        loads[i] += costs[name]
        out[i].append(name)
    return out


def slice_runs(costs: Mapping[str, float], k: int, n: int) -> list[str]:
    """The runs of slice K of N (K from 1); a UserError when N exceeds the number of runs."""
    if n > len(costs):
        raise UserError(
            f"--slice {k}/{n}: the study has {len(costs)} runs, fewer than {n} slices: use N <= {len(costs)}"
        )
    return balance(costs, n)[k - 1]


def targets(runs: Iterable[str]) -> list[str]:
    """The stage targets of these runs for `dvc exp run` (their upstream stages come with them)."""
    return [f"{stage}@{run}" for run in runs for stage in STAGES]


def gpu_ids(environ: Mapping[str, str] | None = None) -> list[str]:
    """This machine's GPUs, without TensorFlow: CUDA_VISIBLE_DEVICES's ids where it is set, else the ones
    `nvidia-smi -L` lists (none without it)."""
    environ = os.environ if environ is None else environ
    if "CUDA_VISIBLE_DEVICES" in environ:
        return [d.strip() for d in environ["CUDA_VISIBLE_DEVICES"].split(",") if d.strip() not in ("", "-1")]
    if shutil.which("nvidia-smi") is None:
        return []
    proc = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
    return [str(i) for i, line in enumerate(proc.stdout.splitlines()) if line.startswith("GPU ")]


def worker_envs(jobs: int, gpus: list[str]) -> list[dict[str, str]]:
    """The environment each of `jobs` queue workers adds to its own: worker i gets GPU i (round robin when
    there are more workers than GPUs); none without GPUs."""
    return [{"CUDA_VISIBLE_DEVICES": gpus[i % len(gpus)]} if gpus else {} for i in range(jobs)]


def default_remote() -> str | None:
    """The name of the project's default DVC remote (`dvc remote default`), None without one."""
    from dvc.repo import Repo

    with Repo(".") as repo:
        return repo.config["core"].get("remote") or None


def run_cache_dir() -> Path:
    """Where this repository's DVC run cache lives (`<cache>/runs`)."""
    from dvc.repo import Repo

    with Repo(".") as repo:
        return Path(repo.stage_cache.cache_dir)


def entries(folder: Path) -> set[Path]:
    """The run-cache entry files under `folder` (one per stage result: runs/<key[:2]>/<key[2:]>/<value>)."""
    return {p for p in folder.glob("*/*/*") if p.is_file()} if folder.is_dir() else set()


def pretrained_runs(paths: Iterable[Path]) -> set[str]:
    """The runs whose pretrain stage these run-cache entries record (its cmd names `--run <run>`)."""
    runs = set()
    for path in paths:
        try:
            cmd = str((yaml.safe_load(path.read_text()) or {}).get("cmd", ""))
        except (OSError, yaml.YAMLError):
            continue
        match = re.search(r"stages\.pretrain --run (\S+)", cmd)
        if match:
            runs.add(match[1])
    return runs


def pull_run_cache() -> set[Path]:
    """Fetch the default remote's run cache into this repository's; -> the entry files it brought."""
    from dvc.repo import Repo

    folder = run_cache_dir()
    before = entries(folder)
    with Repo(".") as repo:
        repo.stage_cache.pull(None)
    return entries(folder) - before


def push_results(revs: list[str]) -> None:
    """Push these experiment commits' outputs and the whole run cache to the default remote."""
    from dvc.repo import Repo

    with Repo(".") as repo:
        repo.push(revs=revs, workspace=False, run_cache=True)
