"""The params.yaml schema: one frozen dataclass per section, `Params` for the whole file, and the rules that
span keys (a training schedule that fits its run, a study's axes without repeats).

A section of `methods` named after no registered method is a named configuration of one (`Configuration`):
`method: <registered method>`, that method's params (unset keys at the method's defaults), and optional
`train`, `encoder`, `augment` sub-sections overriding those sections for its runs alone. `method_names`
lists methods and configurations alike; `Params.for_run(name)` gives the params a run of `name` trains with
(semisup.config.merge).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from semisup.core.errors import UserError
from semisup.core.fields import param as _f
from semisup.methods import METHODS


@dataclass(frozen=True)
class DataParams:
    """Where images come from and how they are split and sharded."""

    source: Literal["stl10", "digits", "folder"] = "stl10"
    path: str | None = None  # folder source: one sub-folder per class (+ optional unlabeled/)
    image_size: int = _f(96, ge=32)  # 4 stride-2 valid 3x3 convs need at least 31 pixels
    labeled_per_class: int | None = _f(None, ge=1)  # None: every labeled training image
    test_fraction: float = _f(0.2, gt=0.0, lt=1.0)  # sources without a test split
    num_shards: int = _f(16, ge=1)  # per split, fewer when a split has fewer records
    on_bad_image: Literal["error", "skip"] = "error"  # folder source: unreadable image files
    # Folder source: images with more pixels are refused before decoding (a decompression bomb).
    max_pixels: int = _f(100_000_000, ge=1)


@dataclass(frozen=True)
class TrainParams:
    """What every method's training loop shares."""

    epochs: int = _f(25, ge=1)
    learning_rate: float = _f(1.0e-3, gt=0.0)  # the peak rate: reached after the warmup, then decayed
    optimizer: Literal["adam", "sgd"] = "adam"  # Adam with default settings, or SGD (the papers')
    momentum: float = _f(0.9, ge=0.0, lt=1.0)  # SGD only
    nesterov: bool = True  # SGD only: Nesterov momentum
    # Decoupled (AdamW / SGDW): w -= lr_t * weight_decay * w each step; biases and BatchNorm never decay.
    weight_decay: float = _f(0.0, ge=0.0)
    lr_schedule: Literal["constant", "cosine"] = "constant"  # after the warmup
    warmup_epochs: int = _f(0, ge=0)  # linear warmup from 0 to learning_rate over these epochs
    final_learning_rate: float = _f(0.0, ge=0.0)  # cosine: the rate at the last step
    shuffle_buffer: int = _f(10000, ge=1)
    strategy: Literal["auto", "default", "mirrored", "multiworker"] = "auto"
    # mixed_bfloat16 (bf16 compute, float32 weights and losses); auto: where bf16 is fast (see train.py)
    mixed_precision: bool | Literal["auto"] = "auto"
    jit_compile: bool = False  # XLA for the encoder and the loss (augmentation stays outside)
    deterministic: bool = True  # tf op determinism: the same params give the same numbers twice


@dataclass(frozen=True)
class AugmentParams:
    """Per-image augmentation strengths (SimCLR-style)."""

    flip: bool = True
    crop_scale: tuple[float, float] = _f((0.2, 1.0), gt=0.0, le=1.0, pair=True)
    crop_ratio: tuple[float, float] = _f((0.75, 4.0 / 3.0), gt=0.0, pair=True)
    brightness: float = _f(0.5, ge=0.0)
    contrast: float = _f(0.5, ge=0.0)
    saturation: float = _f(0.5, ge=0.0)
    hue: float = _f(0.2, ge=0.0, le=0.5)


@dataclass(frozen=True)
class EncoderParams:
    """The convolutional encoder: `depth` x Conv2D(filters, kernel, stride, padding) -> pooling -> Dense;
    and the projection head the losses see during training (semisup.model.projection), never part of the
    saved encoder."""

    filters: int = _f(128, ge=1)
    depth: int = _f(4, ge=1)
    kernel_size: int = _f(3, ge=1)
    stride: int = _f(2, ge=1)
    embedding_dim: int = _f(128, ge=1)
    padding: Literal["valid", "same"] = "valid"  # same: any image side survives the convolutions
    # flatten: the reference (one image size); average: GlobalAveragePooling2D, any image size (multi-crop)
    pooling: Literal["flatten", "average"] = "flatten"
    projection_layers: int = _f(0, ge=0)  # Dense layers of the head, BatchNorm + ReLU between; 0 = no head
    projection_hidden: int = _f(512, ge=1)  # width of the hidden layers
    projection_dim: int = _f(128, ge=1)  # width of the last layer, what the loss sees


# One field per method of the registry, in its order: `methods.<name>` in params.yaml.
MethodsParams = dataclasses.make_dataclass(
    "MethodsParams",
    [(m.name, m.params, field(default_factory=m.params)) for m in METHODS.values()],
    frozen=True,
)
MethodsParams.__doc__ = "One params section per method (semisup.methods.METHODS)."


@dataclass(frozen=True)
class KnnParams:
    """k-nearest-neighbour evaluation on cosine similarities."""

    k: tuple[int, ...] = _f((20, 200), ge=1, nonempty=True)
    temperature: float = _f(0.07, gt=0.0)  # weighted vote: exp(sim / T)
    monitor_every: int = _f(1, ge=0)  # epochs between kNN scores while training; 0 = never
    query_chunk: int = _f(1024, ge=1)


@dataclass(frozen=True)
class EmbedParams:
    batch_size: int = _f(500, ge=1)


