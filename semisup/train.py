"""The generic training loop: one distributed train step for every method, resumable per-epoch checkpoints.

A method declares what it encodes (semisup.methods.Method); the trainer augments exactly those images,
runs them through the encoder in one call, gathers the features of every replica so the loss sees the
global batch, and applies Adam. Randomness comes from stateless ops seeded by (seed, step), and the input
order of epoch e from (seed, e), so a resumed run repeats the uninterrupted one step for step.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from semisup import augment as aug
from semisup.distribute import select_strategy  # noqa: F401  (its home before semisup.distribute)
from semisup.errors import UserError
from semisup.io import atomic_path, write_json
from semisup.methods import LossInputs, Method
from semisup.methods.load import loss_fn


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


def fast_bfloat16() -> bool:
    """Whether this machine computes bf16 natively: a GPU of compute capability 8.0 or newer, or a CPU
    with AVX512-BF16 or AMX (elsewhere TensorFlow emulates bf16, slower than float32)."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0))
        return tuple(capability) >= (8, 0)
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_mixed_precision(setting: bool | str) -> bool:
    """`train.mixed_precision`: true, false, or auto (mixed where bf16 is fast on this machine)."""
    return fast_bfloat16() if setting == "auto" else bool(setting)


def set_precision(mixed: bool) -> None:
    """mixed_bfloat16 (no loss scaling needed) or float32 for every layer built afterwards."""
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if mixed else "float32")


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable parts (params, manifest digests, seed)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _to_f32(x: tf.Tensor) -> tf.Tensor:
    return tf.cast(x, tf.float32)


