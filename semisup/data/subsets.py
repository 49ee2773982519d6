"""Fixed label subsets of the labeled split: one file of record ids per (budget, seed), like PAWS' lists.

A record id is a 0-based position in the labeled split's manifest order (the order of
`readers.eval_dataset(shard_dir, "labeled", b)`). Subsets are class-stratified (the same count per
class), deterministic in (budget, seed) and nested: for one seed, the 5-per-class subset is inside the
10-per-class one, which is inside the 25-per-class one, because every budget takes the first images of
the same seeded per-class permutation. Every method of one (budget, seed) trains and is scored with
exactly that subset, so the comparison across methods is paired. Labeled images outside a run's subset
are left out of that run (they do not join its unlabeled stream): every budget then trains on the same
unlabeled stream for the same number of steps, and only the labels differ.

Labels are read straight from the TFRecord bytes (no TensorFlow import), so the splits stage costs
well under a second.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from semisup.core.errors import DataError, UserError
from semisup.core.io import write_json
from semisup.data.splits import class_counts

ALL = "all"
_NULLS = ("all", "none", "null")


def parse_budget(text: str | int | None) -> int | None:
    """A budget as params or DVC's `${item.budget}` spell it (5, "5", "all", None, "None") -> int or None."""
    if text is None or (isinstance(text, str) and text.strip().lower() in _NULLS):
        return None
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise UserError(f"--budget: {text!r} is not a number of labels per class or all") from None
    if value < 1:
        raise UserError(f"--budget: {value} must be >= 1 (or all)")
    return value


def budget_name(budget: int | str | None) -> str:
    """The budget as DVC's matrix writes it into stage names and paths: 5 -> "5", all -> "all", null -> "None"."""
    return str(budget)


def run_name(method: str, budget: int | str | None, seed: int) -> str:
    """A run's name, the part after @ in its stage names: method-budget-seed, e.g. paws-25-0."""
    return f"{method}-{budget_name(budget)}-{seed}"


class RunName(NamedTuple):
    """A run's name split up: its method, label budget (None: all) and seed (None: params.yaml's)."""

    method: str
    budget: int | None
    seed: int | None


def parse_run(name: str) -> RunName:
    """A run's name as every run stage takes it (--run): METHOD-BUDGET-SEED, the part after @ in its stage
    names (paws-25-0, paws-all-0), or METHOD alone (every labeled image, params.yaml's seed)."""
    method, sep, rest = name.partition("-")
    if not sep:
        return RunName(name, None, None)
    budget, sep, seed = rest.rpartition("-")
    bad = UserError(
        f"run {name!r}: not a run name: METHOD-BUDGET-SEED (e.g. paws-25-0, paws-all-0) or METHOD"
    )
    if not sep or not budget or not (seed.isascii() and seed.isdigit()):
        raise bad
    try:
        return RunName(method, parse_budget(budget), int(seed))
    except UserError:
        raise bad from None


def run_subset_path(splits_dir: str | Path, name: str) -> Path | None:
    """The labeled subset file a study run trains with (paws-25-0 -> splits_dir/25-0.json, as dvc.yaml
    passes it); None for a run named by its method alone, which trains with every labeled image."""
    parse_run(name)
    _, sep, budget_seed = name.partition("-")
    return Path(splits_dir) / f"{budget_seed}.json" if sep else None


def subset_path(splits_dir: str | Path, budget: int | str | None, seed: int) -> Path:
    """Where the splits stage writes the (budget, seed) subset."""
    return Path(splits_dir) / f"{budget_name(budget)}-{seed}.json"


# --- labels straight from the TFRecord bytes -------------------------------------------------------------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """A protobuf base-128 varint at `pos` -> (value, next position)."""
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of a protobuf message: ints for varints, bytes for lengths."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = buf[pos : pos + size], pos + size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def example_label(record: bytes) -> int:
    """The int64 `label` feature of a serialized tf.train.Example (Example.features.feature["label"])."""
    for _, _, features in (f for f in _fields(record) if f[0] == 1):
        for _, _, entry in (f for f in _fields(features) if f[0] == 1):
            parts = {number: value for number, _, value in _fields(entry)}
            if parts.get(1) != b"label":
                continue
            for number, _, int64_list in _fields(parts.get(2, b"")):
                if number != 3:  # Feature.int64_list
                    continue
                for _, wire, value in _fields(int64_list):
                    first = value if wire == 0 else _varint(value, 0)[0]  # unpacked or packed
                    return first - (1 << 64) if first >= 1 << 63 else first
    raise ValueError("no int64 'label' feature")


