"""Pretrain one method's (or configuration's) encoder, under any tf.distribute strategy, as a short story
over named steps:

set up (seed, precision, strategy) -> build the models and the trainer -> open the run's checkpoints ->
resume the last epoch every worker finished -> train the epochs (each: train, kNN monitor, checkpoint,
live curves, wait for the other workers) -> save the model and the curves.

Every worker of a cluster trains; only the chief writes the model and the curves (and the live ones). The
checks that can run before compute are semisup.training.preflight's (the stage runs them first; `set_up` runs
the run's own again).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import tensorflow as tf
from dvclive import Live

from semisup.core.errors import DataError
from semisup.core.io import output_set, write_json
from semisup.core.versions import library_versions
from semisup.data import readers
from semisup.methods import Method, ViewOptions
from semisup.model import augment as aug
from semisup.model.encoder import get_encoder, get_head, save_encoder
from semisup.model.projection import get_projector
from semisup.training import distribute
from semisup.training.checkpoints import Checkpoints, run_folder, spec_key
from semisup.training.distribute import PEER_ERRORS, WorkerLost
from semisup.training.live import LiveCurves, log_epoch
from semisup.training.monitor import monitor
from semisup.training.optim import make_optimizer
from semisup.training.precision import resolve_mixed_precision, set_precision
from semisup.training.preflight import check_run
from semisup.training.train import Trainer, epoch_dataset

if TYPE_CHECKING:
    from semisup.config import Params, RunSpec

log = logging.getLogger(__name__)

StepCallback = Callable[[int, int, float], None]
EpochCallback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Run:
    """One pretraining run once set up: what it trains (resolved at its stage's boundary), on which data,
    where, and in what precision."""

    spec: RunSpec  # the run: its method or configuration, params, labeled subset and view options
    shard_dir: Path
    num_classes: int
    image_shape: tuple[int, ...]
    strategy: tf.distribute.Strategy
    mixed: bool  # mixed_bfloat16, as train.mixed_precision resolved on this machine
    worker: int  # this process's index in the cluster; 0 is the chief
    workers: int

    @property
    def name(self) -> str:
        """The method or configuration it trains (params.yaml's methods.<name>)."""
        return self.spec.name

    @property
    def method(self) -> Method:
        """The registered method it runs."""
        return self.spec.method

    @property
    def params(self) -> Params:
        """The params it trains with (Params.for_run(name), its seed, its fitted batches)."""
        return self.spec.params

    @property
    def labeled_ids(self) -> tuple[int, ...] | None:
        """Its labeled subset: positions in the labeled split (None: every labeled image)."""
        return self.spec.labeled_ids

    @property
    def chief(self) -> bool:
        return self.worker == 0


def set_up(spec: RunSpec, shard_dir: str | Path) -> Run:
    """Check the resolved run `spec` against the shards, then seed, pick the precision and the strategy;
    log them."""
    params = spec.params
    manifest = readers.verify_shards(shard_dir)
    if spec.labeled_ids is not None:
        readers.check_labeled_ids(spec.labeled_ids, manifest["counts"]["labeled"])
    check_run(spec, manifest, shard_dir)
    keras.utils.set_random_seed(params.seed)
    if params.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    mixed = resolve_mixed_precision(params.train.mixed_precision)
    set_precision(mixed)
    strategy = distribute.select_strategy(params.train.strategy)
    worker, workers = distribute.task(strategy)
    log.info(
        "%s: %s precision, %s strategy, %d replica(s) on %s%s",
        spec.name,
        "mixed_bfloat16" if mixed else "float32",
        distribute.strategy_name(strategy),
        strategy.num_replicas_in_sync,
        distribute.describe_devices(strategy),
        f", worker {worker} of {workers}" if workers > 1 else "",
    )
    _log_crops(spec.name, spec.views, int(manifest["image_shape"][0]))
    return Run(
        spec,
        Path(shard_dir),
        int(manifest["num_classes"]),
        tuple(manifest["image_shape"]),
        strategy,
        mixed,
        worker,
        workers,
    )


def _log_crops(name: str, views: ViewOptions, image_size: int) -> None:
    """One line with the multi-crop settings run `name` resolved for its image size (when it has crops)."""
    c = views.crops(image_size)
    if c is None:
        return
    log.info(
        "%s: multi-crop with the %s preset at %d px: %d crops of %d px at area %s, the views at %s, "
        "the head's BatchNorm %s",
        name,
        c.preset,
        image_size,
        c.count,
        c.size,
        list(c.scale),
        list(c.global_scale),
        views.multicrop_batchnorm,
    )


def build(run: Run) -> tuple[dict[str, keras.Model], Trainer]:
    """The encoder, the projection head (encoder.projection_layers > 0), the classifier head (methods that
    have one), the optimizer and the trainer, inside the strategy's scope. The models come back by name
    for the checkpoints; only "encoder" is the representation (the monitor, the saved model)."""
    enc, params = run.params.encoder, run.params
    steps = readers.steps_per_epoch(run.shard_dir, run.spec.method_params.unlabeled_batch)
    with run.strategy.scope():
        encoder = get_encoder(
            run.image_shape,
            filters=enc.filters,
            depth=enc.depth,
            kernel_size=enc.kernel_size,
            stride=enc.stride,
            embedding_dim=enc.embedding_dim,
            padding=enc.padding,
            pooling=enc.pooling,
        )
        projector = get_projector(
            enc.embedding_dim,
            layers=enc.projection_layers,
            hidden=enc.projection_hidden,
            output_dim=enc.projection_dim,
        )
        width = enc.embedding_dim if projector is None else enc.projection_dim
        head = get_head(run.num_classes, input_dim=width) if run.method.has_head else None
        models = {"encoder": encoder, "projector": projector, "head": head}
        models = {name: model for name, model in models.items() if model is not None}
        variables = [v for model in models.values() for v in model.trainable_variables]
        optimizer = make_optimizer(params.train, steps, variables)
    trainer = Trainer(
        run.method,
        run.spec.method_params,
        encoder=encoder,
        head=head,
        optimizer=optimizer,
        augment_kwargs=aug.from_params(params.augment),
        num_classes=run.num_classes,
        seed=params.seed,
        strategy=run.strategy,
        jit_compile=params.train.jit_compile,
        projector=projector,
        views=run.spec.views,
    )
    return models, trainer


def open_checkpoints(run: Run, root: str | Path, code: str) -> Checkpoints:
    """The run's checkpoints, held by this process (Checkpoints.hold): one stable folder per run (its
    spec_key, `code` the hash of its code) and worker; a cluster keeps two epochs, since a worker may resume
    one epoch before its own last."""
    key = spec_key(run.spec, run.shard_dir, run.mixed, code=code)
    checkpoints = Checkpoints(root, run_folder(run.name, key, run.worker), keep=2 if run.workers > 1 else 1)
    checkpoints.hold()
    return checkpoints


@contextlib.contextmanager
def peers(run: Run, when: str, resume_after: int) -> Iterator[None]:
    """Turn a lost peer of a cluster into one line: who, when, and the epoch a rerun resumes after."""
    try:
        yield
    except PEER_ERRORS as exc:
        if run.workers == 1:
            raise
        who = distribute.lost_worker(exc, run.worker, run.workers)
        raise WorkerLost(
            f"{who} stopped responding {when} ({type(exc).__name__}); "
            f"rerun every worker to resume after epoch {resume_after}"
        ) from None


AGREEING = "while the workers agreed where to resume"


def resume(
    run: Run, models: dict[str, keras.Model], trainer: Trainer, checkpoints: Checkpoints
) -> tuple[int, list[dict[str, Any]]]:
    """Restore the last epoch every worker finished; -> (that epoch, its history), (0, []) for a fresh run."""
    with peers(run, AGREEING, 0):
        own = checkpoints.epochs()
        # A worker may have saved one epoch more than a peer that died before its save: all take the oldest
        # last epoch, which every worker still keeps (Checkpoints(keep=2)).
        epoch = distribute.agree_min(run.strategy, own[-1] if own else 0)
        if epoch == 0:
            return 0, []
        restored = checkpoints.load(models, trainer.optimizer, trainer.variables, epoch, run.strategy)
        if distribute.agree_min(run.strategy, int(restored is not None)) == 0:
            raise DataError(
                f"{checkpoints.dir}: not every worker holds a checkpoint of epoch {epoch}: "
                "delete this run's checkpoint folder on every worker and rerun"
            )
    log.warning("resuming %s after epoch %d from %s", run.name, epoch, checkpoints.dir)
    return restored


def train_epochs(
    run: Run,
    models: dict[str, keras.Model],
    trainer: Trainer,
    checkpoints: Checkpoints,
    start: int,
    history: list[dict[str, Any]],
    on_step: StepCallback | None = None,
    on_epoch: EpochCallback | None = None,
) -> list[dict[str, Any]]:
    """Train epochs start+1 .. train.epochs, each followed by the kNN monitor (when due), a checkpoint and
    on_epoch(its record).

    After each checkpoint the workers of a cluster wait for each other: the epoch every worker has saved
    is the one a rerun resumes after if a worker dies later.
    """
    params, name = run.params, run.name
    epochs, monitor_every = params.train.epochs, params.knn.monitor_every
    for epoch in range(start + 1, epochs + 1):
        with peers(run, f"during epoch {epoch}", resume_after=epoch - 1):
            dataset, steps = epoch_dataset(
                run.strategy,
                run.method,
                run.spec.method_params,
                run.shard_dir,
                seed=params.seed,
                epoch=epoch,
                shuffle_buffer=params.train.shuffle_buffer,
                labeled_ids=run.labeled_ids,
                views=run.spec.views,
            )
            record = {"epoch": epoch, **trainer.train_epoch(dataset, epoch, steps, on_step=on_step)}
            if monitor_every and (epoch % monitor_every == 0 or epoch == epochs):
                record |= monitor(models["encoder"], run.shard_dir, params, run.num_classes, run.labeled_ids)
            history.append(record)
            log.info("%s epoch %d/%d: %s", name, epoch, epochs, _fmt(record))
            checkpoints.save(epoch, history, models, trainer.optimizer)
            if on_epoch is not None:  # after the checkpoint: what it shows, a rerun resumes after
                on_epoch(record)
            distribute.agree_min(run.strategy, epoch)
    return history


def save(
    run: Run,
    models: dict[str, keras.Model],
    checkpoints: Checkpoints,
    model_dir: str | Path,
    metrics_dir: str | Path,
    history: list[dict[str, Any]],
    start: int,
    records: Mapping[str, Any] | None = None,
) -> None:
    """The chief writes model_dir/encoder.keras (the same bytes for the same weights) and metrics_dir/train
    (dvclive's curves of every epoch, the library versions and `records`: file name -> JSON) together: both appear at once, or neither
    if the run stops first (its checkpoints hold the finished epochs and their history). Then, once every
    worker is done, each removes its checkpoints. `start`: the epoch this process resumed after.
    The encoder is one file of model_dir: the run's model folder holds other stages' outputs too."""
    if run.chief:
        with output_set(Path(model_dir) / "encoder.keras", Path(metrics_dir) / "train") as (
            model_tmp,
            train_tmp,
        ):
            save_encoder(models["encoder"], model_tmp)
            live = Live(str(train_tmp), dvcyaml=False, save_dvc_exp=False)
            for record in history:
                log_epoch(live, record)
            live.end()
            write_json(train_tmp / "versions.json", library_versions())
            for file, record in (records or {}).items():
                write_json(train_tmp / file, record)
    last = history[-1]["epoch"] if history else 0
    # No worker removes its checkpoints before every worker finished: a run that dies now still resumes.
    with peers(run, f"during epoch {last}" if last > start else AGREEING, resume_after=last):
        distribute.agree_min(run.strategy, 1)
    checkpoints.clear()


def pretrain(
    spec: RunSpec,
    *,
    shard_dir: str | Path,
    model_dir: str | Path,
    metrics_dir: str | Path,
    checkpoint_root: str | Path,
    code: str,
    on_step: StepCallback | None = None,
    records: Mapping[str, Any] | None = None,
    live_dir: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Train the resolved run `spec` (semisup.config.resolve_run); write model_dir/encoder.keras and
    per-epoch curves; -> history.

    spec.labeled_ids: 0-based positions in the labeled split's manifest order of the labeled images to
    train on and to use as the kNN monitor's bank (None: all). code: the hash of the run's code digest file
    (semisup.pipeline.codedeps.pretrain_code, which the stage passes): checkpoints of other code are never
    resumed. on_step(step, steps, loss) runs after every step.
    records: more JSON files for metrics_dir/train (file name -> content), such as the batches the run
    used. live_dir: where the curves also appear as each epoch ends, for DVC's views of a running
    experiment (semisup.training.live; removed once the outputs are written). Under a multi-worker strategy
    only the chief writes model_dir, metrics_dir and live_dir.
    """
    run = set_up(spec, shard_dir)
    models, trainer = build(run)
    checkpoints = open_checkpoints(run, checkpoint_root, code)
    live, finished = None, False
    try:
        start, history = resume(run, models, trainer, checkpoints)
        live = LiveCurves(live_dir, run.params.train.epochs, history) if live_dir and run.chief else None
        history = train_epochs(
            run, models, trainer, checkpoints, start, history, on_step, live.log if live else None
        )
        save(run, models, checkpoints, model_dir, metrics_dir, history, start, records)
        finished = True
    finally:
        checkpoints.release()
        if live is not None:
            live.close(finished)
    return history


def _fmt(record: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in record.items() if k != "epoch")
