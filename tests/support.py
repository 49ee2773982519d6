"""What several test files share: the profiles and project helpers of devtools/support.py (which bench/ uses
too), the tests' own profiles, and the session fixtures' building blocks."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.support import (  # noqa: F401  (the tests import them from here)
    BIN,
    DATA,
    ENV,
    GIT_IDENTITY,
    PROJECT_DIRS,
    PROJECT_FILES,
    RESUME_TINY,
    ROOT,
    TINY_PARAMS,
    copy_project,
    git_project,
    make_shards,
    params_with,
    run,
    tool_env,
    write_params,
)
from semisup.methods import METHODS

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


def untrained_knn(method: str, params: Any, shard_dir: Path, labeled_ids: Any = None) -> dict[str, float]:
    """kNN accuracy of `method`'s encoder before any training step ({"knn_k20": ...}): the bar a trained
    encoder must clear. The encoder is built as pretrain builds it (same seed, so the same initial
    weights) and scored by the project's kNN monitor on the same shards, bank (`labeled_ids`) and queries."""
    from semisup.config import resolve_run
    from semisup.training.monitor import monitor
    from semisup.training.pretrain import build, set_up

    one_run = set_up(resolve_run(params, method, labeled_ids=labeled_ids), shard_dir)
    models, _ = build(one_run)
    return monitor(models["encoder"], shard_dir, params, one_run.num_classes, one_run.labeled_ids)


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
