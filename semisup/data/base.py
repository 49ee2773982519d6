"""What every image source shares: the split names, the split streams the shard stage reads, and the
raw files the download stage writes (see semisup.data.sources for the sources and their splits)."""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from semisup.core.errors import DataError
from semisup.core.io import atomic_path

SPLITS = ("unlabeled", "labeled", "test")

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
