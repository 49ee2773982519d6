"""Profiles and project helpers of the tests and the benchmarks: params.yaml with `dvc exp run -S`-style
overrides, digits shards from the real stages, git + DVC copies of the project."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from drivers.profiles import DEMO, labeled_if_used, method_batches
from semisup.config import with_overrides

ROOT = Path(__file__).resolve().parents[1]

# The tests' profile: the demo's digits profile, every stage for real in seconds (one epoch, a tiny encoder,
# small batches). `-S` settings of `python -m drivers.demo`, or overrides of params.yaml.
TINY_PARAMS = DEMO | {
    "train.epochs": 1,
    "train.shuffle_buffer": 500,
    "encoder.filters": 8,
    **method_batches(lambda method, defaults: 128, labeled_if_used(64, otherwise=16)),
}


# The tests' digits data (`make_shards`, the session fixtures `digits_repo` and `digits_shards` of
# tests/conftest.py): the demo's, 25 labeled images per class, 2 shards per split.
DATA = {key: value for key, value in DEMO.items() if key.startswith("data.")}

# The resume tests' tiny run (tests/test_pretrain.py, bench/compile_cache.py): 4 epochs of an 8-filter encoder.
RESUME_TINY = DATA | {
    "train.epochs": 4,
    "train.shuffle_buffer": 500,
    "encoder.filters": 8,
    "encoder.embedding_dim": 32,
    "methods.paws.unlabeled_batch": 128,
    "methods.paws.labeled_batch": 50,
}


ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
BIN = Path(sys.executable).parent  # this venv's tools (dvc), first on PATH for `run`
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@t",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@t",
}


def params_with(overrides: Mapping[str, Any]) -> dict:
    """The repository's params.yaml with dotted `key: value` overrides, as `dvc exp run -S key=value`.

    A string value is read as YAML, as DVC reads `-S` values (`"false"` -> False, `"[0.5,1.0]"` -> a list).
    """
    return with_overrides(yaml.safe_load((ROOT / "params.yaml").read_text()), overrides)


def write_params(path: Path, overrides: Mapping[str, Any]) -> Path:
    """Write `params_with(overrides)` to `path`; -> path."""
    path.write_text(yaml.safe_dump(params_with(overrides), sort_keys=False))
    return path


def make_shards(root: Path, params_path: Path) -> Path:
    """Run the download and shard stages into root/raw and root/shards; -> the shard directory."""
    for args in (
        ["stages.download", "--raw-dir", str(root / "raw")],
        ["stages.shard", "--raw-dir", str(root / "raw"), "--out", str(root / "shards")],
    ):
        proc = subprocess.run(
            [sys.executable, "-m", *args, "--params", str(params_path)],
            cwd=ROOT,
            env=ENV,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr
    return root / "shards"


# What a temporary git + DVC copy of the project needs: the code, the pipeline, DVC's config and plots.
PROJECT_DIRS = ("semisup/", "stages/", "drivers/", ".dvc/")
PROJECT_FILES = ("dvc.yaml", ".dvcignore", ".gitignore")


def copy_project(dest: Path) -> Path:
    """Copy this project's code and pipeline (tracked and untracked, not ignored) into `dest`; -> dest."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for rel in filter(None, files.split("\0")):
        if rel.startswith(PROJECT_DIRS) or rel in PROJECT_FILES:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    return dest


def tool_env() -> dict[str, str]:
    """The tests' environment with this venv's tools (dvc) first on PATH and a git identity."""
    return dict(ENV, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", **GIT_IDENTITY)


def run(cwd: Path, *cmd: str) -> subprocess.CompletedProcess:
    """Run `cmd` in `cwd` with `tool_env()`; fail with its output."""
    proc = subprocess.run(cmd, cwd=cwd, env=tool_env(), capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


def git_project(dest: Path, overrides: Mapping[str, Any]) -> Path:
    """A git + DVC copy of this project in `dest` with `params_with(overrides)`, committed; -> dest."""
    copy_project(dest)
    write_params(dest / "params.yaml", overrides)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "project"]):
        run(dest, *cmd)
    return dest
