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
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from semisup.config import DataParams
from semisup.data import digits, folder, stl10
from semisup.data.base import SourceSplits

# Every source has the same interface: prepare(data, raw_dir, *, manual_dir, download_dir, progress) -> the
# download stage's one-line summary, and open_splits(data, raw_dir, *, seed, scratch_dir, scratch_name,
# reserve_per_image, progress), a context of its SourceSplits for the shard stage.
SOURCES: dict[str, ModuleType] = {"stl10": stl10, "digits": digits, "folder": folder}


def prepare_raw(
    data: DataParams,
    *,
    raw_dir: str | Path,
    manual_dir: str | Path,
    download_dir: str | Path,
    progress: bool = True,
) -> str:
    """The download stage: fetch or check `data.source` into raw_dir. -> a one-line summary."""
    return SOURCES[data.source].prepare(
        data, raw_dir, manual_dir=manual_dir, download_dir=download_dir, progress=progress
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
    with SOURCES[data.source].open_splits(
        data,
        raw_dir,
        seed=seed,
        scratch_dir=scratch_dir,
        scratch_name=scratch_name,
        reserve_per_image=reserve_per_image,
        progress=progress,
    ) as source:
        yield source
