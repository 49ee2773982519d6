"""What several test files share: params.yaml with `dvc exp run -S`-style overrides, digits shards."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from drivers.profiles import DEMO, labeled_if_used, method_batches
from semisup.config import with_overrides
from semisup.methods import METHODS

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

# test_pipeline_e2e's budget on DATA (the session fixture `trained_repo`): every stage of every method for
# real, two epochs of a 16-filter encoder: enough for every method to clear its untrained encoder.
E2E_PARAMS = DATA | {
    "train.epochs": 2,
    "train.shuffle_buffer": 500,
    "encoder.filters": 16,
    **{f"methods.{m}.unlabeled_batch": 128 for m in METHODS},
    **{f"methods.{m}.labeled_batch": 64 for m in METHODS},
    "methods.infonce.labeled_batch": 16,
    # CrossEntropy reads only labeled batches; its unlabeled batch sets the epoch's length. At 128 its 2
    # epochs are 18 steps and leave it below its untrained encoder (kNN@20 0.621 against 0.638); at 32,
    # 74 steps (0.7 s more) bring it to 0.777.
    "methods.crossentropy.unlabeled_batch": 32,
}


# The DVC tests' tiny study (test_study_dvc, test_compare): every stage for real, as small as it gets: 1 epoch of 8-filter encoders, a 5-per-class budget.
TINY_STUDY = DATA | {
    "train.epochs": 1,
    "train.shuffle_buffer": 200,
    "encoder.filters": 8,
    "encoder.embedding_dim": 16,
    **{f"methods.{m}.unlabeled_batch": 256 for m in METHODS},
    **{f"methods.{m}.labeled_batch": 20 for m in METHODS},
    "knn.k": "[5]",
    "knn.monitor_every": 0,
    "linear.c_grid": "[1.0]",
    "linear.folds": 2,
    "study.labeled_per_class": "[5]",
    "study.seeds": "[0]",
    "method_names": "[paws]",
}


def tiny_sets() -> list[str]:
    """TINY_PARAMS as `-S KEY=VALUE` options of `python -m drivers.demo` / `drivers.study`."""
    return [f"-S{key}={value}" for key, value in TINY_PARAMS.items()]


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


def untrained_knn(method: str, params: Any, shard_dir: Path, labeled_ids: Any = None) -> dict[str, float]:
    """kNN accuracy of `method`'s encoder before any training step ({"knn_k20": ...}): the bar a trained
    encoder must clear. The encoder is built as pretrain builds it (same seed, so the same initial
    weights) and scored by the project's kNN monitor on the same shards, bank (`labeled_ids`) and queries."""
    from semisup.config import resolve_run
    from semisup.monitor import monitor
    from semisup.pretrain import build, set_up

    run = set_up(resolve_run(params, method, labeled_ids=labeled_ids), shard_dir)
    models, _ = build(run)
    return monitor(models["encoder"], shard_dir, params, run.num_classes, run.labeled_ids)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def built_once(factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """`root/name`, built by `build(folder)` in whichever worker asks first; the others wait for it.

    The folder is built under a temporary name and renamed when `build` returns, so that a failed build
    leaves nothing that a later request would take for finished (it builds again, and fails with its
    own message).
    """
    base = factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # popen-gwN's parent
    done = shared / name
    with _locked(shared / f"{name}.lock"):
        if not done.exists():
            partial = shared / f"{name}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir()
            build(partial)
            partial.rename(done)
    return done


def copy_repo(src: Path, dest: Path) -> Path:
    """A copy of a shared repository (git, DVC's cache, the workspace) that a test may change; -> dest."""
    subprocess.run(["cp", "-a", str(src), str(dest)], check=True)
    return dest
