"""tf.data readers of the shards: verified before use, raw uint8 decode only, seeded per epoch.

The training stream follows the SuNCEt/PAWS recipe (Assran et al., 2020; 2021): one epoch is one pass
over the shuffled unlabeled split in fixed-size batches, each zipped with a batch of the labeled split,
which repeats (reshuffled each pass) for as long as the epoch needs; or, with PAWS's class-stratified
supports, with a batch of so many images of each class (semisup.data.stratified).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

from semisup.core.errors import DataError, UserError
from semisup.core.io import write_json
from semisup.data import stratified
from semisup.data.base import SPLITS
from semisup.data.shards import MANIFEST, count_records, sha256_file

if TYPE_CHECKING:
    from semisup.methods import ViewOptions

_AUTOTUNE = tf.data.AUTOTUNE
_MAX_CYCLE = 16  # shards read at once by the training stream
_FEATURES = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "label": tf.io.FixedLenFeature([], tf.int64),
}
_REQUIRED = ("source", "image_shape", "num_classes", "class_names", "counts", "shards")
# (resolved manifest path) -> the file stats that passed verify_shards in this process.
_verified: dict[str, tuple] = {}


def read_manifest(shard_dir: str | Path) -> dict[str, Any]:
    """shard_dir/manifest.json as a dict; DataError if missing or malformed."""
    path = Path(shard_dir) / MANIFEST
    rerun = "run the shard stage (dvc repro shard)"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path} not found: {rerun}") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable ({str(exc).splitlines()[0]}): {rerun}") from None
    missing = [key for key in _REQUIRED if key not in manifest] if isinstance(manifest, dict) else _REQUIRED
    if missing:
        raise DataError(f"{path}: missing {', '.join(missing)}: {rerun}")
    return manifest


def _stats(shard_dir: Path, manifest: dict[str, Any]) -> tuple:
    """(name, size, mtime, ctime, inode) of the manifest and every shard; DataError naming a missing shard.

    Any write through the file system changes a file's ctime, which no tool can set back.
    """
    stats = []
    for name in [MANIFEST] + [s["file"] for s in manifest["shards"]]:
        try:
            st = os.stat(shard_dir / name)
        except FileNotFoundError:
            raise DataError(
                f"{shard_dir / name}: missing shard: run the shard stage again (dvc repro shard)"
            ) from None
        stats.append((name, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))
    return tuple(stats)


def _stamp(key: str) -> Path:
    """Where a passed check of the shard set `key` is remembered across processes ($SEMISUP_CACHE_DIR)."""
    root = os.environ.get("SEMISUP_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "semisup")
    return Path(root) / "verified" / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"


def _remembered(key: str, stats: tuple) -> bool:
    """Whether this exact shard set (same files, untouched since) passed a full check before."""
    if _verified.get(key) == stats:
        return True
    try:
        return json.loads(_stamp(key).read_text()) == [list(s) for s in stats]
    except (OSError, ValueError):
        return False


def _remember(key: str, stats: tuple) -> None:
    _verified[key] = stats
    with contextlib.suppress(OSError, UserError):  # a read-only home only costs the next stage a check
        write_json(_stamp(key), [list(s) for s in stats])


def forget(shard_dir: str | Path) -> None:
    """Drop what verify_shards remembers of shard_dir, so that the next call checks every byte again."""
    key = str((Path(shard_dir) / MANIFEST).resolve())
    _verified.pop(key, None)
    _stamp(key).unlink(missing_ok=True)


_FIX = "the shard is truncated or corrupted: run the shard stage again (dvc repro -f shard)"


def _check_layout(path: Path, entry: dict[str, Any]) -> None:
    """DataError naming `path` when its size or record count differs from the manifest (a few reads)."""
    size = path.stat().st_size
    if size != entry["bytes"]:
        raise DataError(f"{path}: {size} bytes, the manifest says {entry['bytes']}: {_FIX}")
    try:
        records = count_records(path)
    except ValueError as exc:
        raise DataError(f"{path}: {exc}: {_FIX}") from None
    if records != entry["records"]:
        raise DataError(f"{path}: {records} records, the manifest says {entry['records']}: {_FIX}")


def _check_sha256(path: Path, entry: dict[str, Any]) -> None:
    if sha256_file(path) != entry["sha256"]:
        raise DataError(f"{path}: sha256 differs from the manifest: {_FIX}")


def _check_crcs(path: Path, entry: dict[str, Any]) -> None:
    """Read every record through TensorFlow, which checks each one's length and data CRC32C."""
    done = 0
    try:
        for batch in tf.data.TFRecordDataset(str(path), buffer_size=1 << 22).batch(256):
            done += int(batch.shape[0])
    except tf.errors.DataLossError:
        raise DataError(f"{path}: record {done} fails its CRC32C check: {_FIX}") from None


