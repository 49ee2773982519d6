"""STL-10 (Coates, Lee & Ng, 2011) through tensorflow-datasets, prepared in data/raw rather than ~/tensorflow_datasets.

Offline machines put `stl10_binary.tar.gz` in the manual directory; tfds takes it from there by name.
Without the archive and without network the download stops within seconds instead of retrying.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from semisup.config import DataParams
from semisup.core.errors import UserError
from semisup.core.io import write_json
from semisup.data.base import Example, SourceSplits, SplitStream, raw_file
from semisup.data.images import resize_rgb
from semisup.data.splits import check_labeled_per_class, class_counts, subsample_per_class

NAME = "stl10"
MARKER_FILE = "stl10.json"
URL = "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz"
ARCHIVE = "stl10_binary.tar.gz"
SHA256 = "f31fd99273a1acb8609c8db427cebb1de3f71de77758cdc0e22956e1289b9866"  # tfds' checksums.tsv
HOST = "ai.stanford.edu"
TRAIN_PER_CLASS = 500
CLASS_NAMES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")
TFDS_SPLITS = {"unlabeled": "unlabelled", "labeled": "train", "test": "test"}


def host_reachable(host: str, port: int = 80, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to host:port opens within about `timeout` seconds (DNS included)."""
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    # A daemon thread bounds the wait even when name resolution itself hangs.
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    return bool(result and result[0])


def _archive_cached(download_dir: Path) -> bool:
    """Whether tfds already holds the downloaded archive in `download_dir` (a rerun needs no network)."""
    try:
        from tensorflow_datasets.core.download import resource
    except ImportError:
        return False
    path = download_dir / resource.get_dl_fname(URL, SHA256)
    return path.exists() and Path(resource.get_info_path(path)).exists()


@contextlib.contextmanager
def _quiet_tfds() -> Iterator[None]:
    """Silence tfds' absl warnings such as "Variant folder ... has no dataset_info.json" (expected before prepare)."""
    from absl import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)


def _provide_importlib_resources() -> None:
    """Let tfds find `importlib_resources` when it is not installed.

    tfds 4.9.10 imports it in download_and_prepare but declares it only for Python < 3.9
    (tensorflow/datasets#11212); the standard library's importlib.resources has what it uses.
    """
    try:
        import importlib_resources  # noqa: F401
    except ImportError:
        import importlib.resources
        import importlib.resources.abc

        sys.modules["importlib_resources"] = importlib.resources
        sys.modules["importlib_resources.abc"] = importlib.resources.abc


def _builder(raw_dir: str | Path) -> Any:
    """The tfds STL10 builder reading and writing under raw_dir."""
    _provide_importlib_resources()
    import tensorflow_datasets as tfds

    with _quiet_tfds():
        return tfds.builder(NAME, data_dir=str(raw_dir))


def prepare_stl10(
    raw_dir: str | Path,
    *,
    manual_dir: str | Path,
    download_dir: str | Path,
    labeled_per_class: int | None,
    probe_timeout: float = 3.0,
) -> Path:
    """Prepare STL10 with tfds under raw_dir (archive from manual_dir, else the network). -> marker path."""
    check_labeled_per_class(
        np.full(len(CLASS_NAMES), TRAIN_PER_CLASS), CLASS_NAMES, labeled_per_class, where="in its train split"
    )
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError

    manual_dir, download_dir = Path(manual_dir), Path(download_dir)
    builder = _builder(raw_dir)
    with _quiet_tfds():
        prepared = builder.is_prepared()
    if not prepared:
        if not (
            (manual_dir / ARCHIVE).exists()
            or _archive_cached(download_dir)
            or host_reachable(HOST, timeout=probe_timeout)
        ):
            raise UserError(
                f"stl10: cannot reach {HOST} and {manual_dir / ARCHIVE} does not exist: download {URL} "
                f"into {manual_dir}/ (or use data.source: digits or folder, which work offline)"
            )
        config = tfds.download.DownloadConfig(manual_dir=str(manual_dir), try_download_gcs=False)
        try:
            builder.download_and_prepare(download_dir=str(download_dir), download_config=config)
        except NonMatchingChecksumError:
            where = manual_dir / ARCHIVE if (manual_dir / ARCHIVE).exists() else download_dir
            raise UserError(
                f"stl10: the archive's sha256 is not {SHA256} (a truncated or different download): "
                f"delete {where} and download it again"
            ) from None
    marker = Path(raw_dir) / MARKER_FILE
    splits = {name: int(info.num_examples) for name, info in sorted(builder.info.splits.items())}
    write_json(marker, {"source": NAME, "version": str(builder.version), "splits": splits})
    return marker


