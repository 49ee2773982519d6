"""Readers: shard verification, evaluation order, the seeded training stream, per-worker sharding."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from semisup.core.errors import DataError
from semisup.data import base, readers, shards
from tests.test_data_shards import synthetic

SIZE = 8
N_UNLABELED, N_LABELED, N_TEST = 1000, 60, 50


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shards") / "shards"
    source = synthetic({"unlabeled": N_UNLABELED, "labeled": N_LABELED, "test": N_TEST}, size=SIZE)
    shards.write_shards(out, source, image_size=SIZE, num_shards=4, seed=0, data_params={}, progress=False)
    return out


@pytest.fixture(scope="module")
def originals() -> dict[str, list[tuple[np.ndarray, int]]]:
    source = synthetic({"unlabeled": N_UNLABELED, "labeled": N_LABELED, "test": N_TEST}, size=SIZE)
    return {s: list(source.splits[s].examples()) for s in base.SPLITS}


@pytest.fixture
def copy_dir(shard_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "shards"
    out.mkdir()
    for p in shard_dir.iterdir():
        (out / p.name).write_bytes(p.read_bytes())
    return out


def _first_shard(d: Path, split: str = "unlabeled") -> Path:
    return d / next(s["file"] for s in readers.read_manifest(d)["shards"] if s["split"] == split)


def test_verify_passes_and_returns_the_manifest(shard_dir: Path) -> None:
    manifest = readers.verify_shards(shard_dir)
    assert manifest["counts"] == {"unlabeled": N_UNLABELED, "labeled": N_LABELED, "test": N_TEST}


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"manifest\.json not found: run the shard stage"):
        readers.verify_shards(tmp_path)


def test_missing_shard_is_named(copy_dir: Path) -> None:
    path = _first_shard(copy_dir)
    path.unlink()
    with pytest.raises(DataError, match=rf"{path.name}: missing shard"):
        readers.verify_shards(copy_dir)


def test_truncated_shard_is_named(copy_dir: Path) -> None:
    path = _first_shard(copy_dir)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=rf"{path.name}: \d+ bytes, the manifest says \d+"):
        readers.verify_shards(copy_dir)


def test_corrupted_shard_is_named(copy_dir: Path) -> None:
    readers.verify_shards(copy_dir)  # passes, and is remembered ...
    path = _first_shard(copy_dir, "labeled")
    data = bytearray(path.read_bytes())
    data[12 + 100] ^= 0xFF  # same size, one flipped byte inside the first image (after its 12-byte header)
    path.write_bytes(bytes(data))
    with pytest.raises(
        DataError, match=rf"{path.name}: sha256 differs"
    ):  # ... but a changed file is rechecked
        readers.verify_shards(copy_dir)


def test_corrupted_header_found_without_hashing(copy_dir: Path) -> None:
    path = _first_shard(copy_dir)
    data = bytearray(path.read_bytes())
    data[5] = 0x7F  # the first record's uint64 length now points far past the end of the file
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=rf"{path.name}: record 0 runs past the end"):
        readers.verify_shards(copy_dir, hash_limit_bytes=0)


def test_eval_dataset_order_and_last_partial_batch(shard_dir: Path, originals: dict) -> None:
    batches = list(readers.eval_dataset(shard_dir, "test", 16).as_numpy_iterator())
    assert [len(y) for _, y in batches] == [16, 16, 16, 2]
    images = np.concatenate([x for x, _ in batches])
    labels = np.concatenate([y for _, y in batches])
    assert images.dtype == np.uint8 and images.shape == (N_TEST, SIZE, SIZE, 3) and labels.dtype == np.int64
    # One test shard: records in the order the source yielded them.
    assert np.array_equal(images, np.stack([x for x, _ in originals["test"]]))
    assert labels.tolist() == [y for _, y in originals["test"]]


def test_load_split_matches_eval_order_across_shards(shard_dir: Path, originals: dict) -> None:
    images, labels = readers.load_split(shard_dir, "unlabeled")
    n = len([s for s in readers.read_manifest(shard_dir)["shards"] if s["split"] == "unlabeled"])
    assert n == 4
    order = [i for k in range(n) for i in range(k, N_UNLABELED, n)]  # shard k holds records k, k+n, ...
    assert np.array_equal(images, np.stack([originals["unlabeled"][i][0] for i in order]))
    assert (labels == -1).all()


def _epoch(shard_dir: Path, epoch: int, seed: int = 0, **kwargs) -> tuple[list, int]:
    args = {"unlabeled_batch": 64, "labeled_batch": 16, "shuffle_buffer": 500} | kwargs
    ds, steps = readers.train_dataset(shard_dir, seed=seed, epoch=epoch, **args)
    return list(ds.as_numpy_iterator()), steps


def test_train_stream_shapes_and_contents(shard_dir: Path, originals: dict) -> None:
    batches, steps = _epoch(shard_dir, epoch=1)
    assert steps == N_UNLABELED // 64 == len(batches)
    unlabeled = {x.tobytes() for x, _ in originals["unlabeled"]}
    label_of = {x.tobytes(): y for x, y in originals["labeled"]}
    seen = []
    for u, x, y in batches:
        assert u.shape == (64, SIZE, SIZE, 3) and u.dtype == np.uint8
        assert x.shape == (16, SIZE, SIZE, 3) and y.shape == (16,) and y.dtype == np.int64
        assert all(img.tobytes() in unlabeled for img in u)
        assert [label_of[img.tobytes()] for img in x] == y.tolist()  # labels stay with their images
        seen += [img.tobytes() for img in u]
    assert len(set(seen)) == len(seen) == steps * 64  # one pass: no unlabeled image twice
    labeled_seen = [img.tobytes() for _, x, _ in batches for img in x]
    first_pass = labeled_seen[:N_LABELED]
    assert len(set(first_pass)) == N_LABELED  # the labeled split repeats whole passes


def test_parts_a_method_never_encodes_are_not_read(shard_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    full, steps = _epoch(shard_dir, epoch=2)
    reads = []
    record_reader, labeled_reader = readers._records, readers.labeled_subset
    monkeypatch.setattr(
        readers, "_records", lambda *a, **k: reads.append(k["shards"][0]["split"]) or record_reader(*a, **k)
    )
    monkeypatch.setattr(readers, "labeled_subset", lambda *a: reads.append("labeled") or labeled_reader(*a))
    no_u, steps_u = _epoch(shard_dir, epoch=2, read_unlabeled=False)
    no_l, steps_l = _epoch(shard_dir, epoch=2, read_labeled=False)
    assert reads == ["labeled", "unlabeled"]
    assert steps_u == steps_l == steps == len(no_u) == len(no_l)
    for (u, x, y), (u0, x0, y0), (u1, x1, y1) in zip(full, no_u, no_l, strict=True):
        assert u0.shape == (0, SIZE, SIZE, 3) and u0.dtype == np.uint8
        assert np.array_equal(x0, x) and np.array_equal(y0, y)  # the same labeled stream
        assert np.array_equal(u1, u)  # the same unlabeled stream
        assert x1.shape == (0, SIZE, SIZE, 3) and y1.shape == (0,) and y1.dtype == np.int64


def test_train_stream_is_seeded_by_seed_and_epoch(shard_dir: Path) -> None:
    a, _ = _epoch(shard_dir, epoch=3)
    b, _ = _epoch(shard_dir, epoch=3)
    c, _ = _epoch(shard_dir, epoch=4)
    d, _ = _epoch(shard_dir, epoch=3, seed=1)
    assert all(np.array_equal(p, q) for s, t in zip(a, b, strict=True) for p, q in zip(s, t, strict=True))
    assert not np.array_equal(a[0][0], c[0][0])
    assert not np.array_equal(a[0][1], c[0][1])
    assert not np.array_equal(a[0][0], d[0][0])


def test_no_shuffle_interleaves_the_shards(shard_dir: Path, originals: dict) -> None:
    batches, steps = _epoch(shard_dir, epoch=1, shuffle_buffer=1)
    assert len(batches) == steps
    # 4 shards read one record at a time each: batch 0 is records 0..15 of every shard, i.e. the
    # source's first 64 records (shard k holds k, k+4, ...), in some order.
    first = {img.tobytes() for img in batches[0][0]}
    assert first == {x.tobytes() for x, _ in originals["unlabeled"][:64]}


def test_batch_larger_than_unlabeled_split_names_the_param(shard_dir: Path) -> None:
    with pytest.raises(
        DataError, match=r"unlabeled split \(1000 images\).*lower methods\.paws\.unlabeled_batch"
    ):
        readers.train_dataset(
            shard_dir,
            unlabeled_batch=1001,
            labeled_batch=4,
            seed=0,
            epoch=1,
            shuffle_buffer=10,
            method="paws",
        )


def test_empty_labeled_split(tmp_path: Path) -> None:
    source = synthetic({"unlabeled": 50, "labeled": 0, "test": 5}, size=SIZE)
    shards.write_shards(
        tmp_path / "s", source, image_size=SIZE, num_shards=2, seed=0, data_params={}, progress=False
    )
    with pytest.raises(DataError, match="labeled split is empty"):
        readers.train_dataset(
            tmp_path / "s", unlabeled_batch=8, labeled_batch=4, seed=0, epoch=1, shuffle_buffer=10
        )
    images, labels = readers.load_split(tmp_path / "s", "labeled")
    assert images.shape == (0, SIZE, SIZE, 3) and images.dtype == np.uint8 and labels.shape == (0,)


def test_malformed_manifest(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match=r"manifest\.json: unreadable"):
        readers.read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text('{"source": "x"}')
    with pytest.raises(DataError, match="missing image_shape, num_classes"):
        readers.read_manifest(tmp_path)


def test_input_pipelines_split_every_global_batch(shard_dir: Path) -> None:
    # Two pipelines of one replica each: each yields its half of every global batch of one pipeline.
    whole, steps = _epoch(shard_dir, epoch=1, shuffle_buffer=100)
    halves = []
    for worker in range(2):
        ctx = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=worker, num_replicas_in_sync=2
        )
        part, part_steps = _epoch(shard_dir, epoch=1, shuffle_buffer=100, input_context=ctx)
        assert part_steps == steps == len(part)
        assert all(u.shape[0] == 32 and x.shape[0] == 8 for u, x, _ in part)  # per-replica batches
        halves.append(part)
    for k, (u, x, y) in enumerate(whole):
        assert np.array_equal(np.concatenate([h[k][0] for h in halves]), u)
        assert np.array_equal(np.concatenate([h[k][1] for h in halves]), x)
        assert np.array_equal(np.concatenate([h[k][2] for h in halves]), y)


def test_verify_is_cheap_once_done(shard_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    readers.verify_shards(shard_dir)
    monkeypatch.setattr(readers, "sha256_file", lambda *_: pytest.fail("hashed again"))
    monkeypatch.setattr(readers, "count_records", lambda *_: pytest.fail("walked again"))
    readers.verify_shards(shard_dir)
    os.utime(_first_shard(shard_dir), ns=(1, 1))  # touched: checked again
    with pytest.raises(pytest.fail.Exception, match="walked again"):
        readers.verify_shards(shard_dir)