def verify_shards(shard_dir: str | Path, *, hash_limit_bytes: int | None = None) -> dict[str, Any]:
    """Check every shard of the manifest: size, record count, then its content. -> the manifest.

    Content: sha256 against the manifest, several files at once (hashlib releases the GIL), at disk
    speed; a shard set over `hash_limit_bytes` (None: no limit) is checked by the records' own CRC32C
    instead. Either way a corrupt shard is named before the stage computes or writes anything.
    A shard set that passed once is not checked again while its files stay the same (size, mtime,
    ctime, inode: as DVC's own state cache keys its hashes), in this process or the next stage's, so
    after the first check a stage pays a few stat calls.
    """
    shard_dir = Path(shard_dir)
    manifest = read_manifest(shard_dir)
    key = str((shard_dir / MANIFEST).resolve())
    stats = _stats(shard_dir, manifest)
    if _remembered(key, stats):
        return manifest
    entries = manifest["shards"]
    for entry in entries:
        _check_layout(shard_dir / entry["file"], entry)
    total = sum(s["bytes"] for s in entries)
    check = _check_sha256 if hash_limit_bytes is None or total <= hash_limit_bytes else _check_crcs
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        # map yields in manifest order: the first corrupt shard of the manifest is the one reported.
        for _ in pool.map(lambda entry: check(shard_dir / entry["file"], entry), entries):
            pass
    for split in SPLITS:
        records = sum(s["records"] for s in entries if s["split"] == split)
        if records != manifest["counts"].get(split, 0):
            raise DataError(
                f"{shard_dir / MANIFEST}: {split} shards hold {records} records, counts say otherwise"
            )
    _remember(key, stats)
    return manifest


def _split_shards(manifest: dict[str, Any], split: str) -> list[dict[str, Any]]:
    if split not in SPLITS:
        raise UserError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    return [s for s in manifest["shards"] if s["split"] == split]


def _parse_batch(serialized: tf.Tensor, shape: tuple[int, int, int]) -> tuple[tf.Tensor, tf.Tensor]:
    """(B,) serialized examples -> images (B, H, W, 3) uint8, labels (B,) int64."""
    parsed = tf.io.parse_example(serialized, _FEATURES)
    images = tf.io.decode_raw(parsed["image"], tf.uint8)  # (B, H*W*3)
    return tf.reshape(images, (-1, *shape)), parsed["label"]


def eval_dataset(shard_dir: str | Path, split: str, batch_size: int) -> tf.data.Dataset:
    """(images (B, H, W, 3) uint8, labels (B,) int64) of a split: manifest order, one pass, last batch kept."""
    manifest = verify_shards(shard_dir)
    shape = tuple(manifest["image_shape"])
    files = [str(Path(shard_dir) / s["file"]) for s in _split_shards(manifest, split)]
    ds = tf.data.TFRecordDataset(tf.constant(files, dtype=tf.string))
    ds = ds.batch(batch_size).map(lambda b: _parse_batch(b, shape), num_parallel_calls=_AUTOTUNE)
    return ds.prefetch(_AUTOTUNE)


def load_split(shard_dir: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """A whole split in memory: images (N, H, W, 3) uint8, labels (N,) int64, in eval_dataset order."""
    manifest = verify_shards(shard_dir)
    images = [np.zeros((0, *manifest["image_shape"]), np.uint8)]
    labels = [np.zeros((0,), np.int64)]
    for x, y in eval_dataset(shard_dir, split, 1024).as_numpy_iterator():
        images.append(x)
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels)


