"""TFRecord shards of raw uint8 images plus manifest.json, written deterministically and atomically.

Each record is a tf.train.Example with `image` (the H*W*3 uint8 bytes, HWC order) and `label`
(int64, -1 in the unlabeled split). Record i of a split goes to shard i mod n, so every shard holds
an even mix of the split. Same inputs and seed -> byte-identical shards and manifest (no timestamps).
"""

from __future__ import annotations

import hashlib
import math
import os
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from semisup.core.errors import DataError
from semisup.core.io import output_set, write_json
from semisup.data.base import SPLITS, SourceSplits

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
MIN_RECORDS_PER_SHARD = 256  # small splits get fewer shards: many tiny files only slow DVC down


def shard_name(split: str, index: int, total: int) -> str:
    """e.g. unlabeled-00003-of-00016.tfrecord"""
    return f"{split}-{index:05d}-of-{total:05d}.tfrecord"


def shards_for(count: int, num_shards: int) -> int:
    """Shards of a split of `count` records: at most num_shards, ~MIN_RECORDS_PER_SHARD each; 0 when empty."""
    if count == 0:
        return 0
    return max(1, min(num_shards, math.ceil(count / MIN_RECORDS_PER_SHARD)))


def serialize_example(image: np.ndarray, label: int) -> bytes:
    """(H, W, 3) uint8 image and its label -> a serialized tf.train.Example, deterministic bytes."""
    import tensorflow as tf

    feature = {
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image.tobytes()])),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
    }
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString(deterministic=True)  # map fields in sorted key order


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def count_records(path: str | Path) -> int:
    """Records in a TFRecord file, by walking its length headers; ValueError if it is cut short."""
    size = os.path.getsize(path)
    count, offset = 0, 0
    with open(path, "rb") as f:
        while offset < size:
            header = f.read(12)  # uint64 length + uint32 masked crc of the length
            if len(header) < 12:
                raise ValueError(f"a record header is cut short at byte {offset}")
            (length,) = struct.unpack("<Q", header[:8])
            offset += 12 + length + 4  # payload + uint32 masked crc of the payload
            if offset > size:
                raise ValueError(f"record {count} runs past the end of the file ({offset} > {size} bytes)")
            f.seek(offset)
            count += 1
    return count


def record_bytes(image_size: int) -> int:
    """About how many bytes one image takes in a shard: its pixels plus ~40 bytes of framing."""
    return image_size * image_size * 3 + 40


def shard_bytes(source: SourceSplits, image_size: int) -> int:
    """About how many bytes write_shards writes for `source`: record_bytes per image, and a manifest."""
    images = sum(stream.count for stream in source.splits.values())
    return images * record_bytes(image_size) + 2**20


def _quiet(progress: bool) -> bool | None:
    """tqdm's `disable`: off when asked, and when stderr is not a terminal (None)."""
    return None if progress else True


def _check_example(
    image: np.ndarray, label: int, shape: tuple[int, ...], split: str, num_classes: int
) -> None:
    if image.shape != shape or image.dtype != np.uint8:
        raise ValueError(f"{split}: got an image {image.shape} {image.dtype}, expected {shape} uint8")
    if (label != -1) if split == "unlabeled" else not 0 <= label < num_classes:
        raise ValueError(f"{split}: label {label} out of range for {num_classes} classes")


def _write_split(
    tmp: Path, split: str, source: SourceSplits, shape: tuple[int, ...], num_shards: int, progress: bool
) -> tuple[list[dict[str, Any]], list[int]]:
    """Write one split's shards into `tmp`. -> (shard entries without hashes, per-class label counts)."""
    import tensorflow as tf

    stream = source.splits[split]
    total = shards_for(stream.count, num_shards)
    names = [shard_name(split, i, total) for i in range(total)]
    records = [0] * total
    class_counts = [0] * len(source.class_names)
    writers = [tf.io.TFRecordWriter(str(tmp / name)) for name in names]
    bar = tqdm(
        total=stream.count, desc=f"{split} shards", unit="img", file=sys.stderr, disable=_quiet(progress)
    )
    try:
        for i, (image, label) in enumerate(stream.examples()):
            if i >= stream.count:
                raise DataError(f"{source.source}: the {split} split yields more than {stream.count} images")
            _check_example(image, label, shape, split, len(source.class_names))
            writers[i % total].write(serialize_example(image, label))
            records[i % total] += 1
            if label >= 0:
                class_counts[label] += 1
            bar.update()
    finally:
        bar.close()  # before any error message, so that it starts on a line of its own
        for writer in writers:
            writer.close()
    if sum(records) != stream.count:
        raise DataError(
            f"{source.source}: the {split} split yielded {sum(records)} images, expected {stream.count}"
        )
    return [
        {"file": n, "split": split, "records": r} for n, r in zip(names, records, strict=True)
    ], class_counts


def write_shards(
    out_dir: str | Path,
    source: SourceSplits,
    *,
    image_size: int,
    num_shards: int,
    seed: int,
    data_params: dict[str, Any],
    progress: bool = True,
) -> dict[str, Any]:
    """Write every split of `source` as shards + manifest.json into out_dir, atomically. -> the manifest."""
    shape = (image_size, image_size, 3)
    # The whole folder appears at once: a killed or failed run leaves the previous shards as they were.
    with output_set(out_dir) as (tmp,):
        tmp.mkdir()
        shards, class_counts = [], {}
        for split in SPLITS:
            entries, class_counts[split] = _write_split(tmp, split, source, shape, num_shards, progress)
            shards += entries
        for entry in shards:
            entry["bytes"] = (tmp / entry["file"]).stat().st_size
            entry["sha256"] = sha256_file(tmp / entry["file"])
        manifest = {
            "format": FORMAT_VERSION,
            "source": source.source,
            "image_shape": list(shape),
            "num_classes": len(source.class_names),
            "class_names": list(source.class_names),
            "counts": {split: source.splits[split].count for split in SPLITS},
            "class_counts": {split: class_counts[split] for split in ("labeled", "test")},
            "seed": seed,
            "data": data_params,
            "shards": shards,
        }
        write_json(tmp / MANIFEST, manifest)
    return manifest
