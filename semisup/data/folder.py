"""The image-folder source: `path/<class>/*.png|jpg|jpeg`, plus optional unlabeled images in `path/unlabeled/`.

Class names are the sorted sub-folder names. The download stage only indexes: it lists the files,
hashes each one and reads its header (format, mode, size; no pixel is decoded), refusing a file whose
header does not read or whose size is over `data.max_pixels`, and writes `folder_index.json` (file,
class, size, sha256 and header of each image) so DVC tracks the data. The shard stage reads exactly the
indexed files (and stops if one changed since), decodes and resizes each one exactly once into a
temporary (N, S, S, 3) uint8 file, splits the images that decoded, then writes the shards from it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from semisup.config import DataParams
from semisup.core.errors import DataError, UserError
from semisup.core.io import check_free_space, scratch_file, write_json
from semisup.data.base import SPLITS, Example, SourceSplits, SplitStream, raw_file
from semisup.data.images import DECODE_ERRORS, decode_image, read_header, resize_rgb
from semisup.data.splits import check_split, stratified_split

INDEX_FILE = "folder_index.json"
UNLABELED_DIR = "unlabeled"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def image_files(folder: Path) -> list[Path]:
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
        where = (
            ""
            if root.is_absolute()
            else f"; a relative path is read from where the stage runs ({Path.cwd()}), which under `dvc exp "
            "run --temp` or the queue is a temporary copy of the repository: give an absolute path"
        )
        raise UserError(
            f"data.path: {root} is not a directory (expected one sub-folder of images per class){where}"
        )
    class_dirs = sorted(
        d for d in root.iterdir() if d.is_dir() and d.name != UNLABELED_DIR and not d.name.startswith(".")
    )
    if not class_dirs:
        raise UserError(
            f"data.path: {root} has no class sub-folders (expected e.g. {root}/cat/1.png, {root}/dog/2.jpg)"
        )
    if len(class_dirs) == 1:  # every stage after this one would run, and the linear probe then fail
        raise UserError(
            f"data.path: {root} has one class sub-folder ({class_dirs[0].name}); the methods and the probe "
            f"need at least 2 classes: add a sub-folder per class (e.g. {root}/dog/2.jpg)"
        )
    labeled = []
    for label, folder in enumerate(class_dirs):
        files = image_files(folder)
        if not files:
            raise UserError(f"data.path: class folder {folder} has no PNG/JPEG images")
        labeled += [(f, label) for f in files]
    unlabeled_dir = root / UNLABELED_DIR
    unlabeled = image_files(unlabeled_dir) if unlabeled_dir.is_dir() else []
    return tuple(d.name for d in class_dirs), labeled, unlabeled


def _problem(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _check_image(path: Path, max_pixels: int | None = None) -> tuple[dict[str, Any], str | None]:
    """Size, sha256 and header of an image file, and why its header does not read (None when it does).

    Only the header is read: the pixels are decoded once, by the shard stage.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        return {}, exc.strerror or str(exc)
    entry: dict[str, Any] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    try:
        entry.update(read_header(data, max_pixels=max_pixels))
    except DECODE_ERRORS as exc:
        return entry, _problem(exc)
    return entry, None


def bad_image(path: Path, problem: str, *, decoding: bool = False) -> DataError:
    """The error for an image file that does not read, under `data.on_bad_image: error`: what and the fix."""
    if "data.max_pixels" in problem:
        fix = "shrink or remove it, raise data.max_pixels, or set data.on_bad_image: skip"
        return DataError(f"{path}: refused before decoding: {problem}: {fix}")
    if decoding:  # its header read in the download stage; the pixel data does not decode
        return DataError(
            f"{path}: not a readable image: decoding failed ({problem}); fix or remove it and run the "
            "download stage again (dvc repro -f download), or set data.on_bad_image: skip"
        )
    return DataError(
        f"{path}: not a readable image ({problem}); fix or remove it, or set data.on_bad_image: skip"
    )


