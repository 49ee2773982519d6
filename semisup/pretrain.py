"""Pretrain one method's encoder: data, models, resumable epochs, per-epoch kNN monitor, dvclive curves."""

from __future__ import annotations

import hashlib
import logging
import tempfile
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf
from dvclive import Live

from semisup import augment as aug
from semisup.config import Params, to_dict
from semisup.data import readers
from semisup.encoder import get_encoder, get_head
from semisup.errors import DataError
from semisup.io import atomic_path
from semisup.knn import knn_accuracy
from semisup.methods import METHODS, Method
from semisup.train import (
    Checkpoints,
    Trainer,
    embed,
    fingerprint,
    resolve_mixed_precision,
    select_strategy,
    set_precision,
)

log = logging.getLogger(__name__)


def manifest_digest(shard_dir: str | Path) -> str:
    """sha256 of manifest.json, which records every shard's sha256: a stand-in for the data itself."""
    return hashlib.sha256((Path(shard_dir) / "manifest.json").read_bytes()).hexdigest()


def run_key(method: str, params: Params, shard_dir: str | Path, mixed: bool) -> str:
    """What a checkpoint is valid for: the params pretrain@M depends on (see dvc.yaml), the data, the seed,
    and the precision `train.mixed_precision` resolved to (auto may resolve differently elsewhere)."""
    return fingerprint(
        method,
        to_dict(params.method(method)),
        to_dict(params.train),
        to_dict(params.augment),
        to_dict(params.encoder),
        params.knn.k,
        params.knn.monitor_every,
        params.seed,
        manifest_digest(shard_dir),
        mixed,
    )


def monitor(
    encoder: keras.Model, shard_dir: str | Path, params: Params, num_classes: int
) -> dict[str, float]:
    """Unweighted kNN accuracy of the current encoder: labeled split as the bank, test split as queries."""
    batch = params.embed.batch_size
    jit = params.train.jit_compile
    bank, bank_labels = embed(encoder, readers.eval_dataset(shard_dir, "labeled", batch), jit_compile=jit)
    queries, query_labels = embed(encoder, readers.eval_dataset(shard_dir, "test", batch), jit_compile=jit)
    scores = knn_accuracy(
        bank,
        bank_labels,
        queries,
        query_labels,
        ks=params.knn.k,
        num_classes=num_classes,
        temperature=params.knn.temperature,
        query_chunk=params.knn.query_chunk,
    )
    return {f"knn_{k}": v["accuracy"] for k, v in scores.items()}


def epoch_dataset(
    strategy: tf.distribute.Strategy,
    method: Method,
    method_params: Any,
    shard_dir: str | Path,
    *,
    seed: int,
    epoch: int,
    shuffle_buffer: int,
) -> tuple[tf.distribute.DistributedDataset, int]:
    """Epoch `epoch`'s training stream, each input pipeline reading its own shards; -> (dataset, steps).

    Only the parts the method encodes are read: CrossEntropy reads no unlabeled images (they only set
    the epoch length), InfoNCE no labeled ones.
    """

    def make(context: tf.distribute.InputContext | None = None) -> tuple[tf.data.Dataset, int]:
        return readers.train_dataset(
            shard_dir,
            unlabeled_batch=method_params.unlabeled_batch,
            labeled_batch=method_params.labeled_batch,
            seed=seed,
            epoch=epoch,
            shuffle_buffer=shuffle_buffer,
            input_context=context,
            method=method.name,
            read_unlabeled=method.unlabeled_views > 0,
            read_labeled=method.uses_labeled,
        )

    steps = make()[1]
    return strategy.distribute_datasets_from_function(lambda context: make(context)[0]), steps


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the outputs: always, except on the non-chief workers of a cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def check_batches(manifest: dict[str, Any], method_name: str, method_params: Any) -> None:
    """Fail before any compute when a split cannot fill one of the method's batches."""
    for split, batch in (
        ("unlabeled", method_params.unlabeled_batch),
        ("labeled", method_params.labeled_batch),
    ):
        available = manifest["counts"].get(split, 0)
        if available < batch:
            raise DataError(
                f"methods.{method_name}.{split}_batch: {batch} is larger than the {split} split "
                f"({available} images): lower it or add data"
            )