def _epoch_seeds(seed: int, epoch: int) -> list[int]:
    """Three op seeds derived from (seed, epoch) alone: file order, unlabeled and labeled shuffles."""
    state = np.random.SeedSequence([seed % 2**63, epoch]).generate_state(3, dtype=np.uint32)
    return [int(s) for s in state]


# One labeled subset in memory at a time: (manifest path, shard stats, ids digest) -> (images, labels).
_labeled_cache: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def check_labeled_ids(labeled_ids: Sequence[int], available: int) -> np.ndarray:
    """Positions into the labeled split as int64 (N,); UserError on an empty, out-of-range or repeated one."""
    ids = np.asarray(list(labeled_ids), dtype=np.int64).reshape(-1)
    if ids.size == 0:
        raise UserError("labeled_ids: empty: pass None for every labeled image, or at least one position")
    bad = ids[(ids < 0) | (ids >= available)]
    if bad.size:
        raise UserError(
            f"labeled_ids: position {int(bad[0])} is outside the labeled split ({available} images): "
            "pass 0-based positions in the labeled split's manifest order"
        )
    if np.unique(ids).size != ids.size:
        raise UserError("labeled_ids: a position appears twice: pass each labeled image once")
    return ids


def labeled_subset(
    shard_dir: str | Path, labeled_ids: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The labeled images at `labeled_ids` (all if None), in that order: (N, H, W, 3) uint8, (N,) int64.

    The labeled split is small (STL10: 5,000 images), so it is read once and kept in memory while the
    shards and the ids stay the same: every epoch's stream is built from these arrays.
    """
    shard_dir = Path(shard_dir)
    manifest = verify_shards(shard_dir)
    available = int(manifest["counts"].get("labeled", 0))
    ids = None if labeled_ids is None else check_labeled_ids(labeled_ids, available)
    path = str((shard_dir / MANIFEST).resolve())
    digest = None if ids is None else hashlib.sha256(ids.tobytes()).hexdigest()
    key = (path, _verified.get(path), digest)
    if key not in _labeled_cache:
        images, labels = load_split(shard_dir, "labeled")
        if ids is not None:
            images, labels = images[ids], labels[ids]
        _labeled_cache.clear()
        _labeled_cache[key] = (images, labels)
    return _labeled_cache[key]


def _records(shard_dir: Path, file_seed: int, *, shards: list[dict[str, Any]]) -> tf.data.Dataset:
    """Serialized records of a whole split, its shards in a seeded order, interleaved deterministically."""
    files = tf.data.Dataset.from_tensor_slices([str(shard_dir / s["file"]) for s in shards])
    files = files.shuffle(len(shards), seed=file_seed)
    return files.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(len(shards), _MAX_CYCLE),
        num_parallel_calls=_AUTOTUNE,
        deterministic=True,
    )


@dataclass(frozen=True)
class _Slice:
    """This input pipeline's rows of every global batch: `replicas` consecutive per-replica parts."""

    first_replica: int  # the replica id (in sync group order) of this pipeline's first replica
    replicas: int  # replicas fed by this pipeline
    total: int  # replicas in sync over every pipeline

    @staticmethod
    def of(input_context: tf.distribute.InputContext | None) -> _Slice:
        if input_context is None:
            return _Slice(0, 1, 1)
        total = input_context.num_replicas_in_sync
        local = max(1, total // input_context.num_input_pipelines)
        return _Slice(input_context.input_pipeline_id * local, local, total)

    def per_replica(self, batch: int, param: str) -> int:
        """Rows of a global batch of `batch` per replica; UserError unless it divides evenly."""
        if batch % self.total:
            raise UserError(
                f"{param}: {batch} does not divide among {self.total} replicas; use a multiple of {self.total}"
            )
        return batch // self.total

    def split(self, ds: tf.data.Dataset, per: int) -> tf.data.Dataset:
        """Global batches (G, ...) -> this pipeline's per-replica batches (per, ...), replica by replica."""
        if self.total == 1:
            return ds
        lo, hi, replicas = self.first_replica * per, (self.first_replica + self.replicas) * per, self.replicas

        def rows(t: tf.Tensor) -> tf.Tensor:  # (G, ...) -> (replicas, per, ...)
            return tf.reshape(t[lo:hi], [replicas, per, *(-1 if d is None else d for d in t.shape[1:])])

        ds = ds.map(lambda *parts: tuple(rows(p) for p in parts) if len(parts) > 1 else rows(parts[0]))
        return ds.unbatch()


def train_dataset(
    shard_dir: str | Path,
    *,
    unlabeled_batch: int,
    labeled_batch: int,
    seed: int,
    epoch: int,
    shuffle_buffer: int,
    input_context: tf.distribute.InputContext | None = None,
    method: str = "<method>",
    read_unlabeled: bool = True,
    read_labeled: bool = True,
    labeled_ids: Sequence[int] | None = None,
    views: ViewOptions | None = None,
) -> tuple[tf.data.Dataset, int]:
    """One epoch of (unlabeled (U, H, W, 3) uint8, labeled (L, H, W, 3) uint8, labels (L,) int64). -> (ds, steps).

    Batch sizes are global, and so is the stream: every input pipeline reads the same seeded sequence of
    global batches and keeps its own replicas' rows of each, so the global batches (the same images in
    the same order) do not depend on how many pipelines or replicas read them. With `input_context` the
    dataset yields per-replica batches, this pipeline's replicas in replica-id order; `steps` counts
    global steps. The order depends only on (seed, epoch) (and TF's global seed, if the caller sets
    one), so a resumed run sees the same batches. shuffle_buffer <= 1 turns the record shuffle off
    (shards still interleave in a seeded order).
    labeled_ids: 0-based positions, in the labeled split's manifest order (that of
    `eval_dataset(shard_dir, "labeled", b)`), of the labeled images to train on; None = all of them.
    The labeled subset is held in memory and reshuffled on every pass; a subset smaller than its batch
    repeats within a batch.
    views: the run's view options (semisup.methods.ViewOptions; None: the reference's). With
    supports_per_class, class-stratified labeled batches instead (semisup.data.stratified): that many
    images of each of `classes_per_batch` classes (None: every class) per step, drawn from the subset
    with the same seed as the shuffle it replaces; labeled_batch must be their product.
    read_unlabeled / read_labeled False: that part of every element is an empty batch (0 images, no
    labels), nothing of it is read and its batch size need not divide among the replicas, for methods
    that never encode it; the epoch length is the same.
    """
    shard_dir = Path(shard_dir)
    manifest = verify_shards(shard_dir)
    shape = tuple(manifest["image_shape"])
    part = _Slice.of(input_context)
    per_u = part.per_replica(unlabeled_batch, f"methods.{method}.unlabeled_batch") if read_unlabeled else 0
    per_l = part.per_replica(labeled_batch, f"methods.{method}.labeled_batch") if read_labeled else 0
    steps = _steps(shard_dir, manifest, unlabeled_batch, method)
    file_seed, u_seed, l_seed = _epoch_seeds(seed, epoch)
    if read_unlabeled:
        u = _unlabeled_stream(shard_dir, manifest, unlabeled_batch, steps, file_seed, u_seed, shuffle_buffer)
        u = part.split(u, per_u).map(lambda b: _parse_batch(b, shape)[0], num_parallel_calls=_AUTOTUNE)
    else:
        u = tf.data.Dataset.from_tensors(tf.zeros((0, *shape), tf.uint8)).repeat(steps * part.replicas)
    if read_labeled:
        lab = _labeled_batches(
            shard_dir, manifest, labeled_ids, labeled_batch, steps, l_seed, shuffle_buffer, views, method
        )
        lab = part.split(lab, per_l)
    else:
        lab = tf.data.Dataset.from_tensors(
            (tf.zeros((0, *shape), tf.uint8), tf.zeros((0,), tf.int64))
        ).repeat()
    return _zipped(u, lab, input_context), steps


def _labeled_batches(
    shard_dir: Path,
    manifest: dict[str, Any],
    labeled_ids: Sequence[int] | None,
    batch: int,
    steps: int,
    l_seed: int,
    shuffle_buffer: int,
    views: ViewOptions | None,
    method: str,
) -> tf.data.Dataset:
    """Global labeled batches of the run's subset: reshuffled per pass, or class-stratified (`views`)."""
    images, labels = labeled_subset(shard_dir, labeled_ids)
    if len(labels) == 0:
        raise DataError(
            f"{shard_dir}: the labeled split is empty: set data.labeled_per_class >= 1 and reshard"
        )
    if views is None or not views.stratified:
        return _labeled_stream(images, labels, batch, l_seed, shuffle_buffer)
    num_classes = int(manifest["num_classes"])
    stratified.check(
        np.bincount(labels, minlength=num_classes),
        supports_per_class=views.supports_per_class,
        classes_per_batch=views.classes_per_batch,
        labeled_batch=batch,
        method=method,
        class_names=manifest["class_names"],
    )
    order = stratified.batches(
        labels,
        num_classes,
        supports_per_class=views.supports_per_class,
        classes_per_batch=views.classes_per_batch,
        steps=steps,
        seed=l_seed,
    )
    return _gathered(images, labels, tf.data.Dataset.from_tensor_slices(order))


def _zipped(
    u: tf.data.Dataset, lab: tf.data.Dataset, input_context: tf.distribute.InputContext | None
) -> tf.data.Dataset:
    """The epoch's elements (unlabeled, labeled, labels), prefetched; with an input context, not auto-sharded
    (each pipeline already keeps its own rows)."""
    ds = tf.data.Dataset.zip(u, lab).map(lambda x, yl: (x, yl[0], yl[1]))
    if input_context is not None:
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        ds = ds.with_options(options)
    return ds.prefetch(_AUTOTUNE)


def steps_per_epoch(shard_dir: str | Path, unlabeled_batch: int, method: str = "<method>") -> int:
    """Global steps of every epoch of train_dataset (full unlabeled batches in one pass), from the manifest."""
    return _steps(Path(shard_dir), read_manifest(shard_dir), unlabeled_batch, method)


def _steps(shard_dir: Path, manifest: dict[str, Any], unlabeled_batch: int, method: str) -> int:
    """Global steps per epoch: full unlabeled batches in one pass; DataError when there is none."""
    available = int(manifest["counts"].get("unlabeled", 0))
    steps = available // unlabeled_batch
    if steps == 0:
        raise DataError(
            f"{shard_dir}: the unlabeled split ({available} images) is smaller than one "
            f"batch of {unlabeled_batch}: lower methods.{method}.unlabeled_batch"
        )
    return steps


def _unlabeled_stream(
    shard_dir: Path,
    manifest: dict[str, Any],
    batch: int,
    steps: int,
    file_seed: int,
    u_seed: int,
    shuffle_buffer: int,
) -> tf.data.Dataset:
    """`steps` global batches of serialized unlabeled records (batch,): one seeded pass over the split."""
    u = _records(shard_dir, file_seed, shards=_split_shards(manifest, "unlabeled"))
    if shuffle_buffer > 1:
        u = u.shuffle(shuffle_buffer, seed=u_seed)
    # Serialized records are cheap to batch and slice: each pipeline parses only its own rows.
    return u.batch(batch, drop_remainder=True).take(steps)


def _labeled_stream(
    images: np.ndarray, labels: np.ndarray, batch: int, l_seed: int, shuffle_buffer: int
) -> tf.data.Dataset:
    """Endless global labeled batches (images (L, H, W, 3), labels (L,)): the subset, reshuffled per pass."""
    n = len(labels)
    images_t, labels_t = tf.constant(images), tf.constant(labels)
    order = tf.data.Dataset.range(n)
    if shuffle_buffer > 1:
        order = order.shuffle(min(shuffle_buffer, n), seed=l_seed, reshuffle_each_iteration=True)
    order = order.repeat().batch(batch, drop_remainder=True)
    return order.map(lambda i: (tf.gather(images_t, i), tf.gather(labels_t, i)), num_parallel_calls=_AUTOTUNE)


def _gathered(images: np.ndarray, labels: np.ndarray, order: tf.data.Dataset) -> tf.data.Dataset:
    """Batches of positions (L,) -> (images (L, H, W, 3), labels (L,)) of the in-memory subset."""
    images_t, labels_t = tf.constant(images), tf.constant(labels)
    return order.map(lambda i: (tf.gather(images_t, i), tf.gather(labels_t, i)), num_parallel_calls=_AUTOTUNE)
