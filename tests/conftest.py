"""The suite's shared, session-scoped fixtures, and the order in which `make test` hands files to its workers.

Built once for the whole run, across pytest-xdist's worker processes (a file lock in the run's common temp
folder, as pytest-xdist's documentation shows), and read-only for the tests that use them:
- `digits_repo`: a git + DVC copy of the project on the tests' digits data (DATA), `dvc repro` up to
  `splits@all-0` (download, shard, splits) and committed. Its data/shards are `digits_shards`.
- `trained_repo`: `digits_repo` with test_pipeline_e2e's profile (every method, two epochs), every stage
  reproduced and committed.
A test that runs DVC in one of them, or changes a file, works on its own copy (`copy_repo`).
Every test leaves Keras' global dtype policy at its default, float32 (`_keras_policy_reset`).

The run shares one XLA persistent compile cache (`XLA_CACHE`): the first process to compile a program
(augmentation, a jit-compiled step) writes it, and every later process of the run, in-process or a stage's
subprocess, loads it instead of compiling again. The same programs, so the same numbers; a warm tiny
pretrain process takes about 0.7 of the CPU (`python bench/compile_cache.py`). Made fresh for each run and
removed after it, so that no run depends on an earlier one. stages/console.py keeps the cache's load
lines out of a stage's output.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

# Before anything imports TensorFlow, and before tests.support copies the environment: set in the run's
# first process (pytest-xdist's controller, or the only one), inherited by its workers and their
# subprocesses. A TF_XLA_FLAGS of the user's own is left alone.
if "PYTEST_XDIST_WORKER" not in os.environ and "TF_XLA_FLAGS" not in os.environ:
    XLA_CACHE: str | None = tempfile.mkdtemp(prefix="semisup-tests-xla-")
    os.environ["TF_XLA_FLAGS"] = f"--tf_xla_persistent_cache_directory={XLA_CACHE}"
else:
    XLA_CACHE = None

import pytest  # noqa: E402

from tests.support import (  # noqa: E402
    DATA,
    E2E_PARAMS,
    built_once,
    copy_repo,
    git_project,
    run,
    write_params,
)


def pytest_unconfigure(config: pytest.Config) -> None:
    if XLA_CACHE:
        shutil.rmtree(XLA_CACHE, ignore_errors=True)


@pytest.fixture(autouse=True)
def _keras_policy_reset() -> Iterator[None]:
    """Keras' global dtype policy back to its default (float32) after each test: an in-process `pretrain`
    (or a fixture's `set_up`) sets mixed precision for every layer built afterwards, and a worker runs many
    files' tests in one process, in an order that changes with the files' lengths (test_quality's runs
    left test_encoder's layers bfloat16)."""
    yield
    keras = sys.modules.get("keras")
    if keras and keras.mixed_precision.global_policy().name != "float32":
        keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(scope="session")
def digits_repo(tmp_path_factory) -> Path:
    """A git + DVC copy of the project with DATA, download, shard and splits@all-0 reproduced (read-only)."""

    def build(repo: Path) -> None:
        git_project(repo, DATA)
        run(repo, "dvc", "repro", "splits@all-0")
        run(repo, "git", "add", "-A")
        run(repo, "git", "commit", "-qm", "data")

    return built_once(tmp_path_factory, "digits_repo", build)


@pytest.fixture(scope="session")
def digits_shards(digits_repo) -> Path:
    """The shards of DATA (read-only): what `make_shards` would write for a params file with DATA."""
    return digits_repo / "data" / "shards"


@pytest.fixture(scope="session")
def trained_repo(tmp_path_factory, digits_repo) -> Path:
    """digits_repo with E2E_PARAMS, every stage of every method reproduced and committed (read-only)."""

    def build(repo: Path) -> None:
        copy_repo(digits_repo, repo / "r")
        repo = repo / "r"
        write_params(repo / "params.yaml", E2E_PARAMS)
        run(repo, "dvc", "repro")
        run(repo, "git", "add", "-A")
        run(repo, "git", "commit", "-qm", "first results")

    return built_once(tmp_path_factory, "trained_repo", build) / "r"


# The files in the order `make test`'s two workers take them (`--dist loadfile` hands out whole files in
# the order collected): the longest first, so that no long file starts last while the other worker idles.
# test_pipeline_e2e builds the session's repositories first; what reads them comes later. Measured with
# `--durations=0`; a file not listed runs after these, in the usual order.
LONGEST_FIRST = (
    "test_pipeline_e2e.py",
    "test_distributed.py",
    "test_study_dvc.py",
    "test_slices.py",
    "test_compare.py",
    "test_demo_fresh_clone.py",
    "test_adding_a_method.py",
    "test_faults.py",
    "test_pretrain.py",
    "test_quality.py",
    "test_predict.py",
    "test_models.py",
    "test_quiet.py",
    "test_train.py",
    "test_stages_data.py",
    "test_pages.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its order
