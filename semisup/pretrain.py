"""Pretrain one method's encoder: build, resume, run the epochs, save; under any tf.distribute strategy.

Every worker of a cluster trains; only the chief writes the model and the curves. Each worker keeps its
own checkpoints in a stable place (`checkpoint_root/<method>-<key>/`, non-chief workers in `worker-<i>/`
inside it), and a rerun resumes every worker from the last epoch all of them saved.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from dvclive import Live

from semisup import augment as aug
from semisup import distribute
from semisup.codedeps import closure, code_digest
from semisup.config import Params, to_dict
from semisup.data import readers
from semisup.distribute import PEER_ERRORS, WorkerLost, is_chief  # noqa: F401  (is_chief: its old home)
from semisup.embed import embed
from semisup.encoder import get_encoder, get_head, save_encoder
from semisup.errors import DataError
from semisup.io import output_set, write_json
from semisup.knn import knn_accuracy
from semisup.methods import METHODS, Method
from semisup.progress import describe_devices
from semisup.train import Checkpoints, Trainer, fingerprint, resolve_mixed_precision, set_precision
from semisup.versions import library_versions

log = logging.getLogger(__name__)


def manifest_digest(shard_dir: str | Path) -> str:
    """sha256 of manifest.json, which records every shard's sha256: a stand-in for the data itself."""
    return hashlib.sha256((Path(shard_dir) / "manifest.json").read_bytes()).hexdigest()


def pretrain_code(method: str) -> str:
    """sha256 of every project file pretrain@<method> can run (dvc.yaml's code deps of that stage)."""
    return code_digest(closure("stages.pretrain", method))


def run_key(
    method: str, params: Params, shard_dir: str | Path, mixed: bool, labeled_ids: Sequence[int] | None = None
) -> str:
    """What a checkpoint is valid for: the params pretrain@M depends on (see dvc.yaml), the code it runs
    (every file of its code deps), the data, the seed, the precision `train.mixed_precision` resolved to
    (auto may resolve differently elsewhere), and the labeled subset trained on (None: every labeled
    image)."""
    parts = [
        pretrain_code(method),
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
    ]
    if labeled_ids is not None:
        ids = np.asarray(list(labeled_ids), dtype=np.int64)
        parts.append(hashlib.sha256(ids.tobytes()).hexdigest())
    return fingerprint(*parts)


StepCallback = Callable[[int, int, float], None]


def monitor(
    encoder: keras.Model,
    shard_dir: str | Path,
    params: Params,
    num_classes: int,
    labeled_ids: Sequence[int] | None = None,
) -> dict[str, float]:
    """Unweighted kNN accuracy of the current encoder: the labeled images trained on (labeled_ids, or all)
    as the bank, the test split as queries."""
    batch = params.embed.batch_size
    jit = params.train.jit_compile
    images, labels = readers.labeled_subset(shard_dir, labeled_ids)
    bank_data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch)
    bank, bank_labels = embed(encoder, bank_data, jit_compile=jit)
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
    labeled_ids: Sequence[int] | None = None,
) -> tuple[tf.distribute.DistributedDataset, int]:
    """Epoch `epoch`'s training stream, one input pipeline per worker; -> (dataset, global steps).

    Every pipeline reads the same global batches and keeps its replicas' rows (see readers.train_dataset).
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
            labeled_ids=labeled_ids,
        )

    replicas = strategy.num_replicas_in_sync
    # Checks the batch sizes against the replica count before any pipeline starts (UserError).
    steps = make(tf.distribute.InputContext(1, 0, replicas) if replicas > 1 else None)[1]
    return strategy.distribute_datasets_from_function(lambda context: make(context)[0]), steps


def check_batches(
    manifest: dict[str, Any], method_name: str, method_params: Any, labeled: int | None = None
) -> None:
    """Fail before any compute when a split (or the labeled subset of `labeled` images) cannot fill one of
    the method's batches; only the parts the method reads count."""
    method = METHODS[method_name]
    needs = [("unlabeled", method_params.unlabeled_batch, manifest["counts"].get("unlabeled", 0))]
    if method.uses_labeled:
        available = manifest["counts"].get("labeled", 0) if labeled is None else labeled
        needs.append(("labeled", method_params.labeled_batch, available))
    for split, batch, available in needs:
        if available < batch:
            what = f"{split} split" if split == "unlabeled" or labeled is None else "labeled subset"
            raise DataError(
                f"methods.{method_name}.{split}_batch: {batch} is larger than the {what} "
                f"({available} images): lower it or add data"
            )


def _log_epoch(live: Live, record: dict[str, Any]) -> None:
    live.step = record["epoch"]
    for key, value in record.items():
        if key != "epoch":
            live.log_metric(key, float(value))
    live.make_summary()