class Trainer:
    """Trains `encoder` (+ `head` for methods that have one) with `method`'s loss under `strategy`.

    Build the encoder, head and optimizer inside `strategy.scope()` before constructing the trainer.
    """

    def __init__(
        self,
        method: Method,
        method_params: Any,
        *,
        encoder: keras.Model,
        head: keras.Model | None,
        optimizer: keras.optimizers.Optimizer,
        augment_kwargs: dict[str, Any],
        num_classes: int,
        seed: int,
        strategy: tf.distribute.Strategy | None = None,
        jit_compile: bool = False,
    ):
        if method.has_head and head is None:
            raise ValueError(f"method {method.name} needs a head")
        self.method = method
        self.method_params = method_params
        self.encoder = encoder
        self.head = head if method.has_head else None
        self.optimizer = optimizer
        self.augment_kwargs = dict(augment_kwargs)
        self.num_classes = num_classes
        self.seed = int(seed)
        self.strategy = strategy or tf.distribute.get_strategy()
        self.jit_compile = jit_compile
        self.compute = loss_fn(method)  # imports the method's module by name
        # Adam creates its slots lazily, inside the first distributed step, unless they exist: with several
        # replicas that fails (a placeholder of the cond branch never fed). Create them here, in the scope.
        with self.strategy.scope():
            self.optimizer.build(self.variables)
        self._encode = tf.function(
            self._encode_fn, jit_compile=jit_compile, reduce_retracing=True, autograph=False
        )
        self._loss = tf.function(
            self._loss_fn, jit_compile=jit_compile, reduce_retracing=True, autograph=False
        )
        self._step = tf.function(self._distributed_step, reduce_retracing=True, autograph=False)

    @property
    def variables(self) -> list[tf.Variable]:
        """The trainable variables: the encoder's, then the head's."""
        head_vars = self.head.trainable_variables if self.head is not None else []
        return self.encoder.trainable_variables + head_vars

    # --- replica-local pieces -------------------------------------------------------------------

    def _augment(self, unlabeled: tf.Tensor, labeled: tf.Tensor, step: tf.Tensor):
        """The views this method encodes: (views, labeled view or None).

        Seeded by (seed, step) and each image's position in the global batch, never by the replica: the
        replica's rows are part (replica id, replicas) of the global batch, and `augment` draws every
        image's parameters for the whole global batch, so 1, 2 or N replicas see the same views.
        """
        ctx = tf.distribute.get_replica_context()
        part = (ctx.replica_id_in_sync_group, ctx.num_replicas_in_sync)
        base = tf.stack([tf.constant(self.seed, tf.int64) * 1_000_003, tf.cast(step, tf.int64)])
        seeds = tf.random.experimental.stateless_split(base, num=3, alg="philox")
        views = tuple(
            aug.augment(unlabeled, seeds[i], part=part, **self.augment_kwargs)
            for i in range(self.method.unlabeled_views)
        )
        labeled_view = None
        if self.method.uses_labeled:
            labeled_view = aug.augment(labeled, seeds[2], part=part, **self.augment_kwargs)
        return views, labeled_view

    def _encode_fn(self, images: tf.Tensor) -> tf.Tensor:
        return _to_f32(self.encoder(images, training=True))

    def _loss_fn(self, views, labeled, labels):
        logits = labeled
        if self.head is not None:
            logits = _to_f32(self.head(labeled, training=True))
        inputs = LossInputs(views=tuple(views), labeled=logits, labels=labels, num_classes=self.num_classes)
        loss, logs = self.compute(inputs, self.method_params)
        return tf.cast(loss, tf.float32), {k: tf.cast(v, tf.float32) for k, v in logs.items()}

    def loss_and_grads(self, views, labeled, labels):
        """Loss of already augmented images on this replica, seeing the global batch; and its gradients.

        views: tuple of (B, H, W, 3) float images; labeled: (L, H, W, 3) or None; labels: (L,).
        Every replica computes the same global loss, so it is divided by the replica count: the
        optimizer then sums the replicas' gradients into the gradient of the global loss.
        """
        ctx = tf.distribute.get_replica_context()
        replicas = ctx.num_replicas_in_sync
        parts = list(views) + ([labeled] if labeled is not None else [])
        sizes = [tf.shape(p)[0] for p in parts]
        # A per-example loss (a mean over rows that do not interact) needs no other replica's rows: each
        # replica's mean over its equal share, averaged over replicas, is the global mean.
        gather = replicas > 1 and not self.method.per_example
        with tf.GradientTape() as tape:
            # One encoder call over every part (a batch of 750 uses the cores better than three of 250);
            # a lone part skips the concat, which would copy the whole batch.
            images = parts[0] if len(parts) == 1 else tf.concat(parts, axis=0)
            features = tf.split(self._encode(images), sizes, axis=0)
            if gather:
                features = [ctx.all_gather(f, axis=0) for f in features]
            view_features = features[: len(views)]
            labeled_features = features[len(views)] if labeled is not None else None
            if gather and labels is not None:
                # A collective needs a placed tensor: the labels the input pipeline produced may have no
                # device across workers ("destinations can not be empty"); an op of the replica function
                # runs on the replica's device.
                labels = tf.identity(labels)
                labels = ctx.all_gather(labels, axis=0)
            loss, logs = self._loss(view_features, labeled_features, labels)
            scaled = loss / replicas
        grads = tape.gradient(scaled, self.variables)
        if replicas > 1 and self.method.per_example:
            # Every replica reports the global figures, as the gathering methods do: one small all-reduce.
            names = sorted(logs)
            means = ctx.all_reduce(tf.distribute.ReduceOp.MEAN, tf.stack([loss] + [logs[k] for k in names]))
            loss, logs = means[0], {k: means[i + 1] for i, k in enumerate(names)}
        return loss, logs, grads

    def _replica_step(self, unlabeled, labeled, labels, step):
        views, labeled_view = self._augment(unlabeled, labeled, step)
        loss, logs, grads = self.loss_and_grads(
            views, labeled_view, labels if self.method.uses_labeled else None
        )
        self.optimizer.apply(grads, self.variables)
        return loss, logs

    def _distributed_step(self, unlabeled, labeled, labels, step):
        loss, logs = self.strategy.run(self._replica_step, args=(unlabeled, labeled, labels, step))
        # Every replica holds the same global loss: report one of them.
        first = lambda t: self.strategy.experimental_local_results(t)[0]  # noqa: E731
        return first(loss), {k: first(v) for k, v in logs.items()}

    # --- steps and epochs ---------------------------------------------------------------------------

    def step(self, unlabeled, labeled, labels, global_step: int) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        """One distributed training step on one element of the (distributed) training stream."""
        return self._step(unlabeled, labeled, labels, tf.constant(global_step, tf.int64))

    def train_epoch(
        self,
        dataset: tf.data.Dataset | tf.distribute.DistributedDataset,
        epoch: int,
        steps_per_epoch: int,
        on_step: Callable[[int, int, float], None] | None = None,
    ) -> dict[str, float]:
        """One pass over `dataset` (elements: unlabeled, labeled, labels); mean loss and logs of the epoch.

        A plain tf.data.Dataset holds global batches and is split across replicas here. At most
        `steps_per_epoch` steps run (the step counter that seeds augmentation assumes that many).
        on_step(step, steps_per_epoch, loss) runs after every step (step counts from 1) with the loss
        already fetched for the divergence check: no extra device sync.
        """
        dist = dataset
        if isinstance(dataset, tf.data.Dataset):
            dist = self.strategy.experimental_distribute_dataset(dataset)
        totals: dict[str, float] = {}
        steps = 0
        for unlabeled, labeled, labels in dist:
            loss, logs = self.step(unlabeled, labeled, labels, (epoch - 1) * steps_per_epoch + steps)
            loss = float(loss)
            if not math.isfinite(loss):
                raise TrainingDiverged(
                    f"loss is {loss} at epoch {epoch}, step {steps + 1}: training stopped, nothing saved "
                    "(lower train.learning_rate, raise the method's temperature, or try mixed_precision: false)"
                )
            for key, value in {"loss": loss, **{k: float(v) for k, v in logs.items()}}.items():
                totals[key] = totals.get(key, 0.0) + value
            steps += 1
            if on_step is not None:
                on_step(steps, steps_per_epoch, loss)
            if steps == steps_per_epoch:
                break
        return {k: v / max(steps, 1) for k, v in totals.items()}


