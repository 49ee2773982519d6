"""Shard writer: record contents, manifest, byte-identical reruns, atomic replacement, every source."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from semisup.data import base, digits, folder, shards, stl10
from semisup.data.base import SourceSplits, SplitStream
from tests.test_data_sources import make_folder

DATA = {"source": "test"}


def _read_records(path: Path) -> list[tuple[np.ndarray, int]]:
    """Decode a TFRecord file with tf.train.Example directly (independent of the readers)."""
    out = []
    for raw in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
        ex = tf.train.Example.FromString(raw)
        image = np.frombuffer(ex.features.feature["image"].bytes_list.value[0], np.uint8)
        out.append((image, int(ex.features.feature["label"].int64_list.value[0])))
    return out


def synthetic(counts: dict[str, int], size: int = 8, classes: int = 3, seed: int = 0) -> SourceSplits:
    """Random images; labeled/test labels cycle through the classes, unlabeled are -1."""
    rng = np.random.default_rng(seed)
    images = {s: rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8) for s, n in counts.items()}

    def stream(split: str) -> SplitStream:
        def examples() -> Iterator[tuple[np.ndarray, int]]:
            for i, image in enumerate(images[split]):
                yield image, -1 if split == "unlabeled" else i % classes

        return SplitStream(counts[split], examples)

    names = tuple(f"c{i}" for i in range(classes))
    return SourceSplits("synthetic", names, {s: stream(s) for s in base.SPLITS})


def _write(out: Path, source: SourceSplits, num_shards: int = 4, size: int = 8) -> dict:
    return shards.write_shards(
        out, source, image_size=size, num_shards=num_shards, seed=7, data_params=DATA, progress=False
    )


def test_shard_counts_and_names() -> None:
    assert shards.shard_name("labeled", 3, 16) == "labeled-00003-of-00016.tfrecord"
    assert shards.shards_for(0, 16) == 0
    assert shards.shards_for(1, 16) == 1
    assert shards.shards_for(shards.MIN_RECORDS_PER_SHARD + 1, 16) == 2
    assert shards.shards_for(100_000, 16) == 16


def test_records_hold_the_images_round_robin(tmp_path: Path) -> None:
    per_shard = shards.MIN_RECORDS_PER_SHARD
    source = synthetic({"unlabeled": 3 * per_shard - 5, "labeled": 10, "test": 0})
    manifest = _write(tmp_path / "out", source, num_shards=4)
    unl = [s for s in manifest["shards"] if s["split"] == "unlabeled"]
    assert [s["file"] for s in unl] == [f"unlabeled-0000{i}-of-00003.tfrecord" for i in range(3)]
    expected = list(source.splits["unlabeled"].examples())
    for k, entry in enumerate(unl):
        records = _read_records(tmp_path / "out" / entry["file"])
        assert entry["records"] == len(records) == len(range(k, len(expected), 3))
        for j, (image, label) in enumerate(records):
            ref_image, ref_label = expected[k + 3 * j]  # record i -> shard i mod 3
            assert np.array_equal(image, ref_image.ravel()) and label == ref_label == -1
    assert not [s for s in manifest["shards"] if s["split"] == "test"]


def test_manifest_fields(tmp_path: Path) -> None:
    manifest = _write(tmp_path / "out", synthetic({"unlabeled": 20, "labeled": 9, "test": 7}))
    assert json.loads((tmp_path / "out" / shards.MANIFEST).read_text()) == manifest
    assert manifest["image_shape"] == [8, 8, 3] and manifest["num_classes"] == 3
    assert manifest["class_names"] == ["c0", "c1", "c2"]
    assert manifest["counts"] == {"unlabeled": 20, "labeled": 9, "test": 7}
    assert manifest["class_counts"] == {"labeled": [3, 3, 3], "test": [3, 2, 2]}
    assert manifest["seed"] == 7 and manifest["data"] == DATA
    for entry in manifest["shards"]:
        data = (tmp_path / "out" / entry["file"]).read_bytes()
        assert entry["bytes"] == len(data) and entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["records"] == shards.count_records(tmp_path / "out" / entry["file"])


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_same_input_gives_byte_identical_shards(tmp_path: Path) -> None:
    source = synthetic({"unlabeled": 300, "labeled": 30, "test": 20})
    _write(tmp_path / "a", source)
    _write(tmp_path / "b", source)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")


def test_count_records_detects_a_cut(tmp_path: Path) -> None:
    _write(tmp_path / "out", synthetic({"unlabeled": 5, "labeled": 3, "test": 3}))
    path = tmp_path / "out" / "unlabeled-00000-of-00001.tfrecord"
    assert shards.count_records(path) == 5
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="runs past the end"):
        shards.count_records(path)


def test_failed_run_keeps_the_previous_shards(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _write(out, synthetic({"unlabeled": 20, "labeled": 6, "test": 6}))
    before = _files(out)
    good = synthetic({"unlabeled": 20, "labeled": 6, "test": 6}, seed=1)

    def broken() -> Iterator[tuple[np.ndarray, int]]:
        yield from list(good.splits["labeled"].examples())[:3]
        raise RuntimeError("interrupted")

    splits = dict(good.splits, labeled=SplitStream(6, broken))
    with pytest.raises(RuntimeError, match="interrupted"):
        _write(out, SourceSplits("synthetic", good.class_names, splits))
    assert _files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temp dir left behind


def test_rerun_replaces_old_shards(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _write(out, synthetic({"unlabeled": 600, "labeled": 6, "test": 6}))
    assert len(list(out.glob("unlabeled-*"))) == 3
    _write(out, synthetic({"unlabeled": 20, "labeled": 6, "test": 6}))
    assert [p.name for p in out.glob("unlabeled-*")] == ["unlabeled-00000-of-00001.tfrecord"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_stream_count_mismatch_is_an_error(tmp_path: Path) -> None:
    good = synthetic({"unlabeled": 5, "labeled": 3, "test": 3})
    splits = dict(good.splits, test=SplitStream(4, good.splits["test"].examples))
    with pytest.raises(Exception, match="yielded 3 images, expected 4"):
        _write(tmp_path / "out", SourceSplits("synthetic", good.class_names, splits))


def test_digits_to_shards(tmp_path: Path) -> None:
    digits.prepare_digits(tmp_path / "raw", test_fraction=0.2, labeled_per_class=10)
    src = digits.digits_splits(
        tmp_path / "raw", image_size=32, test_fraction=0.2, labeled_per_class=10, seed=0
    )
    manifest = _write(tmp_path / "out", src, num_shards=16, size=32)
    assert manifest["counts"]["labeled"] == 100 and manifest["class_counts"]["labeled"] == [10] * 10
    assert sum(manifest["counts"].values()) == 1797
    assert manifest["counts"]["unlabeled"] == 1797 - 100 - manifest["counts"]["test"]
    labels = [
        y
        for s in manifest["shards"]
        if s["split"] == "test"
        for _, y in _read_records(tmp_path / "out" / s["file"])
    ]
    assert np.bincount(labels).tolist() == manifest["class_counts"]["test"]


def test_folder_to_shards(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "imgs")
    args = {"test_fraction": 0.2, "labeled_per_class": 2}
    folder.prepare_folder(root, tmp_path / "raw", on_bad_image="error", progress=False, **args)
    with folder.folder_splits(root, tmp_path / "raw", image_size=32, seed=0, progress=False, **args) as src:
        manifest = _write(tmp_path / "out", src, size=32)
    assert manifest["source"] == "folder" and manifest["class_names"] == ["cat", "dog", "fox"]
    assert manifest["counts"] == {"unlabeled": 13, "labeled": 6, "test": 3}


def test_stl10_mock_to_shards_subsampled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tensorflow_datasets as tfds

    def as_dataset(self, split, **kwargs):  # 30 images per split, labels 0..9 three times
        images = np.arange(30, dtype=np.uint8)[:, None, None, None] * np.ones((1, 96, 96, 3), np.uint8)
        return tf.data.Dataset.from_tensor_slices({"image": images, "label": np.arange(30) % 10})

    monkeypatch.setattr(stl10, "host_reachable", lambda *a, **k: True)
    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        stl10.prepare_stl10(
            tmp_path / "raw", manual_dir=tmp_path / "m", download_dir=tmp_path / "d", labeled_per_class=2
        )
        src = stl10.stl10_splits(tmp_path / "raw", image_size=32, labeled_per_class=2, seed=0)
        manifest = _write(tmp_path / "out", src, size=32)
    # unlabelled (30) + the 10 train images left out; 2 of 3 per class labeled; test kept whole.
    assert manifest["counts"] == {"unlabeled": 40, "labeled": 20, "test": 30}
    assert manifest["class_counts"] == {"labeled": [2] * 10, "test": [3] * 10}
    records = {
        split: [
            r
            for s in manifest["shards"]
            if s["split"] == split
            for r in _read_records(tmp_path / "out" / s["file"])
        ]
        for split in base.SPLITS
    }
    assert all(y == -1 for _, y in records["unlabeled"])
    # Train image i has pixel value i and label i % 10: labeled records keep that pairing.
    assert all(int(x[0]) % 10 == y for x, y in records["labeled"])
    train_values = sorted(int(x[0]) for x, _ in records["labeled"]) + sorted(
        int(x[0]) for x, _ in records["unlabeled"][-10:]
    )
    assert sorted(train_values) == list(range(30))


def _fake_stl10_archive(path: Path, rng: np.random.Generator) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A tiny stl10_binary.tar.gz in the real layout: (N, 3, 96, 96) column-major images, labels 1..10."""
    import io
    import tarfile

    data = {"train": 20, "test": 10, "unlabeled": 15}
    out, members = {}, {}
    for split, n in data.items():
        x = rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8)
        y = (np.arange(n) % 10 + 1).astype(np.uint8)
        members[f"{split}_X.bin"] = x.tobytes()
        if split != "unlabeled":
            members[f"{split}_y.bin"] = y.tobytes()
        out[split] = (x.transpose(0, 3, 2, 1), y.astype(np.int64) - 1)  # tfds' HWC view of the bytes
    members["class_names.txt"] = "\n".join(stl10.CLASS_NAMES).encode() + b"\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo(f"stl10_binary/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return out