@dataclass
class Run:
    """Everything one pretraining run holds once built: data facts, strategy, models, trainer, checkpoints."""

    method: Method
    params: Params
    shard_dir: Path
    num_classes: int
    labeled_ids: Sequence[int] | None
    strategy: tf.distribute.Strategy
    worker: int  # this process's index in the cluster; 0 is the chief
    workers: int
    trainer: Trainer
    models: dict[str, keras.Model]
    checkpoints: Checkpoints
    epoch: int = 0  # the epoch being trained
    committed: int = 0  # the last epoch every worker has saved

    @property
    def chief(self) -> bool:
        return self.worker == 0


def build_models(
    strategy: tf.distribute.Strategy, method: Method, params: Params, manifest: dict[str, Any]
) -> tuple[keras.Model, keras.Model | None, keras.optimizers.Optimizer]:
    """The encoder, the head (methods that have one) and Adam, created inside the strategy's scope."""
    enc = params.encoder
    with strategy.scope():
        encoder = get_encoder(
            tuple(manifest["image_shape"]),
            filters=enc.filters,
            depth=enc.depth,
            kernel_size=enc.kernel_size,
            stride=enc.stride,
            embedding_dim=enc.embedding_dim,
        )
        classes = int(manifest["num_classes"])
        head = get_head(classes, input_dim=enc.embedding_dim) if method.has_head else None
        optimizer = keras.optimizers.Adam(learning_rate=params.train.learning_rate)
    return encoder, head, optimizer


def build(
    method_name: str,
    params: Params,
    *,
    shard_dir: str | Path,
    checkpoint_root: str | Path,
    labeled_ids: Sequence[int] | None = None,
) -> Run:
    """Check the data, pick the strategy and build the models, optimizer and trainer inside its scope."""
    method = METHODS[method_name]
    method_params = params.method(method_name)
    manifest = readers.verify_shards(shard_dir)
    num_classes = int(manifest["num_classes"])
    if labeled_ids is not None:
        labeled_ids = [int(i) for i in readers.check_labeled_ids(labeled_ids, manifest["counts"]["labeled"])]
    labeled = manifest["counts"].get("labeled", 0) if labeled_ids is None else len(labeled_ids)
    check_batches(manifest, method_name, method_params, None if labeled_ids is None else labeled)
    # The run's labeled images are the bank of its kNN monitor and of its knn stage: checked even without
    # the monitor, since the knn stage would fail on it after the training.
    if max(params.knn.k) > labeled:
        raise DataError(
            f"knn.k: {max(params.knn.k)} is larger than the run's kNN bank ({labeled} labeled images, "
            "searched by the monitor and the knn stage): lower knn.k, or raise the label budget"
        )
    train = params.train

    keras.utils.set_random_seed(params.seed)
    if train.deterministic:
        tf.config.experimental.enable_op_determinism()
    mixed = resolve_mixed_precision(train.mixed_precision)
    set_precision(mixed)
    strategy = distribute.select_strategy(train.strategy)
    worker, workers = distribute.task(strategy)
    log.info(
        "%s: %s precision, %s strategy, %d replica(s) on %s%s",
        method_name,
        "mixed_bfloat16" if mixed else "float32",
        type(strategy).__name__,
        strategy.num_replicas_in_sync,
        describe_devices(strategy),
        f", worker {worker} of {workers}" if workers > 1 else "",
    )
    encoder, head, optimizer = build_models(strategy, method, params, manifest)
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
    key = f"{method_name}-{run_key(method_name, params, shard_dir, mixed, labeled_ids)}"
    # One stable place per run and worker: the chief's checkpoints in <root>/<key>/, worker i's in
    # <root>/<key>/worker-i/ (on its own machine, or beside the chief's on a shared filesystem).
    if worker > 0:
        key = f"{key}/worker-{worker}"
    checkpoints = Checkpoints(checkpoint_root, key, keep=2 if workers > 1 else 1)
    models = {"encoder": encoder} | ({"head": head} if head is not None else {})
    return Run(
        method,
        params,
        Path(shard_dir),
        num_classes,
        labeled_ids,
        strategy,
        worker,
        workers,
        trainer,
        models,
        checkpoints,
    )


def resume(run: Run) -> tuple[int, list[dict[str, Any]]]:
    """Restore the last epoch every worker finished; -> (that epoch, its history), (0, []) for a fresh run."""
    own = run.checkpoints.epochs()
    # A worker may have saved one epoch more than a peer that died before its save: all take the oldest
    # last epoch, which every worker still keeps (Checkpoints(keep=2)).
    epoch = distribute.agree_min(run.strategy, own[-1] if own else 0)
    if epoch == 0:
        return 0, []
    t = run.trainer
    restored = run.checkpoints.load(run.models, t.optimizer, t.variables, epoch, run.strategy)
    if distribute.agree_min(run.strategy, int(restored is not None)) == 0:
        raise DataError(
            f"{run.checkpoints.dir}: not every worker holds a checkpoint of epoch {epoch}: "
            "delete this run's checkpoint folder on every worker and rerun"
        )
    log.warning("resuming %s after epoch %d from %s", run.method.name, epoch, run.checkpoints.dir)
    return restored