def _log_epoch(live: Live, record: dict[str, Any]) -> None:
    live.step = record["epoch"]
    for key, value in record.items():
        if key != "epoch":
            live.log_metric(key, float(value))
    live.make_summary()


def pretrain(
    method_name: str,
    params: Params,
    *,
    shard_dir: str | Path,
    model_dir: str | Path,
    metrics_dir: str | Path,
    checkpoint_root: str | Path,
) -> list[dict[str, Any]]:
    """Train `method_name` with `params`; write model_dir/encoder.keras and per-epoch curves; -> history."""
    method = METHODS[method_name]
    method_params = params.method(method_name)
    manifest = readers.verify_shards(shard_dir)
    num_classes = int(manifest["num_classes"])
    train, enc = params.train, params.encoder
    check_batches(manifest, method_name, method_params)

    keras.utils.set_random_seed(params.seed)
    if train.deterministic:
        tf.config.experimental.enable_op_determinism()
    mixed = resolve_mixed_precision(train.mixed_precision)
    set_precision(mixed)
    log.info(
        "%s: %s precision, strategy %s", method_name, "mixed_bfloat16" if mixed else "float32", train.strategy
    )
    strategy = select_strategy(train.strategy)
    if not is_chief(strategy):
        # Every worker of a multi-worker run trains and saves (saving may take part in collectives),
        # but only the chief writes where DVC looks; the others write into a scratch directory.
        scratch = Path(tempfile.mkdtemp(prefix="semisup-worker-"))
        model_dir, metrics_dir, checkpoint_root = scratch / "model", scratch / "metrics", scratch / "ckpt"
    with strategy.scope():
        encoder = get_encoder(
            tuple(manifest["image_shape"]),
            filters=enc.filters,
            depth=enc.depth,
            kernel_size=enc.kernel_size,
            stride=enc.stride,
            embedding_dim=enc.embedding_dim,
        )
        head = get_head(num_classes, input_dim=enc.embedding_dim) if method.has_head else None
        optimizer = keras.optimizers.Adam(learning_rate=train.learning_rate)
    trainer = Trainer(
        method,
        method_params,
        encoder=encoder,
        head=head,
        optimizer=optimizer,
        augment_kwargs=aug.from_params(params.augment),
        num_classes=num_classes,
        seed=params.seed,
        strategy=strategy,
        jit_compile=train.jit_compile,
    )
    models = {"encoder": encoder} | ({"head": head} if head is not None else {})
    key = run_key(method_name, params, shard_dir, mixed)
    checkpoints = Checkpoints(checkpoint_root, f"{method_name}-{key}")
    restored = checkpoints.load(models, optimizer, trainer.variables)
    start, history = restored if restored is not None else (0, [])
    if restored is not None:
        log.warning("resuming %s after epoch %d from %s", method_name, start, checkpoints.dir)

    live = Live(str(Path(metrics_dir) / "train"), dvcyaml=False, save_dvc_exp=False)
    for record in history:  # DVC deleted the old curves: replay the finished epochs.
        _log_epoch(live, record)
    monitor_every = params.knn.monitor_every
    for epoch in range(start + 1, train.epochs + 1):
        dataset, steps = epoch_dataset(
            strategy,
            method,
            method_params,
            shard_dir,
            seed=params.seed,
            epoch=epoch,
            shuffle_buffer=train.shuffle_buffer,
        )
        record: dict[str, Any] = {"epoch": epoch, **trainer.train_epoch(dataset, epoch, steps)}
        if monitor_every and (epoch % monitor_every == 0 or epoch == train.epochs):
            record |= monitor(encoder, shard_dir, params, num_classes)
        history.append(record)
        _log_epoch(live, record)
        log.info("%s epoch %d/%d: %s", method_name, epoch, train.epochs, _fmt(record))
        checkpoints.save(epoch, history, models, optimizer)

    out = Path(model_dir) / "encoder.keras"
    with atomic_path(out, suffix=".keras") as tmp:
        encoder.save(tmp)
    live.end()
    checkpoints.clear()
    return history


def _fmt(record: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in record.items() if k != "epoch")