def _records(path: Path) -> Iterator[bytes]:
    """The payloads of a TFRecord file: uint64 length, uint32 crc, payload, uint32 crc."""
    with path.open("rb") as f:
        while header := f.read(12):
            if len(header) < 12:
                raise ValueError("a record header is cut short")
            (length,) = struct.unpack("<Q", header[:8])
            payload = f.read(length)
            if len(payload) < length or len(f.read(4)) < 4:
                raise ValueError("a record is cut short")
            yield payload


def labeled_split_labels(shard_dir: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Labels (N,) int64 of the labeled split in manifest order, and the manifest."""
    shard_dir = Path(shard_dir)
    path = shard_dir / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
        shards = [s for s in manifest["shards"] if s["split"] == "labeled"]
        expected = int(manifest["counts"]["labeled"])
    except FileNotFoundError:
        raise UserError(f"{path}: not found (run `dvc repro shard` first)") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: unreadable manifest ({exc}); rerun `dvc repro -f shard`") from None
    labels: list[int] = []
    for shard in shards:
        file = shard_dir / shard["file"]
        try:
            labels.extend(example_label(record) for record in _records(file))
        except (OSError, ValueError, IndexError) as exc:
            raise DataError(f"{file}: unreadable shard ({exc}); rerun `dvc repro -f shard`") from None
    if len(labels) != expected:
        raise DataError(
            f"{path}: the labeled shards hold {len(labels)} records, the manifest says {expected}"
        )
    return np.asarray(labels, dtype=np.int64), manifest


# --- drawing, writing and reading subsets -----------------------------------------------------------------


def draw_subset(labels: np.ndarray, num_classes: int, per_class: int | None, seed: int) -> np.ndarray:
    """Sorted record ids of `per_class` images of each class (None: all). labels: (N,) -> (per_class x C,).

    Class c's images are permuted by a generator seeded with (seed, c) alone, and every budget takes the
    first `per_class` of that permutation: subsets of one seed are nested, and a class's draw does not
    depend on the other classes.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if per_class is None:
        return np.arange(len(labels), dtype=np.int64)
    chosen = []
    for c in range(num_classes):
        ids = np.flatnonzero(labels == c)
        chosen.append(np.random.default_rng([seed, c]).permutation(ids)[:per_class])
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def check_budget(labels: np.ndarray, class_names: Sequence[str], per_class: int | None) -> None:
    """A UserError naming the smallest class when the budget is more than it has in the labeled split."""
    if per_class is None:
        return
    counts = class_counts(labels, len(class_names))
    smallest = int(np.argmin(counts))
    if per_class > counts[smallest]:
        raise UserError(
            f"study.labeled_per_class: {per_class} is more than class {class_names[smallest]!r} has in the "
            f"labeled split ({int(counts[smallest])}); lower it, or raise data.labeled_per_class"
        )


def write_subset(
    path: str | Path, ids: np.ndarray, labels: np.ndarray, *, budget: int | None, seed: int, num_classes: int
) -> None:
    """Write a subset file: its ids (positions in the labeled split) with the counts per class."""
    counts = class_counts(labels[ids], num_classes)
    write_json(
        path,
        {
            "split": "labeled",
            "labeled_per_class": budget,
            "seed": seed,
            "count": int(len(ids)),
            "per_class": [int(n) for n in counts],
            "ids": [int(i) for i in ids],
        },
    )


def read_subset(path: str | Path, num_labeled: int | None = None) -> np.ndarray:
    """The sorted record ids of a subset file; a clear error when it is missing or not a subset."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: not found (run `dvc repro splits@{path.stem}` first)")
    try:
        ids = np.asarray(json.loads(path.read_text())["ids"], dtype=np.int64)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(
            f"{path}: not a subset file ({exc}); rerun `dvc repro -f splits@{path.stem}`"
        ) from None
    bad = ids.ndim != 1 or len(ids) == 0 or np.any(np.diff(ids) <= 0) or ids[0] < 0
    if bad or (num_labeled is not None and ids[-1] >= num_labeled):
        raise DataError(
            f"{path}: ids are not sorted distinct positions in the labeled split ({num_labeled} images); "
            f"rerun `dvc repro -f splits@{path.stem}`"
        )
    return ids