def _split_count(builder: Any, split: str) -> int:
    """Examples in a tfds split: from the dataset info, else by counting (mocked test builders)."""
    if split in builder.info.splits:
        return int(builder.info.splits[split].num_examples)
    return sum(1 for _ in _tfds_examples(builder, split, skip_images=True))


def _tfds_examples(builder: Any, split: str, *, skip_images: bool = False) -> Iterator[dict[str, Any]]:
    """The examples of a tfds split as numpy dicts, in file order."""
    import tensorflow_datasets as tfds

    decoders = {"image": tfds.decode.SkipDecoding()} if skip_images else None
    ds = builder.as_dataset(split=split, shuffle_files=False, decoders=decoders)
    return iter(tfds.as_numpy(ds.prefetch(64)))


def stl10_splits(
    raw_dir: str | Path, *, image_size: int, labeled_per_class: int | None, seed: int
) -> SourceSplits:
    """STL10's splits as streams; with labeled_per_class, train images left out join the unlabeled split."""
    raw_file(raw_dir, MARKER_FILE)
    builder = _builder(raw_dir)
    class_names = tuple(builder.info.features["label"].names)
    train_labels = np.array(
        [int(ex["label"]) for ex in _tfds_examples(builder, "train", skip_images=True)], dtype=np.int64
    )
    check_labeled_per_class(
        class_counts(train_labels, len(class_names)),
        class_names,
        labeled_per_class,
        where="in its train split",
    )
    chosen, _ = subsample_per_class(
        train_labels, len(class_names), labeled_per_class, np.random.default_rng(seed)
    )
    is_labeled = np.zeros(len(train_labels), dtype=bool)
    is_labeled[chosen] = True

    def read(split: str, keep: np.ndarray | None, keep_labels: bool) -> Iterator[Example]:
        for i, ex in enumerate(_tfds_examples(builder, split)):
            if keep is None or keep[i]:
                yield resize_rgb(ex["image"], image_size), int(ex["label"]) if keep_labels else -1

    def unlabeled() -> Iterator[Example]:
        yield from read("unlabelled", None, keep_labels=False)
        if not is_labeled.all():
            yield from read("train", ~is_labeled, keep_labels=False)

    splits = {
        "unlabeled": SplitStream(_split_count(builder, "unlabelled") + int((~is_labeled).sum()), unlabeled),
        "labeled": SplitStream(int(is_labeled.sum()), lambda: read("train", is_labeled, keep_labels=True)),
        "test": SplitStream(_split_count(builder, "test"), lambda: read("test", None, keep_labels=True)),
    }
    return SourceSplits(NAME, class_names, splits)


def read_marker(raw_dir: str | Path) -> dict[str, Any]:
    """What the download stage recorded about the prepared STL10."""
    return json.loads(raw_file(raw_dir, MARKER_FILE).read_text())


def prepare(
    data: DataParams, raw_dir: str | Path, *, manual_dir: str | Path, download_dir: str | Path, **_: object
) -> str:
    """The download stage: STL10 prepared by tensorflow-datasets in raw_dir. -> its one-line summary."""
    marker = prepare_stl10(
        raw_dir, manual_dir=manual_dir, download_dir=download_dir, labeled_per_class=data.labeled_per_class
    )
    return f"stl10: prepared by tensorflow-datasets in {raw_dir} ({marker.name})"


@contextlib.contextmanager
def open_splits(data: DataParams, raw_dir: str | Path, *, seed: int, **_: object) -> Iterator[SourceSplits]:
    """The shard stage's input: STL10's own splits, resized, read from raw_dir."""
    yield stl10_splits(
        raw_dir, image_size=data.image_size, labeled_per_class=data.labeled_per_class, seed=seed
    )
