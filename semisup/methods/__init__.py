"""The methods' registry, the one place that names them: `METHODS`, each with its params section.

A method is a module `semisup/methods/<name>.py` with a `compute(LossInputs, params) -> (loss, logs)`, an
entry in `METHODS` (what it encodes, its params dataclass) and a section `methods.<name>` in params.yaml.
Everything else (params validation, the stages' choices, the demo and study profiles, dvc.yaml's deps)
derives from this registry. A params section may also hold keys the trainer and the reader act on for
any method (PAWS's today): `support_views` (augmented views of the labeled batch, labels repeated),
`multicrop` with `crop_size(image_size)` and `multicrop_scale` (small crops of the unlabeled images,
`LossInputs.crops`), and `supports_per_class` / `classes_per_batch` (class-stratified labeled batches). The registry imports no method module and no TensorFlow: the trainer loads a
method's module by name when it trains it (`semisup.methods.load.loss_fn`), so a run's code is its own
method's module, and dvc.yaml reruns only the runs whose code changed. A named configuration of a method
(another section of params.yaml's methods, semisup.config.Configuration) runs its method's entry and module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from semisup.fields import param

if TYPE_CHECKING:
    import tensorflow as tf


@dataclass(frozen=True)
class LossInputs:
    """Encoded batch handed to a loss: unlabeled views (B, D) each, labeled features (L, D) or logits (L, C)."""

    views: tuple[tf.Tensor, ...] = ()  # embeddings of the unlabeled views; same images in the same order
    labeled: tf.Tensor | None = None  # labeled embeddings (L, D); for CrossEntropy the head logits (L, C)
    labels: tf.Tensor | None = None  # (L,) integer class ids
    num_classes: int = 0
    # Embeddings (B, D) of the small crops of the unlabeled images (multi-crop), same images in the same
    # order as the views; empty unless the method's params ask for `multicrop` > 0.
    crops: tuple[tf.Tensor, ...] = ()


LossFn = Callable[[LossInputs, Any], tuple["tf.Tensor", dict[str, "tf.Tensor"]]]


@dataclass(frozen=True)
class Method:
    """A method's name, params section and the parts of a batch it needs encoded."""

    name: str
    unlabeled_views: int  # augmented views of the unlabeled batch to encode: 0 or 2
    uses_labeled: bool  # whether the labeled batch is encoded at all
    has_head: bool  # encoder -> ReLU -> Dense(classes); `labeled` then holds logits
    params: type | None = None  # the dataclass of its params.yaml section, methods.<name>
    # (inputs, params section) -> (scalar float32 loss, float32 scalar logs). None: the `compute` of the
    # module semisup/methods/<name>.py, imported when the method trains (a loss given here is for tests).
    compute: LossFn | None = None
    # The loss and logs are means over labeled rows that do not interact (no other row in the formula):
    # under several replicas each computes them on its own rows and the replicas average them, with no
    # gather of features or labels.
    per_example: bool = False
    # The field of its params section that names the last epoch whose labeled batch is encoded (a null
    # value: every epoch); None: the method has no such switch. After it the loss gets no labeled batch.
    labeled_until: str | None = None

    def encodes_labeled(self, params: Any, epoch: int) -> bool:
        """Whether epoch `epoch` (counted from 1) encodes the labeled batch, with `params` its section."""
        if not self.uses_labeled:
            return False
        last = getattr(params, self.labeled_until) if self.labeled_until else None
        return last is None or epoch <= last


def _static_dim(t: Any, axis: int) -> int | None:
    shape = t.shape
    return shape[axis] if shape.rank is not None and shape.rank > axis else None


def check_inputs(method: Method, inputs: LossInputs) -> None:
    """Raise ValueError, at trace time, unless `inputs` holds exactly the encodings `method` declares."""
    name = method.name
    if len(inputs.views) != method.unlabeled_views:
        raise ValueError(f"{name}: takes {method.unlabeled_views} unlabeled views, got {len(inputs.views)}")
    for i, view in enumerate(inputs.views):
        if view.shape.rank != 2:
            raise ValueError(f"{name}: unlabeled view {i} must be (batch, dim), got shape {view.shape}")
    if inputs.views and not inputs.views[0].shape.is_compatible_with(inputs.views[-1].shape):
        raise ValueError(f"{name}: views have different shapes {[v.shape for v in inputs.views]}")
    for i, crop in enumerate(inputs.crops):
        if not inputs.views or not crop.shape.is_compatible_with(inputs.views[0].shape):
            raise ValueError(f"{name}: small crop {i} must be shaped as the views, got shape {crop.shape}")
    if not method.uses_labeled:
        if inputs.labeled is not None:
            raise ValueError(f"{name}: does not use the labeled batch; do not encode it")
        return
    if method.labeled_until and inputs.labeled is None and inputs.labels is None:
        return  # an epoch after the method switched its labeled batch off
    if inputs.labeled is None or inputs.labels is None:
        raise ValueError(f"{name}: needs the labeled batch and its labels")
    if inputs.labeled.shape.rank != 2 or inputs.labels.shape.rank != 1:
        raise ValueError(
            f"{name}: labeled must be (L, dim) and labels (L,), got {inputs.labeled.shape} and {inputs.labels.shape}"
        )
    n_feat, n_lab = _static_dim(inputs.labeled, 0), _static_dim(inputs.labels, 0)
    if n_feat is not None and n_lab is not None and n_feat != n_lab:
        raise ValueError(f"{name}: {n_feat} labeled rows but {n_lab} labels")
    width = _static_dim(inputs.labeled, 1)
    if method.has_head and inputs.num_classes and width is not None and width != inputs.num_classes:
        raise ValueError(f"{name}: head logits have {width} columns but num_classes is {inputs.num_classes}")