class Checkpoints:
    """Per-epoch checkpoints in `root/<key>/`, outside DVC's outputs (DVC deletes those first).

    A checkpoint is the weights of every model and the optimizer (weights-EEEEE.npz) plus state.json,
    which names the finished epoch, the weights files kept and the per-epoch history; each is written
    atomically. `keep` > 1 keeps the last epochs' weights too: the workers of a cluster resume from the
    last epoch every one of them saved, which may be one before a worker's own last.
    """

    def __init__(self, root: str | Path, key: str, keep: int = 1):
        self.root = Path(root)
        self.dir = self.root / key
        self.keep = max(1, keep)

    def save(self, epoch: int, history: list[dict], models: dict[str, keras.Model], optimizer) -> None:
        arrays = {}
        for name, model in models.items():
            for i, w in enumerate(model.weights):
                arrays[f"{name}/{i}"] = np.asarray(w)
        for i, v in enumerate(optimizer.variables):
            arrays[f"optimizer/{i}"] = np.asarray(v)
        self.dir.mkdir(parents=True, exist_ok=True)
        weights = f"weights-{epoch:05d}.npz"
        with atomic_path(self.dir / weights, suffix=".npz") as tmp:
            np.savez(tmp, **arrays)
        kept = [k for k in self._state().get("kept", []) if k["epoch"] < epoch][-(self.keep - 1) :]
        kept = (kept if self.keep > 1 else []) + [{"epoch": epoch, "weights": weights}]
        # state.json names the weights files: a crash between the two writes leaves the previous epoch valid.
        state = {"epoch": epoch, "weights": weights, "kept": kept, "history": history}
        write_json(self.dir / "state.json", state)
        names = {k["weights"] for k in kept}
        for old in self.dir.glob("weights-*.npz"):
            if old.name not in names:
                old.unlink(missing_ok=True)

    def _state(self) -> dict:
        try:
            return json.loads((self.dir / "state.json").read_text())
        except (OSError, ValueError):
            return {}

    def epochs(self) -> list[int]:
        """The finished epochs whose weights are on disk, oldest first."""
        state = self._state()
        kept = state.get("kept", [{"epoch": state["epoch"], "weights": state["weights"]}] if state else [])
        return [k["epoch"] for k in kept if (self.dir / k["weights"]).exists()]

    def load(
        self,
        models: dict[str, keras.Model],
        optimizer,
        variables: list,
        epoch: int | None = None,
        strategy: tf.distribute.Strategy | None = None,
    ) -> tuple[int, list[dict]] | None:
        """Restore finished `epoch` (default: the last) into `models` and `optimizer`; None when not on disk.

        The optimizer's slots are built inside `strategy.scope()`: built elsewhere they would not be
        mirrored, and a distributed step could not update them.
        """
        state = self._state()
        kept = {k["epoch"]: k["weights"] for k in state.get("kept", [])}
        if state and not kept:
            kept = {state["epoch"]: state["weights"]}
        epoch = state.get("epoch") if epoch is None else epoch
        if epoch not in kept or not (self.dir / kept[epoch]).exists():
            return None
        with np.load(self.dir / kept[epoch]) as arrays:
            for name, model in models.items():
                for i, w in enumerate(model.weights):
                    w.assign(arrays[f"{name}/{i}"])
            with (strategy or tf.distribute.get_strategy()).scope():
                optimizer.build(variables)
            for i, v in enumerate(optimizer.variables):
                v.assign(arrays[f"optimizer/{i}"])
        return int(epoch), [r for r in state["history"] if r["epoch"] <= epoch]

    def clear(self) -> None:
        """Remove this run's checkpoints, and the folders of a nested key (worker-i's) left empty."""
        shutil.rmtree(self.dir, ignore_errors=True)
        for parent in self.dir.parents:
            if parent == self.root or self.root not in parent.parents:
                break
            try:
                parent.rmdir()
            except OSError:  # not empty: another worker's checkpoints share the folder
                break
