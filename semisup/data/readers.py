"""tf.data readers of the shards: verified before use, raw uint8 decode only, seeded per epoch.

The training stream follows the SuNCEt/PAWS recipe (Assran et al., 2020; 2021): one epoch is one pass
over the shuffled unlabeled split in fixed-size batches, each zipped with a batch of the labeled split,
which repeats (reshuffled each pass) for as long as the epoch needs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from semisup.data.shards import MANIFEST, count_records, sha256_file
from semisup.data.sources import SPLITS
from semisup.errors import DataError, UserError
from semisup.io import write_json

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


def _pipeline_counts(shards: list[dict[str, Any]], num_pipelines: int) -> list[int]:
    """Records each input pipeline reads: whole shards when there are enough, else every n-th record."""
    if len(shards) >= num_pipelines:
        return [sum(s["records"] for s in shards[w::num_pipelines]) for w in range(num_pipelines)]
    total = sum(s["records"] for s in shards)
    return [len(range(w, total, num_pipelines)) for w in range(num_pipelines)]


def _records(
    shard_dir: Path, num_pipelines: int, pipeline: int, file_seed: int, *, shards: list[dict[str, Any]]
) -> tf.data.Dataset:
    """Serialized records of this input pipeline's part of a split, shards in a seeded order, interleaved."""
    by_file = len(shards) >= num_pipelines
    mine = shards[pipeline::num_pipelines] if by_file else shards
    files = tf.data.Dataset.from_tensor_slices([str(shard_dir / s["file"]) for s in mine])
    files = files.shuffle(len(mine), seed=file_seed)
    ds = files.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(len(mine), _MAX_CYCLE),
        num_parallel_calls=_AUTOTUNE,
        deterministic=True,
    )
    # Fewer shards than pipelines: every pipeline reads all of them in the same seeded order and keeps
    # every n-th record, so the parts stay disjoint.
    return ds if by_file else ds.shard(num_pipelines, pipeline)


def _per_replica(input_context: tf.distribute.InputContext | None, batch: int, param: str) -> int:
    if input_context is None:
        return batch
    try:
        return input_context.get_per_replica_batch_size(batch)
    except ValueError:
        replicas = input_context.num_replicas_in_sync
        raise UserError(
            f"{param}: {batch} does not divide among {replicas} replicas; use a multiple of {replicas}"
        ) from None


def _fill_check(
    shard_dir: Path,
    manifest: dict[str, Any],
    per_u: int,
    pipelines: int,
    pipeline: int,
    replicas_per_pipeline: int,
    method: str,
) -> tuple[int, int]:
    """(global steps per epoch, labeled records of this pipeline); DataError when a batch cannot be filled."""
    unlabeled, labeled = _split_shards(manifest, "unlabeled"), _split_shards(manifest, "labeled")
    if not labeled:
        raise DataError(
            f"{shard_dir}: the labeled split is empty: set data.labeled_per_class >= 1 and reshard"
        )
    steps = min(c // per_u for c in _pipeline_counts(unlabeled, pipelines)) // replicas_per_pipeline
    if steps == 0:
        raise DataError(
            f"{shard_dir}: the unlabeled split ({manifest['counts']['unlabeled']} images) is smaller than one "
            f"batch of {per_u * pipelines * replicas_per_pipeline}: lower methods.{method}.unlabeled_batch"
        )
    n_labeled = _pipeline_counts(labeled, pipelines)[pipeline]
    if n_labeled == 0:
        raise DataError(
            f"{shard_dir}: the labeled split has fewer images than the {pipelines} input pipelines"
        )
    return steps, n_labeled


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
) -> tuple[tf.data.Dataset, int]:
    """One epoch of (unlabeled (U, H, W, 3) uint8, labeled (L, H, W, 3) uint8, labels (L,) int64). -> (ds, steps).

    Batch sizes are global; with `input_context` this pipeline reads its own shards and yields
    per-replica batches, and `steps` (the same on every worker) counts global steps. The order
    depends only on (seed, epoch) (and TF's global seed, if the caller sets one), so a resumed run
    sees the same batches. shuffle_buffer <= 1 turns the record shuffle off (shards still interleave
    in a seeded order). A labeled split smaller than its batch repeats within a batch.
    read_unlabeled / read_labeled False: that part of every element is an empty batch (0 images, no
    labels) and nothing of it is read, for methods that never encode it; the epoch length is the same.
    """
    shard_dir = Path(shard_dir)
    manifest = verify_shards(shard_dir)
    shape = tuple(manifest["image_shape"])
    pipelines = input_context.num_input_pipelines if input_context else 1
    pipeline = input_context.input_pipeline_id if input_context else 0
    replicas_per_pipeline = max(1, (input_context.num_replicas_in_sync if input_context else 1) // pipelines)
    per_u = _per_replica(input_context, unlabeled_batch, f"methods.{method}.unlabeled_batch")
    per_l = _per_replica(input_context, labeled_batch, f"methods.{method}.labeled_batch")

    unlabeled, labeled = _split_shards(manifest, "unlabeled"), _split_shards(manifest, "labeled")
    steps, n_labeled = _fill_check(
        shard_dir, manifest, per_u, pipelines, pipeline, replicas_per_pipeline, method
    )
    file_seed, u_seed, l_seed = _epoch_seeds(seed, epoch)
    where = (shard_dir, pipelines, pipeline, file_seed)

    batches = steps * replicas_per_pipeline
    if read_unlabeled:
        # One pass over this pipeline's unlabeled records, cut to the steps every pipeline can fill.
        u = _records(*where, shards=unlabeled)
        if shuffle_buffer > 1:
            u = u.shuffle(shuffle_buffer, seed=u_seed)
        u = u.batch(per_u, drop_remainder=True).take(batches)
        u = u.map(lambda b: _parse_batch(b, shape)[0], num_parallel_calls=_AUTOTUNE)
    else:
        u = tf.data.Dataset.from_tensors(tf.zeros((0, *shape), tf.uint8)).repeat(batches)

    if read_labeled:
        # The labeled records, reshuffled on every pass, for as long as the unlabeled pass lasts.
        lab = _records(*where, shards=labeled)
        if shuffle_buffer > 1:
            lab = lab.shuffle(min(shuffle_buffer, n_labeled), seed=l_seed, reshuffle_each_iteration=True)
        lab = lab.repeat().batch(per_l, drop_remainder=True)
        lab = lab.map(lambda b: _parse_batch(b, shape), num_parallel_calls=_AUTOTUNE)
    else:
        lab = tf.data.Dataset.from_tensors(
            (tf.zeros((0, *shape), tf.uint8), tf.zeros((0,), tf.int64))
        ).repeat()

    ds = tf.data.Dataset.zip(u, lab).map(lambda x, yl: (x, yl[0], yl[1]))
    if input_context is not None:
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        ds = ds.with_options(options)
    return ds.prefetch(_AUTOTUNE), steps