@dataclass(frozen=True)
class StudyParams:
    """The study's axes: one run per method x label budget x seed (see docs/studies.md, "The study")."""

    seeds: tuple[int, ...] = _f((0,), ge=0, lt=2**32, nonempty=True)  # label subset, init, augmentation
    # Labels per class of each run, drawn from the labeled split; "all" (or null): the whole labeled split.
    labeled_per_class: tuple[int | Literal["all"] | None, ...] = _f(("all",), nonempty=True)


@dataclass(frozen=True)
class LinearParams:
    """Linear probe: multinomial logistic regression on the frozen, L2-normalised features."""

    c_grid: tuple[float, ...] = _f((0.1, 1.0, 10.0, 100.0), gt=0.0, nonempty=True)  # inverse L2 strengths
    folds: int = _f(5, ge=2)  # stratified CV folds on the labeled subset (fewer when a class has fewer)
    fixed_c: float = _f(10.0, gt=0.0)  # C when some class has a single labeled image: no CV possible
    max_iter: int = _f(1000, ge=1)


# The sections a configuration may override for its own runs (each key given replaces the global one).
OVERRIDABLE = {"train": TrainParams, "encoder": EncoderParams, "augment": AugmentParams}
# A configuration's name names its runs (<name>-<budget>-<seed>), stage items and params keys (methods.<name>).
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Configuration:
    """A named configuration of a registered method (params.yaml: a section `methods.<name>` whose name is no
    method's): its method, its params (keys it does not set at the method's dataclass defaults, not at
    `methods.<method>`'s values), and the keys of train, encoder and augment it overrides for its runs."""

    name: str
    method: str
    params: Any  # METHODS[method].params
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # section -> {key: value}


@dataclass(frozen=True)
class Params:
    seed: int = _f(0, ge=0, le=2**32 - 1)  # NumPy and Keras seed generators take 32-bit seeds
    # The methods and configurations the pipeline runs (one run each per budget and seed).
    method_names: tuple[str, ...] = _f(tuple(METHODS), nonempty=True)
    data: DataParams = field(default_factory=DataParams)
    train: TrainParams = field(default_factory=TrainParams)
    augment: AugmentParams = field(default_factory=AugmentParams)
    encoder: EncoderParams = field(default_factory=EncoderParams)
    methods: MethodsParams = field(default_factory=MethodsParams)
    knn: KnnParams = field(default_factory=KnnParams)
    embed: EmbedParams = field(default_factory=EmbedParams)
    study: StudyParams = field(default_factory=StudyParams)
    linear: LinearParams = field(default_factory=LinearParams)
    # The sections of `methods` that name no method: configurations, by name (params.yaml order).
    configurations: Mapping[str, Configuration] = field(default_factory=dict)

    def method_of(self, name: str) -> str:
        """The registered method that `name` (a method or a configuration) runs."""
        if name in METHODS:
            return name
        if name in self.configurations:
            return self.configurations[name].method
        configured = ", ".join(self.configurations) or "none"
        raise UserError(
            f"method: {name!r} is not a method ({', '.join(METHODS)}) nor a configuration of params.yaml's "
            f"methods section ({configured})"
        )

    def method(self, name: str) -> Any:
        """The params of method or configuration `name` (its section of `methods`)."""
        if name in self.configurations:
            return self.configurations[name].params
        return getattr(self.methods, self.method_of(name))

    def run_methods(self) -> dict[str, str]:
        """Every name a run can train, each method and each configuration -> the method it runs."""
        return {name: name for name in METHODS} | {n: c.method for n, c in self.configurations.items()}

    def for_run(self, name: str) -> Params:
        """The params a run of `name` trains with: for a configuration, its params in place of its method's
        section and its train, encoder and augment keys in place of the global ones; a method's: these
        (semisup.config.merge.run_params)."""
        from semisup.config.merge import run_params  # here: merge builds on this module's dataclasses

        return run_params(self, name)


def check_train(train: TrainParams, key: str) -> None:
    """The schedule fits the run: the warmup ends before the last epoch, and cosine decays, never grows."""
    if train.warmup_epochs >= train.epochs and train.warmup_epochs > 0:
        raise UserError(
            f"{key}.warmup_epochs: {train.warmup_epochs} leaves no epoch after the warmup "
            f"({key}.epochs: {train.epochs}): lower it below {key}.epochs"
        )
    if train.final_learning_rate > train.learning_rate:
        raise UserError(
            f"{key}.final_learning_rate: {train.final_learning_rate} is above {key}.learning_rate "
            f"({train.learning_rate}): the cosine schedule decays to it; lower it"
        )


def check_study(study: StudyParams) -> None:
    """Budgets are positive or all, and no axis repeats a value (DVC's matrix would repeat a stage name)."""
    for i, budget in enumerate(study.labeled_per_class):
        if isinstance(budget, int) and budget < 1:
            raise UserError(f"study.labeled_per_class[{i}]: {budget} is out of range (must be >= 1, or all)")
    budgets = ["all" if b is None else b for b in study.labeled_per_class]
    for key, values in (("seeds", list(study.seeds)), ("labeled_per_class", budgets)):
        repeated = sorted({str(v) for v in values if values.count(v) > 1})
        if repeated:
            raise UserError(f"study.{key}: {', '.join(repeated)} listed twice: list each value once")


def to_dict(obj: Any) -> Any:
    """A dataclass tree as plain dicts and lists, for fingerprints and logs (Params: as params.yaml has it,
    the configurations in `methods`)."""
    if isinstance(obj, Params):
        out = {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        out["methods"].update(out.pop("configurations"))
        return out
    if isinstance(obj, Configuration):
        sections = {s: {k: to_dict(v) for k, v in keys.items()} for s, keys in obj.overrides.items()}
        return {"method": obj.method, **to_dict(obj.params), **sections}
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return [to_dict(v) for v in obj]
    return obj