def index_folder(
    root: str | Path, *, on_bad_image: str, progress: bool = True, max_pixels: int | None = None
) -> dict[str, Any]:
    """Hash every image and read its header; -> the index (class names, labeled and unlabeled entries,
    skipped files, the files left out for their extension, and duplicates).

    A file with the same bytes as one before it (labeled class folders first, then unlabeled/, each in
    path order) is left out and listed in `duplicates`: a copy or a link could otherwise put one image in
    both the test split and the training stream. The same image in two classes is an error."""
    root = Path(root)
    class_names, labeled, unlabeled = scan_folder(root)
    items = [(f, label) for f, label in labeled] + [(f, -1) for f in unlabeled]
    index: dict[str, Any] = {"source": "folder", "path": str(root), "class_names": list(class_names)}
    index.update(labeled=[], unlabeled=[], skipped=[], unsupported=unsupported_files(root), duplicates=[])
    first: dict[str, tuple[str, int]] = {}  # sha256 -> (file, label) of its first copy
    bar = tqdm(items, desc="indexing images", unit="img", disable=None if progress else True)
    for path, label in bar:
        entry, problem = _check_image(path, max_pixels)
        rel = path.relative_to(root).as_posix()
        if problem is not None:
            if on_bad_image == "error":
                bar.close()  # so that the error message starts on a line of its own
                raise bad_image(path, problem)
            index["skipped"].append({"file": rel, "problem": problem})
            continue
        if entry["sha256"] in first:
            kept, kept_label = first[entry["sha256"]]
            if label >= 0 and kept_label >= 0 and label != kept_label:
                bar.close()
                raise UserError(
                    f"data.path: {rel} and {kept} are the same image in classes {class_names[label]!r} and "
                    f"{class_names[kept_label]!r}: remove one of them"
                )
            index["duplicates"].append({"file": rel, "same_as": kept})
            continue
        first[entry["sha256"]] = (rel, label)
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
            f"{path} indexes {index.get('path')!r}, not data.path {str(root)!r}: run the download stage "
            "again (dvc repro download)"
        )
    return index


def _decode(root: Path, entry: dict[str, Any], image_size: int, max_pixels: int | None) -> np.ndarray | str:
    """Read one indexed image, check it is the file the download stage saw, decode and resize it.

    -> the (S, S, 3) uint8 image, or why it does not decode; DataError if it is missing or changed.
    """
    path = root / entry["file"]
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(
            f"{path}: cannot read it ({exc.strerror}); put it back, or run the download stage again "
            "(dvc repro -f download)"
        ) from None
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise DataError(f"{path}: changed since the download stage; run it again (dvc repro -f download)")
    return decode_bytes(data, image_size, max_pixels)


def decode_bytes(data: bytes, image_size: int, max_pixels: int | None) -> np.ndarray | str:
    """Image file bytes -> the (S, S, 3) uint8 image (every pixel mode, EXIF orientation, `max_pixels`
    checked from the header), or why it does not decode."""
    try:
        image = decode_image(data, max_pixels=max_pixels)
    except DECODE_ERRORS as exc:
        return _problem(exc)
    return resize_rgb(image, image_size)


def decode_file(path: Path, image_size: int, max_pixels: int | None) -> np.ndarray | str:
    """One image file, read and decoded as the shard stage does -> (S, S, 3) uint8, or why it does not read."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return exc.strerror or str(exc)
    return decode_bytes(data, image_size, max_pixels)


def decode_all(
    root: Path,
    entries: list[dict[str, Any]],
    pixels: np.ndarray,
    *,
    image_size: int,
    on_bad_image: str,
    max_pixels: int | None = None,
    progress: bool = True,
) -> list[dict[str, str]]:
    """Decode entry i into pixels[i], each file once. -> the entries that did not decode (skip mode);
    DataError naming the first one under `on_bad_image: error`."""
    skipped = []
    bar = tqdm(entries, desc="decoding images", unit="img", disable=None if progress else True)
    for i, entry in enumerate(bar):
        try:
            image = _decode(root, entry, image_size, max_pixels)
        except DataError:
            bar.close()  # so that the error message starts on a line of its own
            raise
        if isinstance(image, str):
            if on_bad_image == "error":
                bar.close()
                raise bad_image(root / entry["file"], image, decoding=True)
            skipped.append({"file": entry["file"], "problem": image})
            continue
        pixels[i] = image
    bar.close()
    return skipped


def pixels_bytes(count: int, image_size: int) -> int:
    """Bytes of the shard stage's temporary file of decoded images: count x S x S x 3."""
    return count * image_size * image_size * 3


