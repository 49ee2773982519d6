"""The image-folder source: `path/<class>/*.png|jpg|jpeg`, plus optional unlabeled images in `path/unlabeled/`.

Class names are the sorted sub-folder names. The download stage decodes every file once and writes
`folder_index.json` (file, class, size and sha256 of each image) so DVC tracks the data; the shard
stage reads exactly the indexed files and stops if one changed since.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from semisup.data.images import DECODE_ERRORS, decode_image, resize_rgb
from semisup.data.sources import SPLITS, Example, SourceSplits, SplitStream, raw_file
from semisup.data.splits import check_split, stratified_split
from semisup.errors import DataError, UserError
from semisup.io import write_json

INDEX_FILE = "folder_index.json"
UNLABELED_DIR = "unlabeled"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _images_under(folder: Path) -> list[Path]:
    """Image files under `folder` (recursively, hidden files skipped), in sorted order."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def unsupported_files(root: str | Path) -> list[str]:
    """Files under root (hidden ones aside) whose extension is not a readable image's, relative, sorted."""
    root = Path(root)
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() not in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def scan_folder(root: str | Path) -> tuple[tuple[str, ...], list[tuple[Path, int]], list[Path]]:
    """-> (class names, [(file, class id)], unlabeled files); UserError on a missing or empty layout."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"data.path: {root} is not a directory (expected one sub-folder of images per class)")
    class_dirs = sorted(
        d for d in root.iterdir() if d.is_dir() and d.name != UNLABELED_DIR and not d.name.startswith(".")
    )
    if not class_dirs:
        raise UserError(
            f"data.path: {root} has no class sub-folders (expected e.g. {root}/cat/1.png, {root}/dog/2.jpg)"
        )
    labeled = []
    for label, folder in enumerate(class_dirs):
        files = _images_under(folder)
        if not files:
            raise UserError(f"data.path: class folder {folder} has no PNG/JPEG images")
        labeled += [(f, label) for f in files]
    unlabeled_dir = root / UNLABELED_DIR
    unlabeled = _images_under(unlabeled_dir) if unlabeled_dir.is_dir() else []
    return tuple(d.name for d in class_dirs), labeled, unlabeled


def _check_image(path: Path, max_pixels: int | None = None) -> tuple[dict[str, Any], str | None]:
    """Size and sha256 of an image file, and why it cannot be decoded (None when it can)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return {}, exc.strerror or str(exc)
    entry = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    try:
        decode_image(data, max_pixels=max_pixels)
    except DECODE_ERRORS as exc:
        return entry, str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return entry, None


def _bad_image(path: Path, problem: str) -> DataError:
    if "data.max_pixels" in problem:
        fix = "shrink or remove it, raise data.max_pixels, or set data.on_bad_image: skip"
        return DataError(f"{path}: refused before decoding: {problem}: {fix}")
    return DataError(
        f"{path}: not a readable image ({problem}); fix or remove it, or set data.on_bad_image: skip"
    )


def index_folder(
    root: str | Path, *, on_bad_image: str, progress: bool = True, max_pixels: int | None = None
) -> dict[str, Any]:
    """Decode every image once; -> the index (class names, labeled and unlabeled entries, skipped files,
    and the files left out for their extension)."""
    root = Path(root)
    class_names, labeled, unlabeled = scan_folder(root)
    items = [(f, label) for f, label in labeled] + [(f, -1) for f in unlabeled]
    index: dict[str, Any] = {"source": "folder", "path": str(root), "class_names": list(class_names)}
    index.update(labeled=[], unlabeled=[], skipped=[], unsupported=unsupported_files(root))
    bar = tqdm(items, desc="checking images", unit="img", disable=None if progress else True)
    for path, label in bar:
        entry, problem = _check_image(path, max_pixels)
        rel = path.relative_to(root).as_posix()
        if problem is not None:
            if on_bad_image == "error":
                bar.close()  # so that the error message starts on a line of its own
                raise _bad_image(path, problem)
            index["skipped"].append({"file": rel, "problem": problem})
            continue
        if label < 0:
            index["unlabeled"].append({"file": rel, **entry})
        else:
            index["labeled"].append({"file": rel, "label": label, **entry})
    return index


def _labels(index: dict[str, Any]) -> np.ndarray:
    return np.array([e["label"] for e in index["labeled"]], dtype=np.int64)


def prepare_folder(
    root: str | Path,
    raw_dir: str | Path,
    *,
    on_bad_image: str,
    test_fraction: float,
    labeled_per_class: int | None,
    progress: bool = True,
    max_pixels: int | None = None,
) -> dict[str, Any]:
    """Validate the folder and the split params, then write raw_dir/folder_index.json. -> the index."""
    # Check the split on the file listing first (instant), then again once unreadable files are skipped.
    class_names, labeled, unlabeled = scan_folder(root)
    labels = np.array([label for _, label in labeled], dtype=np.int64)
    split_args = {"test_fraction": test_fraction, "labeled_per_class": labeled_per_class, "source": "folder"}
    check_split(labels, class_names, extra_unlabeled=len(unlabeled), **split_args)
    index = index_folder(root, on_bad_image=on_bad_image, progress=progress, max_pixels=max_pixels)
    check_split(_labels(index), class_names, extra_unlabeled=len(index["unlabeled"]), **split_args)
    write_json(Path(raw_dir) / INDEX_FILE, index)
    return index


def read_index(raw_dir: str | Path, root: str | Path) -> dict[str, Any]:
    """The index written by the download stage for folder `root`; DataError if it is for another folder."""
    path = raw_file(raw_dir, INDEX_FILE)
    index = json.loads(path.read_text())
    if index.get("path") != str(Path(root)):
        raise DataError(
            f"{path} indexes {index.get('path')!r}, not data.path {str(root)!r}: run the download stage again"
        )
    return index


def _load(root: Path, entry: dict[str, Any], image_size: int, max_pixels: int | None) -> np.ndarray:
    """Read one indexed image, check it is the file the download stage saw, decode and resize it."""
    path = root / entry["file"]
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror}); run the download stage again") from None
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise DataError(f"{path}: changed since the download stage; run it again (dvc repro -f download)")
    try:
        image = decode_image(data, max_pixels=max_pixels)
    except DECODE_ERRORS as exc:
        raise _bad_image(path, str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    return resize_rgb(image, image_size)


def folder_splits(
    root: str | Path,
    raw_dir: str | Path,
    *,
    image_size: int,
    test_fraction: float,
    labeled_per_class: int | None,
    seed: int,
    max_pixels: int | None = None,
) -> SourceSplits:
    """The indexed folder, split (unlabeled/ joins the unlabeled split) and resized."""
    root = Path(root)
    index = read_index(raw_dir, root)
    labeled, extra = index["labeled"], index["unlabeled"]
    split_index = stratified_split(
        _labels(index),
        index["class_names"],
        test_fraction=test_fraction,
        labeled_per_class=labeled_per_class,
        seed=seed,
        extra_unlabeled=len(extra),
        source="folder",
    )

    def stream(entries: list[dict[str, Any]], keep_labels: bool) -> SplitStream:
        def examples() -> Iterator[Example]:
            for e in entries:
                yield _load(root, e, image_size, max_pixels), e["label"] if keep_labels else -1

        return SplitStream(len(entries), examples)

    splits = {s: stream([labeled[i] for i in split_index[s]], s != "unlabeled") for s in SPLITS}
    splits["unlabeled"] = stream([labeled[i] for i in split_index["unlabeled"]] + extra, False)
    return SourceSplits("folder", tuple(index["class_names"]), splits)