def run_epochs(
    run: Run,
    start: int,
    history: list[dict[str, Any]],
    on_step: StepCallback | None = None,
) -> list[dict[str, Any]]:
    """Train epochs start+1 .. train.epochs, each followed by the kNN monitor (when due) and a checkpoint.

    After each checkpoint the workers of a cluster wait for each other, so `run.committed` is the last
    epoch every worker has saved: the one a rerun resumes after if a worker dies now.
    """
    params, name = run.params, run.method.name
    epochs, monitor_every = params.train.epochs, params.knn.monitor_every
    for epoch in range(start + 1, epochs + 1):
        run.epoch = epoch
        record = {"epoch": epoch, **_train_one(run, epoch, on_step)}
        if monitor_every and (epoch % monitor_every == 0 or epoch == epochs):
            record |= monitor(run.models["encoder"], run.shard_dir, params, run.num_classes, run.labeled_ids)
        history.append(record)
        log.info("%s epoch %d/%d: %s", name, epoch, epochs, _fmt(record))
        run.checkpoints.save(epoch, history, run.models, run.trainer.optimizer)
        distribute.agree_min(run.strategy, epoch)
        run.committed = epoch
    return history


def _train_one(run: Run, epoch: int, on_step: StepCallback | None) -> dict[str, float]:
    params = run.params
    dataset, steps = epoch_dataset(
        run.strategy,
        run.method,
        params.method(run.method.name),
        run.shard_dir,
        seed=params.seed,
        epoch=epoch,
        shuffle_buffer=params.train.shuffle_buffer,
        labeled_ids=run.labeled_ids,
    )
    return run.trainer.train_epoch(dataset, epoch, steps, on_step=on_step)


def save(run: Run, model_dir: str | Path, metrics_dir: str | Path, history: list[dict[str, Any]]) -> None:
    """The chief writes model_dir/encoder.keras (the same bytes for the same weights) and metrics_dir/train
    (dvclive's curves of every epoch) together: both appear at once, or neither if the run stops first
    (its checkpoints hold the finished epochs and their history). Then, once every worker is done, each
    removes its checkpoints."""
    if run.chief:
        with output_set(model_dir, Path(metrics_dir) / "train") as (model_tmp, train_tmp):
            model_tmp.mkdir()
            save_encoder(run.models["encoder"], model_tmp / "encoder.keras")
            live = Live(str(train_tmp), dvcyaml=False, save_dvc_exp=False)
            for record in history:
                _log_epoch(live, record)
            live.end()
            write_json(train_tmp / "versions.json", library_versions())
    # No worker removes its checkpoints before every worker finished: a run that dies now still resumes.
    distribute.agree_min(run.strategy, 1)
    run.checkpoints.clear()


def pretrain(
    method_name: str,
    params: Params,
    *,
    shard_dir: str | Path,
    model_dir: str | Path,
    metrics_dir: str | Path,
    checkpoint_root: str | Path,
    labeled_ids: Sequence[int] | None = None,
    on_step: StepCallback | None = None,
) -> list[dict[str, Any]]:
    """Train `method_name` with `params`; write model_dir/encoder.keras and per-epoch curves; -> history.

    labeled_ids: 0-based positions in the labeled split's manifest order of the labeled images to train
    on and to use as the kNN monitor's bank (None: all). on_step(step, steps, loss) runs after every step.
    Under a multi-worker strategy only the chief writes model_dir and metrics_dir.
    """
    run = build(
        method_name, params, shard_dir=shard_dir, checkpoint_root=checkpoint_root, labeled_ids=labeled_ids
    )
    try:
        start, history = resume(run)
        run.committed = start
        history = run_epochs(run, start, history, on_step)
        save(run, model_dir, metrics_dir, history)
    except PEER_ERRORS as exc:
        if run.workers == 1:
            raise
        raise lost(run, exc) from None
    return history


def lost(run: Run, exc: Exception) -> WorkerLost:
    """The one-line error of a worker whose peer stopped: who, when, and the epoch a rerun resumes after."""
    who = distribute.lost_worker(exc, run.worker, run.workers)
    when = f"during epoch {run.epoch}" if run.epoch else "while the workers agreed where to resume"
    return WorkerLost(
        f"{who} stopped responding {when} ({type(exc).__name__}); "
        f"rerun every worker to resume after epoch {run.committed}"
    )


def _fmt(record: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in record.items() if k != "epoch")
