"""The methods' registry, the one place that names them: `METHODS`, each with its params section.

A method is a module `semisup/methods/<name>.py` with a `compute(LossInputs, params) -> (loss, logs)`, an
entry in `METHODS` (what it encodes, its params dataclass) and a section `methods.<name>` in params.yaml.
Everything else (params validation, the stages' choices, the demo and study profiles, dvc.yaml's deps)
derives from this registry. A params section may also hold keys the trainer and the reader act on for
any method (PAWS's today), read through one typed record, `ViewOptions` (`view_options(section)`):
`support_views` (augmented views of the labeled batch, labels repeated), `multicrop` with
`crop_settings(image_size)` (small crops of the unlabeled images, `LossInputs.crops`, their size and scales
from the paper's preset for the image size; `multicrop_batchnorm`, how the projection head's BatchNorm
groups them), and `supports_per_class` / `classes_per_batch` (class-stratified labeled batches). The registry imports no method module and no TensorFlow: the trainer loads a method's module by
name when it trains it (`semisup.methods.load.loss_fn`), so a run's code is its own method's module, and
dvc.yaml reruns only the runs whose code changed. A named configuration of a method (another section of
params.yaml's methods, semisup.config.Configuration) runs its method's entry and module.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from semisup.core.fields import param

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
    # Augmented views of each labeled image, its label repeated per view (the paper's supervised_views);
    # few labels (semisup.training.few_labels): 2 where a class has a single image, so that it has a partner.
    support_views: int = param(1, ge=1)
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
    # The paper's multi-crop setting to follow: auto picks it from data.image_size (auto_preset); the three
    # keys after it, null, take the preset's values, a value given wins.
    multicrop_preset: Literal["auto", "cifar10", "imagenet"] = "auto"
    multicrop_size: int | None = param(None, ge=1)  # pixels; null: the preset's, scaled to the image side
    multicrop_scale: tuple[float, float] | None = param(None, gt=0.0, le=1.0, pair=True)  # small crops' area
    # The two large views' and the supports' area fraction while multicrop > 0 (in place of
    # augment.crop_scale, as the official code raises it); null: the preset's.
    multicrop_global_scale: tuple[float, float] | None = param(None, gt=0.0, le=1.0, pair=True)
    # The projection head's BatchNorm with small crops: per_resolution (the paper's: the views with the
    # supports, the crops apart) or joint (every row at once, this project's before issue 27).
    multicrop_batchnorm: Literal["per_resolution", "joint"] = "per_resolution"

    def multicrop_settings(self, image_size: int) -> CropSettings:
        """The small crops and the large views' scale for images of side `image_size` (ViewOptions.crop_settings)."""
        return view_options(self).crop_settings(image_size)


@dataclass(frozen=True)
class MulticropPreset:
    """One data set's multi-crop setting in the official PAWS code (facebookresearch/suncet)."""

    side: int  # the data set's image side in pixels, the one `size` is written for
    size: int  # the small crops' side in pixels at `side`
    scale: tuple[float, float]  # the small crops' area fraction (RandomResizedCrop's scale)
    global_scale: tuple[float, float]  # the large views' area fraction when multi-crop is on


# src/paws_train.py, main(): `if 'cifar10' in dataset_name:` crop_scale = (0.75, 1.0) if multicrop > 0,
# mc_scale = (0.3, 0.75), mc_size = 18, for CIFAR10's 32-pixel images (src/data_manager.py,
# _make_cifar10_transforms: RandomResizedCrop(size=32)); `else:` (ImageNet) crop_scale = (0.14, 1.0) if
# multicrop > 0, mc_scale = (0.05, 0.14), mc_size = 96, for 224-pixel views (_make_imgnt_transforms:
# RandomResizedCrop(size=224)). configs/paws/cifar10_train.yaml and imgnt_train.yaml set multicrop: 6.
MULTICROP_PRESETS: dict[str, MulticropPreset] = {
    "cifar10": MulticropPreset(side=32, size=18, scale=(0.3, 0.75), global_scale=(0.75, 1.0)),
    "imagenet": MulticropPreset(side=224, size=96, scale=(0.05, 0.14), global_scale=(0.14, 1.0)),
}
# auto: CIFAR10's setting below this side, ImageNet's from it: the geometric mean of their sides
# (sqrt(32 x 224) = 84.7), so each image size gets the setting of the data set nearer to it in ratio
# (32 px: CIFAR10's; STL10's 96 px, 2.3 times smaller than ImageNet's 224 and 3 times CIFAR10's: ImageNet's).
AUTO_PRESET_SIDE = math.sqrt(MULTICROP_PRESETS["cifar10"].side * MULTICROP_PRESETS["imagenet"].side)


