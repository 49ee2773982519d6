"""The trainer: one distributed train step for every method, and an epoch's training stream.

A method declares what it encodes (semisup.methods.Method); the trainer augments exactly those images,
runs them through the encoder in one call (a second one for multi-crop's small crops), gathers the
features of every replica so the loss sees the global batch, passes them through the projection head (if
any; its BatchNorm per resolution group: the views and labeled rows, the crops apart) and applies the
optimizer. A method's params may ask for more views (PAWS's `support_views`, `multicrop`): each comes from
its own seed stream, so the reference's views stay as they are (multi-crop raises their crop scale, as
the paper does). Randomness comes from stateless ops seeded by (seed, step), and the input order of epoch
e from (seed, e), so a resumed run repeats the uninterrupted one step for step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from semisup.core.errors import UserError
from semisup.data import readers
from semisup.methods import LossInputs, Method, ViewOptions, view_options
from semisup.methods.load import loss_fn
from semisup.model import augment as aug


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


def _to_f32(x: tf.Tensor) -> tf.Tensor:
    return tf.cast(x, tf.float32)


class Trainer:
    """Trains `encoder` (+ `projector`, the projection head, if given; + `head` for methods that have one)
    with `method`'s loss under `strategy`. The loss sees the projector's output; CrossEntropy's head sits
    on top of it (encoder -> projector -> ReLU -> Dense(classes)).

    Build the models and the optimizer inside `strategy.scope()` before constructing the trainer.
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
        projector: keras.Model | None = None,
        views: ViewOptions | None = None,
    ):
        if method.has_head and head is None:
            raise ValueError(f"method {method.name} needs a head")
        self.method = method
        self.method_params = method_params
        self.encoder = encoder
        self.projector = projector
        self.head = head if method.has_head else None
        # The projector's BatchNorm makes rows interact: its statistics span the global batch, so even a
        # per-example loss then gathers every replica's features (see loss_and_grads).
        self.per_example = method.per_example and projector is None
        self.optimizer = optimizer
        self.augment_kwargs = dict(augment_kwargs)
        self.num_classes = num_classes
        self.seed = int(seed)
        self.strategy = strategy or tf.distribute.get_strategy()
        self.jit_compile = jit_compile
        self.compute = loss_fn(method)  # imports the method's module by name
        # The view options of the params section (PAWS's today; absent, the reference's: one labeled view,
        # no crops); a resolved run passes its own (semisup.config.RunSpec.views).
        self.views = view_options(method_params) if views is None else views
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
        """The trainable variables: the encoder's, then the projector's, then the head's."""
        parts = (self.encoder, self.projector, self.head)
        return [v for model in parts if model is not None for v in model.trainable_variables]

    # --- replica-local pieces -------------------------------------------------------------------

    def _augment(self, unlabeled: tf.Tensor, labeled: tf.Tensor, step: tf.Tensor, encode_labeled: bool):
        """The views this method encodes: (unlabeled views, labeled views, small crops), tuples; no labeled
        view when the labeled batch is not encoded (never used, or switched off for this epoch).

        Seeded by (seed, step) and each image's position in the global batch, never by the replica: the
        replica's rows are part (replica id, replicas) of the global batch, and `augment` draws every
        image's parameters for the whole global batch, so 1, 2 or N replicas see the same views.
        The labeled batch has `support_views` views (the first from the reference's seed), and each
        unlabeled image `multicrop` small crops (size and area scales: the view options' crop_settings
        for the image size). The views do not depend on whether the labeled batch is encoded: each part has
        its own seed.
        """
        ctx = tf.distribute.get_replica_context()
        part = (ctx.replica_id_in_sync_group, ctx.num_replicas_in_sync)
        seeds = aug.step_seeds(self.seed, step)
        crop = self.views.crops(int(unlabeled.shape[1]))
        # With multi-crop the large views and the supports take the preset's area scale (the official code
        # raises its crop_scale with multicrop > 0); the seeds stay the reference's.
        large = self.augment_kwargs | ({"crop_scale": crop.global_scale} if crop else {})
        views = tuple(
            aug.augment(unlabeled, seeds[i], part=part, **large) for i in range(self.method.unlabeled_views)
        )
        labeled_views: tuple[tf.Tensor, ...] = ()
        if encode_labeled:
            labeled_views = (aug.augment(labeled, seeds[2], part=part, **large),)
            more = self.views.support_views - 1
            if more > 0:
                extra = aug.step_seeds(self.seed, step, more, aug.SUPPORT_VIEWS)
                labeled_views += tuple(
                    aug.augment(labeled, extra[i], part=part, **large) for i in range(more)
                )
        crops: tuple[tf.Tensor, ...] = ()
        if crop:
            small = self.augment_kwargs | {"crop_scale": crop.scale}
            seeds = aug.step_seeds(self.seed, step, crop.count, aug.SMALL_CROPS)
            crops = tuple(
                aug.augment(unlabeled, seeds[k], part=part, size=crop.size, **small)
                for k in range(crop.count)
            )
        return views, labeled_views, crops

    def _encode_fn(self, images: tf.Tensor) -> tf.Tensor:
        return _to_f32(self.encoder(images, training=True))

    def _project(self, views, labeled, crops):
        """The projection head per resolution group, as the official forward pass runs it (src/resnet.py,
        `forward`: consecutive inputs of one size through the network together): the views with the
        labeled rows, then the small crops. BatchNorm's statistics span a group of the global batch, the
        same on any replica count; its moving statistics update once per group, as torch's do.
        `multicrop_batchnorm: joint` puts every row in one group."""
        large = list(views) + ([labeled] if labeled is not None else [])
        if self.views.multicrop_batchnorm == "joint" or not crops:
            groups = [large + list(crops)]
        else:
            groups = [large, list(crops)]
        out = [part for group in groups for part in self._project_group(group)]
        n = len(views)
        projected_labeled = out[n] if labeled is not None else None
        return tuple(out[:n]), projected_labeled, tuple(out[n + (labeled is not None) :])

    def _project_group(self, parts: list[tf.Tensor]) -> list[tf.Tensor]:
        """The head over `parts` in one call (one set of BatchNorm statistics): (N_i, D) each -> (N_i, P) each."""
        sizes = [tf.shape(p)[0] for p in parts]
        joined = parts[0] if len(parts) == 1 else tf.concat(parts, axis=0)
        return tf.split(_to_f32(self.projector(joined, training=True)), sizes, axis=0)

    def _loss_fn(self, views, labeled, labels, crops=()):
        if self.projector is not None:
            views, labeled, crops = self._project(views, labeled, crops)
        logits = labeled
        if self.head is not None:
            logits = _to_f32(self.head(labeled, training=True))
        inputs = LossInputs(
            views=tuple(views),
            labeled=logits,
            labels=labels,
            num_classes=self.num_classes,
            crops=tuple(crops),
        )
        loss, logs = self.compute(inputs, self.method_params)
        return tf.cast(loss, tf.float32), {k: tf.cast(v, tf.float32) for k, v in logs.items()}

    def loss_and_grads(self, views, labeled, labels, crops=()):
        """Loss of already augmented images on this replica, seeing the global batch; and its gradients.

        views: tuple of (B, H, W, 3) float images; labeled: (L, H, W, 3), a tuple of such views of the
        same images, or None; labels: (L,); crops: tuple of (B, h, w, 3) small crops of the views' images.
        The loss sees the labeled views' features one view after the other, (V x L_global, D), with
        the labels repeated to match. Every replica computes the same global loss, so it is divided by
        the replica count: the optimizer then sums the replicas' gradients into the gradient of the
        global loss.
        """
        ctx = tf.distribute.get_replica_context()
        replicas = ctx.num_replicas_in_sync
        labeled_views = (
            () if labeled is None else tuple(labeled) if isinstance(labeled, (tuple, list)) else (labeled,)
        )
        parts = list(views) + list(labeled_views)
        sizes = [tf.shape(p)[0] for p in parts]
        # A per-example loss (a mean over rows that do not interact) needs no other replica's rows: each
        # replica's mean over its equal share, averaged over replicas, is the global mean.
        gather = replicas > 1 and not self.per_example
        with tf.GradientTape() as tape:
            # One encoder call over every part (a batch of 750 uses the cores better than three of 250);
            # a lone part skips the concat, which would copy the whole batch.
            images = parts[0] if len(parts) == 1 else tf.concat(parts, axis=0)
            features = tf.split(self._encode(images), sizes, axis=0)
            # Small crops have another size: their own encoder call.
            crop_features = []
            if crops:
                small = crops[0] if len(crops) == 1 else tf.concat(list(crops), axis=0)
                crop_features = tf.split(self._encode(small), [tf.shape(c)[0] for c in crops], axis=0)
            if gather:
                features = [ctx.all_gather(f, axis=0) for f in features]
                crop_features = [ctx.all_gather(f, axis=0) for f in crop_features]
            view_features = features[: len(views)]
            labeled_features = None
            if labeled_views:
                per_view = features[len(views) :]
                labeled_features = per_view[0] if len(per_view) == 1 else tf.concat(per_view, axis=0)
            if gather and labels is not None:
                # A collective needs a placed tensor: the labels the input pipeline produced may have no
                # device across workers ("destinations can not be empty"); an op of the replica function
                # runs on the replica's device.
                labels = tf.identity(labels)
                labels = ctx.all_gather(labels, axis=0)
            if labels is not None and len(labeled_views) > 1:
                labels = tf.tile(labels, [len(labeled_views)])  # the labels of each view, in view order
            loss, logs = self._loss(view_features, labeled_features, labels, crop_features)
            scaled = loss / replicas
        grads = tape.gradient(scaled, self.variables)
        if replicas > 1 and self.per_example:
            # Every replica reports the global figures, as the gathering methods do: one small all-reduce.
            names = sorted(logs)
            means = ctx.all_reduce(tf.distribute.ReduceOp.MEAN, tf.stack([loss] + [logs[k] for k in names]))
            loss, logs = means[0], {k: means[i + 1] for i, k in enumerate(names)}
        return loss, logs, grads

    def _replica_step(self, unlabeled, labeled, labels, step, encode_labeled):
        views, labeled_views, crops = self._augment(unlabeled, labeled, step, encode_labeled)
        loss, logs, grads = self.loss_and_grads(
            views, labeled_views or None, labels if encode_labeled else None, crops
        )
        self.optimizer.apply(grads, self.variables)
        return loss, logs

    def _distributed_step(self, unlabeled, labeled, labels, step, encode_labeled):
        # encode_labeled is a Python bool: one trace per value (two for a method that switches it off).
        args = (unlabeled, labeled, labels, step, encode_labeled)
        loss, logs = self.strategy.run(self._replica_step, args=args)
        # Every replica holds the same global loss: report one of them.
        first = lambda t: self.strategy.experimental_local_results(t)[0]  # noqa: E731
        return first(loss), {k: first(v) for k, v in logs.items()}

    # --- steps and epochs ---------------------------------------------------------------------------

    def step(
        self, unlabeled, labeled, labels, global_step: int, encode_labeled: bool | None = None
    ) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        """One distributed training step on one element of the (distributed) training stream.

        encode_labeled: whether the labeled batch is encoded (default: whether the method uses it at all);
        the stream holds it either way, so the input's random draws do not depend on it."""
        if encode_labeled is None:
            encode_labeled = self.method.uses_labeled
        step = tf.constant(global_step, tf.int64)
        return self._step(unlabeled, labeled, labels, step, bool(encode_labeled))

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
        already fetched for the divergence check: no extra device sync. Whether the epoch encodes the labeled
        batch is the method's call (Method.encodes_labeled: SuNCEt switches it off after some epochs).
        """
        encode_labeled = self.method.encodes_labeled(self.method_params, epoch)
        dist = dataset
        if isinstance(dataset, tf.data.Dataset):
            dist = self.strategy.experimental_distribute_dataset(dataset)
        totals: dict[str, float] = {}
        steps = 0
        for unlabeled, labeled, labels in dist:
            global_step = (epoch - 1) * steps_per_epoch + steps
            loss, logs = self.step(unlabeled, labeled, labels, global_step, encode_labeled)
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
    views: ViewOptions | None = None,
) -> tuple[tf.distribute.DistributedDataset, int]:
    """Epoch `epoch`'s training stream, one input pipeline per worker; -> (dataset, global steps).

    Every pipeline reads the same global batches and keeps its replicas' rows (see readers.train_dataset).
    Only the parts the method encodes are read: CrossEntropy reads no unlabeled images (they only set
    the epoch length), InfoNCE no labeled ones. views: the run's view options (None: the params section's).
    """
    views = view_options(method_params) if views is None else views

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
            views=views,
        )

    replicas = strategy.num_replicas_in_sync
    # Checks the batch sizes against the replica count before any pipeline starts (UserError).
    steps = make(tf.distribute.InputContext(1, 0, replicas) if replicas > 1 else None)[1]
    return strategy.distribute_datasets_from_function(lambda context: make(context)[0]), steps