# --- each method's params section (params.yaml: methods.<name>) --------------------------------------


@dataclass(frozen=True)
class CrossEntropyParams:
    """Supervised baseline: softmax cross-entropy of a ReLU -> Dense(classes) head."""

    unlabeled_batch: int = param(250, ge=1)  # sets the epoch length; never encoded
    labeled_batch: int = param(250, ge=1)


@dataclass(frozen=True)
class InfoNCEParams:
    """SimCLR without a projection head."""

    unlabeled_batch: int = param(500, ge=2)
    labeled_batch: int = param(25, ge=1)  # drawn as in the reference, never encoded
    temperature: float = param(0.1, gt=0.0)
    symmetric: bool = False  # NT-Xent with 2N-2 negatives instead of one direction


@dataclass(frozen=True)
class SuNCEtParams:
    """InfoNCE plus supervised soft nearest-neighbour contrast on the labeled batch."""

    unlabeled_batch: int = param(250, ge=2)
    labeled_batch: int = param(250, ge=2)
    temperature: float = param(0.1, gt=0.0)
    supervised_weight: float = param(1.0, ge=0.0)
    symmetric: bool = False
    # The last epoch with the supervised term (the paper switches it off); after it, plain InfoNCE and the
    # labeled batch is no longer encoded. None: every epoch.
    supervised_epochs: int | None = param(None, ge=0)


@dataclass(frozen=True)
class PAWSParams:
    """Non-parametric pseudo-labels from a labeled support batch."""

    unlabeled_batch: int = param(250, ge=1)
    labeled_batch: int = param(250, ge=1)
    temperature: float = param(0.1, gt=0.0)
    sharpen_temperature: float = param(0.25, gt=0.0)
    me_max: bool = True  # mean-entropy maximisation term
    label_smoothing: float = param(0.0, ge=0.0, lt=1.0)
    # The paper's options, off by default (docs/parameters.md, "PAWS as the paper trains it").
    # Class-stratified supports: each step's labeled batch holds supports_per_class images of each of
    # classes_per_batch classes (null: every class); labeled_batch must then equal their product.
    supports_per_class: int | None = param(None, ge=1)  # null: a random labeled batch (the reference)
    classes_per_batch: int | None = param(None, ge=1)  # null: every class, every step
    support_views: int = param(1, ge=1)  # augmented views of each support, its label repeated per view
    multicrop: int = param(0, ge=0)  # small crops per unlabeled image (needs encoder.pooling: average)
    multicrop_size: int | None = param(None, ge=1)  # pixels; null: 3/7 of data.image_size (PAWS: 96 of 224)
    multicrop_scale: tuple[float, float] = param((0.05, 0.3), gt=0.0, le=1.0, pair=True)

    def crop_size(self, image_size: int) -> int:
        """The small crops' side in pixels for images of `image_size`: multicrop_size, or 3/7 of it."""
        return self.multicrop_size or max(1, round(image_size * 3 / 7))


# --- the registry ---------------------------------------------------------------------------------------

METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "crossentropy",
            unlabeled_views=0,
            uses_labeled=True,
            has_head=True,
            params=CrossEntropyParams,
            per_example=True,
        ),
        Method("infonce", unlabeled_views=2, uses_labeled=False, has_head=False, params=InfoNCEParams),
        Method(
            "suncet",
            unlabeled_views=2,
            uses_labeled=True,
            has_head=False,
            params=SuNCEtParams,
            labeled_until="supervised_epochs",
        ),
        Method("paws", unlabeled_views=2, uses_labeled=True, has_head=False, params=PAWSParams),
    )
}

__all__ = ["METHODS", "LossFn", "LossInputs", "Method", "check_inputs"]