def test_stl10_real_tfds_prepare_from_manual_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tensorflow_datasets.core.download import download_manager

    from semisup.data import readers
    from semisup.data.images import resize_rgb

    raw = _fake_stl10_archive(tmp_path / "manual" / stl10.ARCHIVE, np.random.default_rng(0))
    # The stand-in archive cannot have the real sha256; everything else is tfds' real path.
    monkeypatch.setattr(
        download_manager.DownloadManager, "_register_or_validate_checksums", lambda *a, **k: None
    )
    monkeypatch.setattr(stl10, "host_reachable", lambda *a, **k: pytest.fail("network probed"))
    dirs = {"manual_dir": tmp_path / "manual", "download_dir": tmp_path / "dl"}
    stl10.prepare_stl10(tmp_path / "raw", labeled_per_class=1, **dirs)
    assert json.loads((tmp_path / "raw" / stl10.MARKER_FILE).read_text())["splits"] == {
        "test": 10,
        "train": 20,
        "unlabelled": 15,
    }
    src = stl10.stl10_splits(tmp_path / "raw", image_size=32, labeled_per_class=1, seed=0)
    assert src.class_names == stl10.CLASS_NAMES
    manifest = _write(tmp_path / "out", src, size=32)
    assert manifest["counts"] == {"unlabeled": 15 + 10, "labeled": 10, "test": 10}
    images, labels = readers.load_split(tmp_path / "out", "test")
    # tfds stores examples in its own shuffled order: match each image to its source.
    expected = {resize_rgb(x, 32).tobytes(): int(y) for x, y in zip(*raw["test"], strict=True)}
    assert (
        len(images) == 10 and {a.tobytes(): int(b) for a, b in zip(images, labels, strict=True)} == expected
    )


def test_stl10_archive_with_wrong_checksum_is_a_user_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from semisup.core.errors import UserError

    _fake_stl10_archive(tmp_path / "manual" / stl10.ARCHIVE, np.random.default_rng(0))
    monkeypatch.setattr(stl10, "host_reachable", lambda *a, **k: pytest.fail("network probed"))
    with pytest.raises(UserError, match=r"sha256 is not f31fd992.*delete .*manual/stl10_binary\.tar\.gz"):
        stl10.prepare_stl10(
            tmp_path / "raw",
            manual_dir=tmp_path / "manual",
            download_dir=tmp_path / "dl",
            labeled_per_class=None,
        )
    assert not (tmp_path / "raw" / stl10.MARKER_FILE).exists()
