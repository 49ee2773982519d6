"""digits: scikit-learn's bundled 1,797 8x8 handwritten digits (Alpaydin & Kaynak, 1998); no network.

The download stage writes them to data/raw/digits.npz; the shard stage splits them (stratified, seeded)
and resizes them. The source interface: `prepare` and `open_splits` (see semisup.data.sources).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from semisup.config import DataParams
from semisup.data.base import SPLITS, Example, SourceSplits, SplitStream, raw_file, save_npz
from semisup.data.images import resize_rgb
from semisup.data.splits import check_split, stratified_split

DIGITS_FILE = "digits.npz"


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """scikit-learn's digits as uint8 (1797, 8, 8) images in 0..255, int64 labels and class names."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)  # the set's pixels run 0..16
    names = tuple(str(n) for n in digits.target_names)
    return images, digits.target.astype(np.int64), names


def prepare_digits(raw_dir: str | Path, *, test_fraction: float, labeled_per_class: int | None) -> Path:
    """Check the split params against the digits, then write raw_dir/digits.npz. -> its path."""
    images, labels, names = load_digits_arrays()
    check_split(
        labels, names, test_fraction=test_fraction, labeled_per_class=labeled_per_class, source="digits"
    )
    path = Path(raw_dir) / DIGITS_FILE
    save_npz(path, images=images, labels=labels, class_names=np.array(names))
    return path


def digits_splits(
    raw_dir: str | Path, *, image_size: int, test_fraction: float, labeled_per_class: int | None, seed: int
) -> SourceSplits:
    """The digits written by the download stage, split and resized to (image_size, image_size, 3)."""
    with np.load(raw_file(raw_dir, DIGITS_FILE), allow_pickle=False) as npz:
        images, labels, names = npz["images"], npz["labels"], tuple(str(n) for n in npz["class_names"])
    index = stratified_split(
        labels,
        names,
        test_fraction=test_fraction,
        labeled_per_class=labeled_per_class,
        seed=seed,
        source="digits",
    )

    def stream(idx: np.ndarray, keep_labels: bool) -> SplitStream:
        def examples() -> Iterator[Example]:
            for i in idx:
                yield resize_rgb(images[i], image_size), int(labels[i]) if keep_labels else -1

        return SplitStream(len(idx), examples)

    splits = {split: stream(index[split], keep_labels=split != "unlabeled") for split in SPLITS}
    return SourceSplits("digits", names, splits)


def prepare(data: DataParams, raw_dir: str | Path, **_: object) -> str:
    """The download stage: write the digits to raw_dir. -> its one-line summary."""
    path = prepare_digits(raw_dir, test_fraction=data.test_fraction, labeled_per_class=data.labeled_per_class)
    return f"digits: scikit-learn's 8x8 handwritten digits -> {path}"


@contextlib.contextmanager
def open_splits(data: DataParams, raw_dir: str | Path, *, seed: int, **_: object) -> Iterator[SourceSplits]:
    """The shard stage's input: the split streams of the digits in raw_dir."""
    yield digits_splits(
        raw_dir,
        image_size=data.image_size,
        test_fraction=data.test_fraction,
        labeled_per_class=data.labeled_per_class,
        seed=seed,
    )