@contextlib.contextmanager
def folder_splits(
    root: str | Path,
    raw_dir: str | Path,
    *,
    image_size: int,
    test_fraction: float,
    labeled_per_class: int | None,
    seed: int,
    on_bad_image: str = "error",
    max_pixels: int | None = None,
    scratch_dir: str | Path | None = None,
    scratch_name: str = "pixels",
    reserve_per_image: int = 0,
    progress: bool = True,
) -> Iterator[SourceSplits]:
    """The indexed folder decoded, resized and split (unlabeled/ joins the unlabeled split), while open.

    Every image is decoded once, before the split: into memory, or with `scratch_dir` into a temporary
    file `.<scratch_name>.XXXX.tmp` there (N x S x S x 3 bytes; N x `reserve_per_image` more must be
    free there for what is written next, the shards), removed on exit. Images that do not decode are
    skipped (`on_bad_image: skip`; listed in the source's `skipped`) and the split is made of those
    that did; under `error` the first one is a DataError naming it.
    """
    root = Path(root)
    index = read_index(raw_dir, root)
    entries = index["labeled"] + index["unlabeled"]
    with contextlib.ExitStack() as stack:
        where = None if scratch_dir is None else (scratch_dir, scratch_name, reserve_per_image)
        pixels = _pixel_buffer(stack, len(entries), image_size, where)
        skipped = decode_all(
            root,
            entries,
            pixels,
            image_size=image_size,
            on_bad_image=on_bad_image,
            max_pixels=max_pixels,
            progress=progress,
        )
        bad = {s["file"] for s in skipped}
        rows, extra_rows = _decoded_rows(index, bad)
        split_index = stratified_split(
            np.array([entries[row]["label"] for row in rows], dtype=np.int64),
            index["class_names"],
            test_fraction=test_fraction,
            labeled_per_class=labeled_per_class,
            seed=seed,
            extra_unlabeled=len(extra_rows),
            source="folder",
        )
        held = {"pixels": pixels}  # what the streams read while open; cleared on exit, unmapping the file
        del pixels
        chosen = {split: [rows[i] for i in split_index[split]] for split in SPLITS}
        chosen["unlabeled"] += extra_rows
        splits = {
            split: _stream(held, entries, picked, split != "unlabeled") for split, picked in chosen.items()
        }
        try:
            yield SourceSplits("folder", tuple(index["class_names"]), splits, tuple(sorted(bad)))
        finally:
            held.clear()


def _pixel_buffer(
    stack: contextlib.ExitStack, count: int, image_size: int, scratch: tuple[str | Path, str, int] | None
) -> np.ndarray:
    """Room for `count` decoded images (count, S, S, 3) uint8: in memory, or with `scratch` (folder, name,
    bytes reserved per image for what is written next) a temporary file there, removed when `stack` closes."""
    shape = (count, image_size, image_size, 3)
    if scratch is None:
        return np.zeros(shape, np.uint8)
    scratch_dir, scratch_name, reserve_per_image = scratch
    nbytes = pixels_bytes(count, image_size)
    check_free_space(scratch_dir, nbytes + count * reserve_per_image, "the decoded images plus the shards")
    path = stack.enter_context(scratch_file(scratch_dir, scratch_name, nbytes, "the decoded images"))
    return np.memmap(path, np.uint8, "r+", shape=shape) if nbytes else np.zeros(shape, np.uint8)


def _decoded_rows(index: dict, bad: set[str]) -> tuple[list[int], list[int]]:
    """Rows (positions in labeled + unlabeled entries) of the images that decoded: (labeled, unlabeled/)."""
    labeled, extra = index["labeled"], index["unlabeled"]
    rows = [i for i, e in enumerate(labeled) if e["file"] not in bad]
    extra_rows = [len(labeled) + j for j, e in enumerate(extra) if e["file"] not in bad]
    return rows, extra_rows


def _stream(held: dict, entries: list[dict], chosen: list[int], keep_labels: bool) -> SplitStream:
    """The examples of the `chosen` rows of held["pixels"], with their labels or -1 (the unlabeled split)."""

    def examples() -> Iterator[Example]:
        for row in chosen:
            label = entries[row]["label"] if keep_labels else -1
            yield held["pixels"][row], label

    return SplitStream(len(chosen), examples)


def prepare(data: DataParams, raw_dir: str | Path, *, progress: bool = True, **_: object) -> str:
    """The download stage: index (hash and header of) every image of data.path into raw_dir, checking
    what can be checked without decoding. -> its one-line summary."""
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
def open_splits(
    data: DataParams,
    raw_dir: str | Path,
    *,
    seed: int,
    scratch_dir: str | Path | None = None,
    scratch_name: str = "pixels",
    reserve_per_image: int = 0,
    progress: bool = True,
) -> Iterator[SourceSplits]:
    """The shard stage's input: the folder's images, decoded once into a scratch file while open."""
    with folder_splits(
        data.path,
        raw_dir,
        image_size=data.image_size,
        labeled_per_class=data.labeled_per_class,
        seed=seed,
        test_fraction=data.test_fraction,
        on_bad_image=data.on_bad_image,
        max_pixels=data.max_pixels,
        scratch_dir=scratch_dir,
        scratch_name=scratch_name,
        reserve_per_image=reserve_per_image,
        progress=progress,
    ) as source:
        yield source
