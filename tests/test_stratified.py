"""Class-stratified support batches (PAWS's ClassStratifiedSampler): counts per class per step by hand,
the reader's stream on 1 and 2 input pipelines, and every impossible setting refused before compute."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from semisup.config import Params, RunSpec, resolve_run
from semisup.core.errors import UserError
from semisup.data import readers, stratified
from semisup.data.subsets import labeled_split_labels
from semisup.methods import ViewOptions
from semisup.training.preflight import check_run
from tests.test_data_readers import N_LABELED, originals, shard_dir  # noqa: F401  (module fixtures)

SIZES = [5, 6, 7, 8]  # images of classes 0..3


def _labels(seed: int = 0) -> np.ndarray:
    labels = np.repeat(np.arange(len(SIZES)), SIZES)
    np.random.default_rng(seed).shuffle(labels)
    return labels


def test_two_of_four_classes_per_step_every_class_once_per_two_steps():
    labels = _labels()
    out = stratified.batches(labels, 4, supports_per_class=2, classes_per_batch=2, steps=6, seed=3)
    assert out.shape == (6, 4) and out.dtype == np.int64
    for t in range(6):
        # Row r of a step holds the r-th image of each of its classes: [a, b, a, b].
        y = labels[out[t]].reshape(2, 2)
        assert y[0].tolist() == y[1].tolist() and len(set(y[0].tolist())) == 2
    for cycle in range(3):  # 4 classes / 2 per step: each pair of steps covers every class once
        assert sorted(labels[out[2 * cycle : 2 * cycle + 2]].ravel().tolist()) == [0, 0, 1, 1, 2, 2, 3, 3]
    for c, size in enumerate(SIZES):
        # Three turns of 2 images: 6 draws. A pass takes 2 x (size // 2) images without replacement:
        # class 0 (5 images) 4 distinct then a new pass; classes 1..3 (6, 7, 8 images) 6 distinct.
        drawn = [int(i) for i in out.ravel() if labels[i] == c]
        assert len(drawn) == 6 and set(drawn) <= set(np.flatnonzero(labels == c).tolist())
        first_pass = drawn[: 2 * (size // 2)]
        assert len(set(first_pass)) == len(first_pass) == min(6, 2 * (size // 2))
        if size == 6:
            assert sorted(drawn) == np.flatnonzero(labels == c).tolist()  # the whole class once


def test_every_class_in_every_step_when_classes_per_batch_is_null():
    labels = _labels(1)
    out = stratified.batches(labels, 4, supports_per_class=3, classes_per_batch=None, steps=5, seed=0)
    assert out.shape == (5, 12)
    for row in out:
        assert np.bincount(labels[row], minlength=4).tolist() == [3, 3, 3, 3]
        assert len(set(row.tolist())) == 12  # 3 of at least 5 images: no image twice in one step


def test_batches_depend_on_the_seed_only():
    labels = _labels()
    args = {"supports_per_class": 2, "classes_per_batch": 2, "steps": 8}
    a, b = stratified.batches(labels, 4, seed=5, **args), stratified.batches(labels, 4, seed=5, **args)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, stratified.batches(labels, 4, seed=6, **args))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"supports_per_class": None, "classes_per_batch": 2},
            r"classes_per_batch: 2 needs .*supports_per_class",
        ),
        (
            {"supports_per_class": 2, "classes_per_batch": 3},
            r"classes_per_batch: 3 does not divide the 4 .*1, 2, 4",
        ),
        ({"supports_per_class": 2, "classes_per_batch": 8}, r"classes_per_batch: 8 does not divide"),
        (
            {"supports_per_class": 6},
            r"supports_per_class: 6 is more than class 0 has in the labeled subset \(5",
        ),
        (
            {"supports_per_class": 2, "labeled_batch": 10},
            r"labeled_batch: 10, .* 4 x 2: set labeled_batch to 8",
        ),
    ],
)
def test_impossible_settings_are_one_line_user_errors(kwargs, message):
    args = {"classes_per_batch": None, "labeled_batch": 4 * (kwargs.get("supports_per_class") or 2)} | kwargs
    with pytest.raises(UserError, match=message):
        stratified.check(SIZES, **args)


def test_the_readers_stream_is_stratified_and_the_same_on_two_pipelines(shard_dir, originals):  # noqa: F811
    args = {"unlabeled_batch": 64, "labeled_batch": 12, "seed": 0, "epoch": 2, "shuffle_buffer": 100}
    strat = {"views": ViewOptions(supports_per_class=4, classes_per_batch=None)}
    whole, steps = readers.train_dataset(shard_dir, **args, **strat)
    whole = list(whole.as_numpy_iterator())
    assert len(whole) == steps
    label_of = {x.tobytes(): y for x, y in originals["labeled"]}
    for _, x, y in whole:
        assert np.bincount(y, minlength=3).tolist() == [4, 4, 4]  # 3 classes x 4 supports, every step
        assert [label_of[img.tobytes()] for img in x] == y.tolist()
    # Two pipelines of one replica each read halves of the same global batches.
    halves = []
    for worker in range(2):
        ctx = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=worker, num_replicas_in_sync=2
        )
        part, _ = readers.train_dataset(shard_dir, **args, **strat, input_context=ctx)
        halves.append(list(part.as_numpy_iterator()))
    for k, (_, x, y) in enumerate(whole):
        np.testing.assert_array_equal(np.concatenate([h[k][1] for h in halves]), x)
        np.testing.assert_array_equal(np.concatenate([h[k][2] for h in halves]), y)


def _params(**paws) -> Params:
    params = Params()
    methods = dataclasses.replace(params.methods, paws=dataclasses.replace(params.methods.paws, **paws))
    return dataclasses.replace(params, methods=methods, knn=dataclasses.replace(params.knn, k=(5,)))


@pytest.mark.parametrize(
    ("paws", "ids", "message"),
    [
        (
            {"supports_per_class": 21, "labeled_batch": 63},
            None,
            r"more than class 'c0' has in the labeled split \(20 images\): lower it, or label more images \(data",
        ),
        # The run's subset: 3 images of each class.
        (
            {"supports_per_class": 4, "labeled_batch": 12},
            3,
            r"more than class 'c0' .* run's labeled subset \(3",
        ),
        ({"supports_per_class": 4}, None, r"labeled_batch: 250, .* 3 x 4: set labeled_batch to 12"),
        (
            {"supports_per_class": 4, "classes_per_batch": 2, "labeled_batch": 8},
            None,
            r"2 does not divide the 3",
        ),
    ],
)
def test_the_run_is_refused_before_compute(shard_dir, paws, ids, message):  # noqa: F811
    manifest = readers.read_manifest(shard_dir)
    with pytest.raises(UserError, match=message):
        check_run(_spec(_params(**paws), _per_class(shard_dir, ids)), manifest, shard_dir)


def _spec(params: Params, labeled_ids: list[int] | None) -> RunSpec:
    return resolve_run(params, "paws", labeled_ids=labeled_ids)


def _per_class(shards: Path, n: int | None) -> list[int] | None:
    """Positions of the first `n` labeled images of each class (None: None, every labeled image)."""
    if n is None:
        return None
    labels, _ = labeled_split_labels(shards)
    return sorted(int(i) for c in range(3) for i in np.flatnonzero(labels == c)[:n])


def test_possible_settings_pass(shard_dir):  # noqa: F811
    manifest = readers.read_manifest(shard_dir)
    assert N_LABELED // 3 == 20  # the whole split: 20 of each class
    check_run(_spec(_params(supports_per_class=20, labeled_batch=60), None), manifest, shard_dir)
    subset = _per_class(shard_dir, 3)
    check_run(_spec(_params(supports_per_class=3, labeled_batch=9), subset), manifest, shard_dir)
