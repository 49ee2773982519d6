"""Label subsets: class-stratified, deterministic, nested across budgets, read without TensorFlow."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from semisup.core.errors import DataError, UserError
from semisup.data.subsets import (
    draw_subset,
    example_label,
    labeled_split_labels,
    parse_budget,
    read_subset,
    run_name,
    subset_path,
)
from tests.support import ENV, ROOT, write_params

LABELS = np.repeat(np.arange(4), [7, 9, 8, 12])[np.random.default_rng(3).permutation(36)]


@pytest.fixture(scope="module")
def shards(digits_shards):
    """The session's digits shards (tests/conftest.py): 25 labeled images per class."""
    return digits_shards


def test_example_label_reads_what_tensorflow_wrote():
    from semisup.data.shards import serialize_example

    image = np.zeros((2, 2, 3), np.uint8)
    for label in (0, 7, 123456, -1):
        assert example_label(serialize_example(image, label)) == label


@pytest.mark.slow
def test_labels_without_tensorflow_match_the_reader(shards):
    from semisup.data.readers import load_split

    labels, manifest = labeled_split_labels(shards)
    _, reference = load_split(shards, "labeled")
    np.testing.assert_array_equal(labels, reference)
    assert len(labels) == 250 and manifest["num_classes"] == 10


def test_stratified_deterministic_and_nested():
    for per_class in (1, 3, 7):
        ids = draw_subset(LABELS, 4, per_class, seed=5)
        assert np.all(np.diff(ids) > 0)
        np.testing.assert_array_equal(np.bincount(LABELS[ids], minlength=4), [per_class] * 4)
        np.testing.assert_array_equal(ids, draw_subset(LABELS, 4, per_class, seed=5))
    small, mid, big = (set(draw_subset(LABELS, 4, n, seed=5)) for n in (1, 3, 7))
    assert small < mid < big  # nested: every budget of one seed extends the smaller ones
    assert set(draw_subset(LABELS, 4, 3, seed=6)) != mid  # another seed, another subset
    np.testing.assert_array_equal(draw_subset(LABELS, 4, None, seed=5), np.arange(36))


def test_a_class_draw_does_not_depend_on_other_classes():
    relabeled = np.where(LABELS == 3, 2, LABELS)  # merge classes 2 and 3
    a, b = draw_subset(LABELS, 4, 3, seed=1), draw_subset(relabeled, 4, 3, seed=1)
    np.testing.assert_array_equal(a[LABELS[a] < 2], b[relabeled[b] < 2])


def test_budget_names_match_dvc_matrix_names(tmp_path):
    assert [parse_budget(x) for x in (5, "5", "all", None, "None", "null")] == [5, 5, None, None, None, None]
    assert run_name("paws", "all", 0) == "paws-all-0" and run_name("paws", None, 2) == "paws-None-2"
    assert subset_path(tmp_path, 25, 1) == tmp_path / "25-1.json"
    with pytest.raises(UserError, match="--budget"):
        parse_budget("ten")
    with pytest.raises(UserError, match="--budget"):
        parse_budget("0")


def test_read_subset_refuses_bad_files(tmp_path):
    path = tmp_path / "5-0.json"
    with pytest.raises(UserError, match="splits@5-0"):
        read_subset(path)
    for ids in ([3, 1], [1, 1], [], [0, 50]):
        path.write_text(json.dumps({"ids": ids}))
        with pytest.raises(DataError, match="5-0.json"):
            read_subset(path, num_labeled=50)
    path.write_text("{not json")
    with pytest.raises(DataError, match="not a subset file"):
        read_subset(path)


def run_stage(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stages.splits", *args], cwd=ROOT, env=ENV, capture_output=True, text=True
    )


@pytest.mark.slow
def test_stage_writes_each_budget_and_refuses_too_many(shards, tmp_path):
    labels, _ = labeled_split_labels(shards)
    for budget in ("3", "25", "all"):
        proc = run_stage("--budget", budget, "--seed", "4", "--shards", str(shards), "--out", str(tmp_path))
        assert proc.returncode == 0, proc.stderr
    written = {b: json.loads((tmp_path / f"{b}-4.json").read_text()) for b in ("3", "25", "all")}
    assert written["3"]["per_class"] == [3] * 10 and written["3"]["count"] == 30
    assert written["all"]["ids"] == list(range(250))
    np.testing.assert_array_equal(written["3"]["ids"], draw_subset(labels, 10, 3, seed=4))
    assert set(written["3"]["ids"]) < set(written["25"]["ids"])
    proc = run_stage("--budget", "26", "--seed", "0", "--shards", str(shards), "--out", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "study.labeled_per_class: 26" in proc.stderr
    assert not (tmp_path / "26-0.json").exists()


@pytest.mark.parametrize(
    ("study", "budget", "seed", "message"),
    [
        # What DVC's matrix passes to the stage for each mistake in params.yaml: the key's own message comes
        # first, not one about the stage's options, and before the subset file is written.
        ({"labeled_per_class": ["ALL"]}, "ALL", "0", "study.labeled_per_class[0]: 'ALL' is not"),
        ({"seeds": [1.5]}, "all", "1.5", "study.seeds[0]: 1.5 is not an integer"),
        ({"seeds": [-1]}, "all", "-1", "study.seeds: [-1] is out of range"),
        ({"seeds": [2**32]}, "all", str(2**32), "study.seeds: [4294967296] is out of range"),
        ({"seeds": [0, 0]}, "all", "0", "study.seeds: 0 listed twice"),
        # DVC's matrix names a null budget's stages pretrain@paws-None-0: refused, all is its name
        ({"labeled_per_class": [5, None]}, "None", "0", "study.labeled_per_class[1]: null names its runs"),
    ],
)
def test_stage_checks_params_before_writing(shards, tmp_path, study, budget, seed, message):
    params = write_params(tmp_path / "params.yaml", {f"study.{k}": v for k, v in study.items()})
    out = tmp_path / "splits"
    args = ["--budget", budget, "--seed", seed, "--shards", str(shards), "--out", str(out)]
    proc = run_stage(*args, "--params", str(params))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and message in proc.stderr, proc.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("study", "message"),
    [
        ({"labeled_per_class": [0]}, "study.labeled_per_class[0]: 0 is out of range"),
        ({"labeled_per_class": ["ten"]}, "study.labeled_per_class[0]: 'ten' is not"),
        ({"labeled_per_class": [5, 5]}, "study.labeled_per_class: 5 listed twice"),
        ({"labeled_per_class": ["all", None]}, "study.labeled_per_class: all listed twice"),
        ({"seeds": []}, "study.seeds: must not be empty"),
        ({"seeds": [0, 0]}, "study.seeds: 0 listed twice"),
        ({"seeds": [-1]}, "study.seeds: [-1] is out of range"),
    ],
)
def test_study_params_are_validated(study, message):
    from semisup.config import parse_params

    with pytest.raises(UserError, match=re.escape(message)):
        parse_params({"study": study})


def test_study_defaults_are_one_run_per_method():
    from semisup.config import load_params

    study = load_params(ROOT / "params.yaml").study
    assert study.seeds == (0,) and study.labeled_per_class == ("all",)
