"""Sources and splits: stratified counts by hand, digits against scikit-learn, image folders, STL10 offline."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from semisup.core.errors import DataError, UserError
from semisup.data import base, digits, folder, splits, stl10
from semisup.data.images import resize_rgb

NAMES = ("a", "b", "c")


def _labels(sizes: list[int]) -> np.ndarray:
    return np.concatenate([np.full(n, c) for c, n in enumerate(sizes)])


def test_stratified_split_counts_by_hand() -> None:
    labels = _labels([10, 20, 31])
    got = splits.stratified_split(labels, NAMES, test_fraction=0.2, labeled_per_class=3, seed=0)
    # round(0.2 x [10, 20, 31]) = [2, 4, 6] test; 3 labeled each; the rest unlabeled.
    assert np.bincount(labels[got["test"]]).tolist() == [2, 4, 6]
    assert np.bincount(labels[got["labeled"]]).tolist() == [3, 3, 3]
    assert np.bincount(labels[got["unlabeled"]]).tolist() == [5, 13, 22]
    everything = np.concatenate([got["test"], got["labeled"], got["unlabeled"]])
    assert sorted(everything.tolist()) == list(range(len(labels)))  # a partition: disjoint and complete


def test_stratified_split_is_seeded() -> None:
    labels = _labels([50, 50])
    kwargs = {"test_fraction": 0.3, "labeled_per_class": 5}
    a = splits.stratified_split(labels, NAMES[:2], seed=1, **kwargs)
    b = splits.stratified_split(labels, NAMES[:2], seed=1, **kwargs)
    c = splits.stratified_split(labels, NAMES[:2], seed=2, **kwargs)
    assert all(np.array_equal(a[s], b[s]) for s in a)
    assert not np.array_equal(np.sort(a["labeled"]), np.sort(c["labeled"]))


def test_tiny_class_gets_one_test_image_and_keeps_one() -> None:
    counts = np.array([2, 3, 100])
    assert splits.test_counts(counts, 0.1).tolist() == [1, 1, 10]
    assert splits.test_counts(counts, 0.9).tolist() == [1, 2, 90]


def test_labeled_per_class_too_large_names_the_class() -> None:
    labels = _labels([10, 6, 30])  # class b keeps 6 - round(1.2) = 5 training images
    with pytest.raises(UserError, match=r"labeled_per_class: 6 .*class 'b'.*at most 5"):
        splits.stratified_split(labels, NAMES, test_fraction=0.2, labeled_per_class=6, seed=0)


def test_everything_labeled_without_extra_unlabeled_is_an_error() -> None:
    labels = _labels([10, 10, 10])
    with pytest.raises(UserError, match="unlabeled split is empty"):
        splits.stratified_split(labels, NAMES, test_fraction=0.2, labeled_per_class=None, seed=0)
    got = splits.stratified_split(
        labels, NAMES, test_fraction=0.2, labeled_per_class=None, seed=0, extra_unlabeled=4
    )
    assert len(got["labeled"]) == 24 and len(got["unlabeled"]) == 0


def test_class_with_one_image_is_an_error() -> None:
    with pytest.raises(UserError, match="class 'b' has 1 image: "):
        splits.stratified_split(_labels([5, 1, 5]), NAMES, test_fraction=0.2, labeled_per_class=1, seed=0)


def test_resize_gray_to_three_equal_channels() -> None:
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    out = resize_rgb(gray, 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 0], out[..., 2])
    assert np.array_equal(resize_rgb(np.full((8, 8), 77, np.uint8), 32), np.full((32, 32, 3), 77))


def test_resize_antialiases_when_shrinking() -> None:
    # A one-pixel checkerboard halved: point sampling would give 0 or 255, an antialiased filter ~127.
    board = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)
    out = resize_rgb(np.stack([board] * 3, -1), 32)
    assert abs(out[4:-4, 4:-4].astype(float).mean() - 127.5) < 3
    assert out[4:-4, 4:-4].std() < 10


def test_digits_raw_file_matches_scikit_learn(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    path = digits.prepare_digits(tmp_path, test_fraction=0.2, labeled_per_class=10)
    first = path.read_bytes()
    digits.prepare_digits(tmp_path, test_fraction=0.2, labeled_per_class=10)
    assert path.read_bytes() == first  # reproducible bytes: no zip timestamps
    sk = load_digits()
    with np.load(path) as npz:
        assert np.array_equal(npz["images"], np.round(sk.images * 255 / 16).astype(np.uint8))
        assert np.array_equal(npz["labels"], sk.target)
        assert npz["class_names"].tolist() == [str(i) for i in range(10)]


def test_digits_too_many_labeled_fails_before_writing(tmp_path: Path) -> None:
    # The smallest digits class has 174 images: 174 - round(0.2 x 174) = 139 stay for training.
    with pytest.raises(UserError, match="at most 139"):
        digits.prepare_digits(tmp_path, test_fraction=0.2, labeled_per_class=140)
    assert not list(tmp_path.iterdir())


def test_digits_splits_hold_resized_digits_with_their_labels(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    digits.prepare_digits(tmp_path, test_fraction=0.25, labeled_per_class=20)
    got = digits.digits_splits(tmp_path, image_size=32, test_fraction=0.25, labeled_per_class=20, seed=3)
    sk = load_digits()
    # Independent reference: PIL bicubic of the 0..255 gray digit, channel repeated.
    gray = np.round(sk.images * 255 / 16).astype(np.uint8)
    ref = {}
    for img, y in zip(gray, sk.target, strict=True):
        big = np.asarray(Image.fromarray(img).resize((32, 32), Image.Resampling.BICUBIC))
        ref.setdefault(np.stack([big] * 3, -1).tobytes(), set()).add(int(y))
    seen = {}
    for split in base.SPLITS:
        examples = list(got.splits[split].examples())
        assert len(examples) == got.splits[split].count
        for image, label in examples:
            assert image.shape == (32, 32, 3)
            labels = ref[image.tobytes()]
            assert label == -1 if split == "unlabeled" else label in labels
        seen[split] = examples
    assert len(seen["labeled"]) == 200
    assert np.bincount([y for _, y in seen["labeled"]]).tolist() == [20] * 10
    assert sum(len(v) for v in seen.values()) == 1797


def _png(path: Path, size: tuple[int, int], value: int, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
    Image.fromarray(np.full(shape, value, np.uint8), mode=mode).save(path)


def make_folder(root: Path, per_class: int = 6, unlabeled: int = 4, bad: bool = False) -> Path:
    """cat/ dog/ fox/ with `per_class` small images each (one gray, one JPEG), unlabeled/ and maybe a bad file."""
    for c, name in enumerate(["cat", "dog", "fox"]):
        for i in range(per_class):
            value = 40 * c + i
            if i == 0:
                _png(root / name / f"{i}.png", (20, 12), value, mode="L")
            elif i == 1:
                Image.fromarray(np.full((16, 16, 3), value, np.uint8)).save(
                    root / name / f"{i}.jpg", quality=100
                )
            else:
                _png(root / name / f"{i}.png", (10 + i, 10), value)
        (root / name / "notes.txt").write_text("not an image")
    for i in range(unlabeled):
        _png(root / "unlabeled" / f"u{i}.png", (14, 14), 200 + i)
    if bad:
        (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return root


def test_folder_index_lists_classes_and_unlabeled(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "imgs")
    index = folder.prepare_folder(
        root, tmp_path / "raw", on_bad_image="error", test_fraction=0.2, labeled_per_class=2, progress=False
    )
    assert index["class_names"] == ["cat", "dog", "fox"]
    assert [e["label"] for e in index["labeled"]] == [0] * 6 + [1] * 6 + [2] * 6
    assert len(index["unlabeled"]) == 4 and index["skipped"] == []
    written = json.loads((tmp_path / "raw" / folder.INDEX_FILE).read_text())
    assert written == index
    first = index["labeled"][0]
    assert first["file"] == "cat/0.png" and first["bytes"] == (root / "cat/0.png").stat().st_size


def test_folder_splits_add_unlabeled_folder(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "imgs")
    args = {"test_fraction": 0.2, "labeled_per_class": 2}
    folder.prepare_folder(root, tmp_path / "raw", on_bad_image="error", progress=False, **args)
    with folder.folder_splits(root, tmp_path / "raw", image_size=32, seed=0, progress=False, **args) as got:
        counts = {s: got.splits[s].count for s in base.SPLITS}
        # Per class: round(1.2) = 1 test, 2 labeled, 3 unlabeled; plus the 4 images of unlabeled/.
        assert counts == {"test": 3, "labeled": 6, "unlabeled": 9 + 4}
        unlabeled = [(np.array(x), y) for x, y in got.splits["unlabeled"].examples()]
        labeled = [(np.array(x), y) for x, y in got.splits["labeled"].examples()]
    assert all(y == -1 and x.shape == (32, 32, 3) for x, y in unlabeled)
    # Flat-coloured files stay flat: the u<i>.png files are 200 + i everywhere.
    assert sorted(int(x[0, 0, 0]) for x, _ in unlabeled[-4:]) == [200, 201, 202, 203]
    for x, y in labeled:
        assert x.min() == x.max() and y == int(x[0, 0, 0]) // 40  # value 40 * class + i, i < 6


def test_folder_bad_image_error_names_the_file(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "imgs", bad=True)
    with pytest.raises(DataError, match=r"dog/broken\.png: not a readable image.*on_bad_image: skip"):
        folder.prepare_folder(
            root,
            tmp_path / "raw",
            on_bad_image="error",
            test_fraction=0.2,
            labeled_per_class=2,
            progress=False,
        )
    assert not (tmp_path / "raw" / folder.INDEX_FILE).exists()


def test_folder_bad_image_skip_counts_it(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "imgs", bad=True)
    index = folder.prepare_folder(
        root, tmp_path / "raw", on_bad_image="skip", test_fraction=0.2, labeled_per_class=2, progress=False
    )
    assert [s["file"] for s in index["skipped"]] == ["dog/broken.png"]
    assert len(index["labeled"]) == 18


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("missing", "is not a directory"),
        ("flat", "has no class sub-folders"),
        ("empty_class", "class folder .*emu has no PNG/JPEG images"),
        ("one_class", r"has one class sub-folder \(cat\); the methods and the probe need at least 2 classes"),
    ],
)
def test_folder_layout_errors(tmp_path: Path, layout: str, message: str) -> None:
    root = tmp_path / "imgs"
    if layout == "flat":
        _png(root / "x.png", (8, 8), 1)
        _png(root / "unlabeled" / "u.png", (8, 8), 1)
    elif layout == "empty_class":
        make_folder(root)
        (root / "emu").mkdir()
    elif layout == "one_class":
        for i in range(6):
            _png(root / "cat" / f"{i}.png", (8, 8), i)
    with pytest.raises(UserError, match=message):
        folder.prepare_folder(
            root,
            tmp_path / "raw",
            on_bad_image="error",
            test_fraction=0.2,
            labeled_per_class=1,
            progress=False,
        )


def test_a_relative_folder_that_is_missing_says_where_it_was_looked_for(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as info:
        folder.scan_folder("../elsewhere/imgs")
    message = str(info.value)
    assert message.startswith("data.path: ../elsewhere/imgs is not a directory")
    assert f"read from where the stage runs ({tmp_path})" in message and "give an absolute path" in message


def test_duplicate_files_are_left_out_and_a_cross_class_copy_is_an_error(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "imgs")
    (root / "cat" / "9.png").symlink_to(root / "cat" / "2.png")  # a link within a class
    shutil.copy(root / "dog" / "3.png", root / "unlabeled" / "copy.png")  # a labeled image again, unlabeled
    index = folder.index_folder(root, on_bad_image="error", progress=False)
    assert index["duplicates"] == [
        {"file": "cat/9.png", "same_as": "cat/2.png"},
        {"file": "unlabeled/copy.png", "same_as": "dog/3.png"},
    ]
    files = [e["file"] for e in index["labeled"] + index["unlabeled"]]
    assert "cat/9.png" not in files and "unlabeled/copy.png" not in files and len(files) == 3 * 6 + 4
    assert len({e["sha256"] for e in index["labeled"] + index["unlabeled"]}) == len(files)
    shutil.copy(root / "dog" / "3.png", root / "fox" / "7.png")
    with pytest.raises(
        UserError, match=r"fox/7.png and dog/3.png are the same image in classes 'fox' and 'dog'"
    ):
        folder.index_folder(root, on_bad_image="error", progress=False)


def test_folder_changed_after_download_is_caught(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "imgs")
    args = {"test_fraction": 0.2, "labeled_per_class": 2}
    folder.prepare_folder(root, tmp_path / "raw", on_bad_image="error", progress=False, **args)
    _png(root / "unlabeled" / "u0.png", (14, 14), 7)
    # Caught while decoding, before any split is handed out.
    with pytest.raises(DataError, match=r"u0\.png: changed since the download stage"):
        with folder.folder_splits(root, tmp_path / "raw", image_size=32, seed=0, progress=False, **args):
            pytest.fail("a changed file was handed out")


def truncated_jpeg(path: Path) -> Path:
    """A JPEG cut in its scan data: its header reads, its pixels do not decode."""
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def test_truncated_jpeg_is_indexed_then_fails_to_decode(tmp_path: Path) -> None:
    from semisup.data.images import decode_image, read_header

    bad = truncated_jpeg(tmp_path / "t.jpg")
    assert read_header(bad.read_bytes()) == {"format": "JPEG", "mode": "RGB", "width": 64, "height": 64}
    with pytest.raises(OSError, match="truncated"):
        decode_image(bad.read_bytes())
    root = make_folder(tmp_path / "imgs")
    truncated_jpeg(root / "dog" / "cut.jpg")
    args = {"test_fraction": 0.2, "labeled_per_class": 2}
    index = folder.prepare_folder(root, tmp_path / "raw", on_bad_image="error", progress=False, **args)
    assert "dog/cut.jpg" in [e["file"] for e in index["labeled"]] and index["skipped"] == []
    split = {"image_size": 32, "seed": 0, "progress": False, **args}
    with pytest.raises(
        DataError, match=r"dog/cut\.jpg: not a readable image: decoding failed.*on_bad_image: skip"
    ):
        with folder.folder_splits(root, tmp_path / "raw", on_bad_image="error", **split):
            pytest.fail("a folder with an image that does not decode was handed out")
    with folder.folder_splits(root, tmp_path / "raw", on_bad_image="skip", **split) as got:
        assert got.skipped == ("dog/cut.jpg",)
        # dog keeps its 6 good images: the split is made of the images that decoded.
        assert {s: got.splits[s].count for s in base.SPLITS} == {"test": 3, "labeled": 6, "unlabeled": 13}


def test_too_few_images_after_decoding_is_one_error(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "imgs", per_class=2)
    (root / "fox" / "1.jpg").unlink()
    truncated_jpeg(root / "fox" / "cut.jpg")  # fox: 2 files listed, 1 that decodes
    args = {"test_fraction": 0.2, "labeled_per_class": 1}
    folder.prepare_folder(root, tmp_path / "raw", on_bad_image="skip", progress=False, **args)
    with pytest.raises(
        UserError,
        match="class 'fox' has 1 image: a test image and a training image need at least 2; add images",
    ):
        with folder.folder_splits(
            root, tmp_path / "raw", image_size=32, seed=0, on_bad_image="skip", progress=False, **args
        ):
            pass


def test_stl10_offline_without_archive_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Fast means: from the probe alone, before tfds downloads or prepares anything.
    import tensorflow_datasets as tfds

    monkeypatch.setattr(stl10, "host_reachable", lambda *a, **k: False)
    monkeypatch.setattr(
        tfds.core.DatasetBuilder, "download_and_prepare", lambda *a, **k: pytest.fail("tfds was reached")
    )
    with pytest.raises(UserError, match=r"manual/stl10_binary\.tar\.gz does not exist.*digits or folder"):
        stl10.prepare_stl10(
            tmp_path / "raw",
            manual_dir=tmp_path / "manual",
            download_dir=tmp_path / "dl",
            labeled_per_class=None,
        )
    assert not (tmp_path / "raw" / stl10.MARKER_FILE).exists()


def test_host_probe_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not stl10.host_reachable("host.invalid", timeout=1.0)  # .invalid never resolves (RFC 2606)
    # A connection attempt that hangs (name resolution stuck) and would succeed after 5 minutes: the probe
    # answers False without waiting for it, having passed its timeout on. (Seconds: bench/liveness.py.)
    release, seen = threading.Event(), []

    class Connection:
        def close(self) -> None:
            pass

    def stuck(address: tuple[str, int], timeout: float) -> Connection:
        seen.append((address, timeout))
        release.wait(300)
        return Connection()

    monkeypatch.setattr(stl10.socket, "create_connection", stuck)
    try:
        assert not stl10.host_reachable("example.org", port=443, timeout=0.5)
    finally:
        release.set()
    assert seen == [(("example.org", 443), 0.5)]


def test_stl10_labeled_per_class_over_500_fails_before_download(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="at most 500"):
        stl10.prepare_stl10(
            tmp_path / "raw", manual_dir=tmp_path / "m", download_dir=tmp_path / "d", labeled_per_class=501
        )


def test_stl10_with_manual_archive_prepares_and_streams(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tensorflow_datasets as tfds

    monkeypatch.setattr(stl10, "host_reachable", lambda *a, **k: pytest.fail("network probed"))
    (tmp_path / "manual").mkdir()
    (tmp_path / "manual" / stl10.ARCHIVE).write_bytes(b"stand-in")  # found by name, never read under mock
    with tfds.testing.mock_data(num_examples=6):
        marker = stl10.prepare_stl10(
            tmp_path / "raw",
            manual_dir=tmp_path / "manual",
            download_dir=tmp_path / "dl",
            labeled_per_class=None,
        )
        assert json.loads(marker.read_text())["source"] == "stl10"
        got = stl10.stl10_splits(tmp_path / "raw", image_size=48, labeled_per_class=None, seed=0)
        assert {s: got.splits[s].count for s in base.SPLITS} == {"unlabeled": 6, "labeled": 6, "test": 6}
        unlabeled = list(got.splits["unlabeled"].examples())
        labeled = list(got.splits["labeled"].examples())
    assert all(x.shape == (48, 48, 3) and y == -1 for x, y in unlabeled)
    assert all(0 <= y < 10 for _, y in labeled)
    assert len(got.class_names) == 10