def auto_preset(image_size: int) -> str:
    """The preset `multicrop_preset: auto` picks for images of side `image_size`: cifar10 up to 84 px."""
    return "cifar10" if image_size < AUTO_PRESET_SIDE else "imagenet"


@dataclass(frozen=True)
class CropSettings:
    """Multi-crop as a run trains it, resolved for its image size (PAWSParams.multicrop_settings)."""

    preset: str  # the preset the unset values came from
    count: int  # small crops per unlabeled image
    size: int  # their side in pixels
    scale: tuple[float, float]  # their area fraction
    global_scale: tuple[float, float]  # the large views' and supports' area fraction (count > 0)


# --- the view options any method's section may hold ---------------------------------------------------


@dataclass(frozen=True)
class ViewOptions:
    """The views a run encodes beyond the reference's, as its method's params section sets them (PAWS's all,
    SuNCEt's support_views): read this one way by the trainer, the reader, preflight, the few-labels rule
    and the profiles. A section without a key has the reference's value: one labeled view, no small crops,
    random labeled batches (`view_options` builds it)."""

    support_views: int = 1  # augmented views of each labeled image, its label repeated per view
    multicrop: int = 0  # small crops per unlabeled image
    multicrop_preset: Literal["auto", "cifar10", "imagenet"] = "auto"
    multicrop_size: int | None = None  # null: the preset's, scaled to the image side
    multicrop_scale: tuple[float, float] | None = None  # the small crops' area fraction; null: the preset's
    multicrop_global_scale: tuple[float, float] | None = (
        None  # the large views' with crops; null: the preset's
    )
    multicrop_batchnorm: Literal["per_resolution", "joint"] = "per_resolution"  # the head's BatchNorm groups
    supports_per_class: int | None = None  # class-stratified labeled batches; null: a random labeled batch
    classes_per_batch: int | None = None  # with supports_per_class; null: every class, every step

    @property
    def stratified(self) -> bool:
        """Whether the labeled batches are class-stratified (supports_per_class set)."""
        return self.supports_per_class is not None

    def crop_settings(self, image_size: int) -> CropSettings:
        """The small crops and the large views' scale for images of side `image_size`: the preset's values
        (the preset picked by name, or by auto_preset), each one given in the params instead winning."""
        name = auto_preset(image_size) if self.multicrop_preset == "auto" else self.multicrop_preset
        preset = MULTICROP_PRESETS[name]
        return CropSettings(
            preset=name,
            count=self.multicrop,
            size=self.multicrop_size or max(1, round(preset.size * image_size / preset.side)),
            scale=self.multicrop_scale or preset.scale,
            global_scale=self.multicrop_global_scale or preset.global_scale,
        )

    def crops(self, image_size: int) -> CropSettings | None:
        """crop_settings(image_size) when the run has small crops (multicrop > 0); None otherwise."""
        return self.crop_settings(image_size) if self.multicrop else None


VIEW_KEYS = tuple(f.name for f in dataclasses.fields(ViewOptions))


def view_options(params: Any) -> ViewOptions:
    """The view options of a method's (or configuration's) params section, a dataclass: the keys it has, the
    reference's value for the keys it lacks (every key for no section, None). The one place that asks a
    section which options it holds."""
    own = {f.name for f in dataclasses.fields(params)} if params is not None else set()
    return ViewOptions(**{key: getattr(params, key) for key in VIEW_KEYS if key in own})


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

__all__ = ["METHODS", "LossFn", "LossInputs", "Method", "ViewOptions", "check_inputs", "view_options"]
