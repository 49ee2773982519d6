"""Image sources: what the download stage writes to data/raw, and the split streams the shard stage reads.

- `stl10` (Coates et al., 2011) through tensorflow-datasets: its own unlabelled/train/test splits.
- `digits`: scikit-learn's bundled 1,797 8x8 handwritten digits (Alpaydin & Kaynak, 1998); no network.
- `folder`: the user's images, one sub-folder per class plus an optional `unlabeled/` folder.

Splits. STL10 keeps its splits: unlabelled -> unlabeled, train -> labeled, test -> test. Sources
without a test split get a stratified, seeded split: round(test_fraction x n) images of each class
(at least one) are the test split, `labeled_per_class` of the rest the labeled split, and every
remaining training image joins the unlabeled split without its label (-1), as do the images of
`unlabeled/`. When `labeled_per_class` subsamples STL10's train split, the images left out join the
unlabeled split in the same way. `labeled_per_class: null` labels every training image; when that
leaves the unlabeled split empty (digits; a folder without `unlabeled/`) the stages stop with an
error asking for a `labeled_per_class`, because an epoch is one pass over the unlabeled split.
"""

from __future__ import annotations

import contextlib
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from semisup.config import DataParams
from semisup.data.images import resize_rgb
from semisup.data.splits import check_split, stratified_split
from semisup.errors import DataError
from semisup.io import atomic_path

SPLITS = ("unlabeled", "labeled", "test")
DIGITS_FILE = "digits.npz"

Example = tuple[np.ndarray, int]  # (image (S, S, 3) uint8, label; -1 when unlabeled)


@dataclass(frozen=True)
class SplitStream:
    """One split: how many examples it has, and a function that yields them in a fixed order."""

    count: int
    examples: Callable[[], Iterator[Example]]


@dataclass(frozen=True)
class SourceSplits:
    """A source ready to shard: its class names, the stream of each split in SPLITS, and the files
    left out because they did not decode (`data.on_bad_image: skip`)."""

    source: str
    class_names: tuple[str, ...]
    splits: dict[str, SplitStream]
    skipped: tuple[str, ...] = ()


def save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """np.savez, atomically and byte-for-byte reproducible (fixed zip timestamps)."""
    with atomic_path(path, suffix=".npz") as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            for name, array in arrays.items():
                info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                with zf.open(info, "w") as f:
                    np.lib.format.write_array(f, np.asarray(array), allow_pickle=False)


def raw_file(raw_dir: str | Path, name: str) -> Path:
    """raw_dir/name, or a DataError asking to run the download stage."""
    path = Path(raw_dir) / name
    if not path.exists():
        raise DataError(f"{path} not found: run the download stage first (dvc repro download)")
    return path


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


def prepare_raw(
    data: DataParams,
    *,
    raw_dir: str | Path,
    manual_dir: str | Path,
    download_dir: str | Path,
    progress: bool = True,
) -> str:
    """The download stage: fetch or check `data.source` into raw_dir. -> a one-line summary."""
    if data.source == "stl10":
        from semisup.data.stl10 import prepare_stl10

        marker = prepare_stl10(
            raw_dir,
            manual_dir=manual_dir,
            download_dir=download_dir,
            labeled_per_class=data.labeled_per_class,
        )
        return f"stl10: prepared by tensorflow-datasets in {raw_dir} ({marker.name})"
    if data.source == "digits":
        path = prepare_digits(
            raw_dir, test_fraction=data.test_fraction, labeled_per_class=data.labeled_per_class
        )
        return f"digits: scikit-learn's 8x8 handwritten digits -> {path}"
    from semisup.data.folder import INDEX_FILE, prepare_folder

    index = prepare_folder(
        data.path,
        raw_dir,
        on_bad_image=data.on_bad_image,
        test_fraction=data.test_fraction,
        labeled_per_class=data.labeled_per_class,
        progress=progress,
        max_pixels=data.max_pixels,
    )
    skipped = f", {len(index['skipped'])} unreadable skipped" if index["skipped"] else ""
    if index.get("duplicates"):
        n = len(index["duplicates"])
        skipped += f", {n} duplicate{'' if n == 1 else 's'} of another file left out"
    if n := len(index["unsupported"]):
        suffixes = sorted({Path(f).suffix.lower() or "(none)" for f in index["unsupported"]})
        one = n == 1
        skipped += (
            f", {n} file{'' if one else 's'} not read for {'its' if one else 'their'} extension "
            f"({', '.join(suffixes)}; PNG and JPEG are read)"
        )
    return (
        f"folder: {len(index['labeled'])} labeled images in {len(index['class_names'])} classes, "
        f"{len(index['unlabeled'])} unlabeled{skipped} -> {Path(raw_dir) / INDEX_FILE}"
    )


@contextlib.contextmanager
def open_source(
    data: DataParams,
    *,
    seed: int,
    raw_dir: str | Path,
    scratch_dir: str | Path | None = None,
    scratch_name: str = "pixels",
    reserve_per_image: int = 0,
    progress: bool = True,
) -> Iterator[SourceSplits]:
    """The shard stage's input, while open: the split streams of `data.source`, read from raw_dir.

    A folder is decoded here, once, before anything is yielded: into a temporary file in `scratch_dir`
    (see `folder.folder_splits`), removed on exit.
    """
    split_args = {"image_size": data.image_size, "labeled_per_class": data.labeled_per_class, "seed": seed}
    if data.source == "stl10":
        from semisup.data.stl10 import stl10_splits

        yield stl10_splits(raw_dir, **split_args)
    elif data.source == "digits":
        yield digits_splits(raw_dir, test_fraction=data.test_fraction, **split_args)
    else:
        from semisup.data.folder import folder_splits

        with folder_splits(
            data.path,
            raw_dir,
            test_fraction=data.test_fraction,
            on_bad_image=data.on_bad_image,
            max_pixels=data.max_pixels,
            scratch_dir=scratch_dir,
            scratch_name=scratch_name,
            reserve_per_image=reserve_per_image,
            progress=progress,
            **split_args,
        ) as source:
            yield source
