"""Classify new images with a trained run: its encoder embeds them, its labeled bank votes (weighted kNN).

The images are decoded as the folder source decodes them (every pixel mode, EXIF orientation, a size
limit read from the header, the same resize), a chunk at a time on a pool of threads while the encoder
works on the chunk before, so memory stays bounded by a few chunks whatever the folder holds.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from semisup.data.folder import bad_image, decode_file

Decoded = list[tuple[Path, "np.ndarray | str"]]  # each file with its (S, S, 3) uint8 image or its problem


@dataclass
class Predictions:
    """What `predict_folder` found: per kept file its class id and vote share, and the skipped files."""

    files: list[Path] = field(default_factory=list)
    classes: list[np.ndarray] = field(default_factory=list)  # (B,) int64 per chunk
    shares: list[np.ndarray] = field(default_factory=list)  # (B,) float32 per chunk
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def decoded_chunks(
    paths: Sequence[Path], chunk: int, decode: Callable[[Path], np.ndarray | str], workers: int
) -> Iterator[Decoded]:
    """paths decoded `chunk` at a time, in order, by `workers` threads; the next chunk decodes meanwhile."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: list[tuple[Path, Future]] | None = None
        for start in range(0, len(paths), chunk):
            submitted = [(p, pool.submit(decode, p)) for p in paths[start : start + chunk]]
            if pending is not None:
                yield [(p, f.result()) for p, f in pending]
            pending = submitted
        if pending is not None:
            yield [(p, f.result()) for p, f in pending]


def predict_folder(
    paths: Sequence[Path],
    *,
    embed: Callable[[np.ndarray], np.ndarray],
    vote: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    image_size: int,
    max_pixels: int | None,
    on_bad_image: str,
    chunk: int,
    workers: int | None = None,
) -> Predictions:
    """Decode, embed (images (B, S, S, 3) uint8 -> (B, D)) and vote ((B, D) -> classes, shares) every file.

    An unreadable file stops everything with its path under on_bad_image "error"; "skip" lists it.
    """
    out = Predictions()
    workers = workers or min(8, os.cpu_count() or 1)
    decode = lambda path: decode_file(path, image_size, max_pixels)  # noqa: E731
    for decoded in decoded_chunks(paths, chunk, decode, workers):
        kept = [(p, image) for p, image in decoded if not isinstance(image, str)]
        for path, problem in ((p, image) for p, image in decoded if isinstance(image, str)):
            if on_bad_image == "error":
                raise bad_image(path, problem)
            out.skipped.append((path, problem))
        if not kept:
            continue
        classes, shares = vote(embed(np.stack([image for _, image in kept])))
        out.files += [p for p, _ in kept]
        out.classes.append(classes)
        out.shares.append(shares)
    return out


def write_predictions(path: Path, root: Path, found: Predictions, class_names: Sequence[str]) -> None:
    """A CSV of file (relative to root), predicted class name and confidence (the vote's share)."""
    classes = np.concatenate(found.classes) if found.classes else np.zeros(0, np.int64)
    shares = np.concatenate(found.shares) if found.shares else np.zeros(0, np.float32)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "predicted", "confidence"])
        for file, c, share in zip(found.files, classes, shares, strict=True):
            writer.writerow([file.relative_to(root).as_posix(), class_names[c], f"{share:.4f}"])
