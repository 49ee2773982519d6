"""params.yaml -> frozen, validated dataclasses.

Every mistake (unknown key, wrong type, value out of range) becomes a `UserError`
whose one-line message names the key, the value and what is allowed, before any
compute starts. Only `stages/` call `load_params`; the library takes values.

A section of `methods` named after no registered method is a named configuration of one (`Configuration`):
`method: <registered method>`, that method's params (unset keys at the method's defaults), and optional
`train`, `encoder`, `augment` sub-sections overriding those sections for its runs alone. `method_names`
lists methods and configurations alike; `Params.for_run(name)` gives the params a run of `name` trains with.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import operator
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from semisup.errors import UserError
from semisup.fields import param as _f
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
    and the projection head the losses see during training (semisup.projection), never part of the
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
        section and its train, encoder and augment keys in place of the global ones; a method's: these."""
        config = self.configurations.get(name)
        if config is None:
            self.method_of(name)  # an unknown name: one line
            return self
        sections = {
            section: dataclasses.replace(getattr(self, section), **config.overrides.get(section, {}))
            for section in OVERRIDABLE
        }
        _check_train(sections["train"], f"methods.{name}.train")
        methods = dataclasses.replace(self.methods, **{config.method: config.params})
        return dataclasses.replace(self, methods=methods, **sections)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(tp)))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        nullable = " or null" if type(None) in typing.get_args(tp) else ""
        return " or ".join(_type_name(a) for a in args) + nullable
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_name(args[0])}"
        return f"a list of {len(args)} {_type_name(args[0])}"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def _convert(key: str, value: Any, tp: Any) -> Any:
    """Check `value` against the annotation `tp` and return it in that type."""
    if isinstance(value, Empty):  # `key:` with nothing after it
        if dataclasses.is_dataclass(tp):
            return _build(key, None, tp)
        if type(None) in typing.get_args(tp):
            return None
        raise UserError(f"{key}: no value (line {value.line}): write one, or delete the key for its default")
    origin = typing.get_origin(tp)
    bad = UserError(f"{key}: {value!r} is not {_type_name(tp)}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise bad
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(tp):
            return None
        for inner in (a for a in typing.get_args(tp) if a is not type(None)):
            try:
                return _convert(key, value, inner)
            except UserError:
                continue
        raise bad
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise bad
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value))
        if len(value) != len(args):
            raise bad
        return tuple(_convert(f"{key}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if dataclasses.is_dataclass(tp):
        return _build(key, value, tp)
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, str):
            hint = " (PyYAML reads 1e-3 as a string: write 1.0e-3)" if _looks_numeric(value) else ""
            raise UserError(f"{key}: {value!r} is not a number{hint}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise bad
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    raise TypeError(f"unsupported annotation {tp!r} for {key}")


def _looks_numeric(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


_BOUNDS = {
    "ge": (operator.ge, ">="),
    "gt": (operator.gt, ">"),
    "le": (operator.le, "<="),
    "lt": (operator.lt, "<"),
}


def _check_rules(key: str, value: Any, rules: dict) -> None:
    if value is None:
        return
    items = list(value) if isinstance(value, tuple) else [value]
    if rules.get("nonempty") and not items:
        raise UserError(f"{key}: must not be empty")
    for v in items:
        for op, bound in rules.items():
            if op in _BOUNDS and not _BOUNDS[op][0](v, bound):
                raise UserError(f"{key}: {_show(value)} is out of range (must be {_BOUNDS[op][1]} {bound})")
    if rules.get("pair") and value[0] > value[1]:
        raise UserError(f"{key}: {_show(value)} must be [low, high] with low <= high")


def _show(value: Any) -> str:
    return str(list(value)) if isinstance(value, tuple) else repr(value)


def _build(prefix: str, raw: Any, cls: type) -> Any:
    """Build dataclass `cls` from the mapping `raw`, naming every key by its dotted path."""
    where = prefix or "params.yaml"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"{where}: expected a mapping of keys, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            dotted = f"{prefix}.{key}" if prefix else str(key)
            raise UserError(f"{dotted}: unknown key (allowed: {', '.join(fields)})")
    kwargs = {}
    for yaml_key, f in fields.items():
        if yaml_key not in raw:
            continue
        dotted = f"{prefix}.{yaml_key}" if prefix else yaml_key
        value = _convert(dotted, raw[yaml_key], hints[f.name])
        _check_rules(dotted, value, f.metadata.get("rules", {}))
        kwargs[f.name] = value
    return cls(**kwargs)


def parse_params(raw: Any) -> Params:
    """Validate a parsed params mapping and return frozen `Params`."""
    if isinstance(raw, dict) and "configurations" in raw:
        raise UserError("configurations: unknown key (a configuration is a section of methods)")
    raw, configured = _split_configurations(raw)
    params = _build("", raw, Params)
    configurations = _configurations(configured)
    params = dataclasses.replace(params, configurations=configurations)
    for name in params.method_names:
        if name not in METHODS and name not in configurations:
            raise UserError(
                f"method_names: {name!r} is not a method ({', '.join(METHODS)}) nor a configuration "
                f"(a section of methods with method: <one of them>; here: {', '.join(configurations) or 'none'})"
            )
    repeated = sorted({n for n in params.method_names if params.method_names.count(n) > 1})
    if repeated:  # DVC's matrix would drop the repeat without a word
        raise UserError(f"method_names: {', '.join(repeated)} listed twice: list each method once")
    _check_train(params.train, "train")
    for name in configurations:
        if name in params.method_names:  # (another is checked when a stage runs it: for_run)
            params.for_run(name)  # its sections with its overrides, each checked as the global one is
    _check_study(params.study)
    data = params.data
    if data.source == "folder" and not data.path:
        raise UserError(
            "data.path: the folder source needs a path (a directory with one sub-folder per class)"
        )
    if data.path and data.path.startswith("~"):  # as a shell would: ~/images, ~user/images
        params = dataclasses.replace(
            params, data=dataclasses.replace(data, path=os.path.expanduser(data.path))
        )
    return params


def _split_configurations(raw: Any) -> tuple[Any, dict[Any, Any]]:
    """(raw without the configurations, {name: raw section} of each section of `methods` that names no
    method). A method's section that names a method of its own is the one name clash to refuse here."""
    if not isinstance(raw, dict) or not isinstance(raw.get("methods"), dict):
        return raw, {}
    sections = raw["methods"]
    for name in METHODS:
        if isinstance(sections.get(name), dict) and "method" in sections[name]:
            raise UserError(
                f"methods.{name}.method: {name} is a method, whose section holds its own params only; to "
                f"run it otherwise, name a configuration (methods.{name}_custom: {{method: {name}, ...}})"
            )
    methods = {k: v for k, v in sections.items() if k in METHODS}
    return {**raw, "methods": methods}, {k: v for k, v in sections.items() if k not in METHODS}


def _configurations(sections: Mapping[Any, Any]) -> dict[str, Configuration]:
    """Each configuration of `methods`, validated: its name, method, params and overrides."""
    out: dict[str, Configuration] = {}
    taken = {name.lower(): name for name in METHODS}
    for name, raw in sections.items():
        key = f"methods.{name}"
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise UserError(
                f"{key}: not a name for a configuration: use letters, digits and _ (starting with a letter; "
                "no -: it names the runs <name>-<budget>-<seed>)"
            )
        if name.lower() in taken:  # one folder on a case-insensitive file system (models/<run>, ...)
            raise UserError(f"{key}: differs from {taken[name.lower()]} only in case: rename it")
        taken[name.lower()] = name
        if isinstance(raw, Empty) or raw is None or (isinstance(raw, dict) and "method" not in raw):
            raise UserError(
                f"{key}: not a method ({', '.join(METHODS)}); a configuration names the one it runs: "
                f"add method: <one of them>"
            )
        if not isinstance(raw, dict):
            raise UserError(f"{key}: expected a mapping of keys (method: ..., and its params), got {raw!r}")
        method = raw["method"]
        if method not in METHODS:  # (a configuration of a configuration too)
            raise UserError(f"{key}.method: {method!r} is not one of {', '.join(METHODS)}")
        cls = METHODS[method].params
        own = [f.name for f in dataclasses.fields(cls)]
        for k in raw:
            if k != "method" and k not in OVERRIDABLE and k not in own:
                allowed = ", ".join(["method", *own, *OVERRIDABLE])
                raise UserError(f"{key}.{k}: unknown key (allowed for a {method} configuration: {allowed})")
        overrides = {}
        for section, section_cls in OVERRIDABLE.items():
            if section in raw:
                given = raw[section] if isinstance(raw[section], dict) else {}
                built = _convert(f"{key}.{section}", raw[section], section_cls)
                overrides[section] = {k: getattr(built, k) for k in given}
        params = _build(key, {k: v for k, v in raw.items() if k in own}, cls)
        out[name] = Configuration(name, method, params, overrides)
    return out


def _check_train(train: TrainParams, key: str) -> None:
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


def _check_study(study: StudyParams) -> None:
    """Budgets are positive or all, and no axis repeats a value (DVC's matrix would repeat a stage name)."""
    for i, budget in enumerate(study.labeled_per_class):
        if isinstance(budget, int) and budget < 1:
            raise UserError(f"study.labeled_per_class[{i}]: {budget} is out of range (must be >= 1, or all)")
    budgets = ["all" if b is None else b for b in study.labeled_per_class]
    for key, values in (("seeds", list(study.seeds)), ("labeled_per_class", budgets)):
        repeated = sorted({str(v) for v in values if values.count(v) > 1})
        if repeated:
            raise UserError(f"study.{key}: {', '.join(repeated)} listed twice: list each value once")


def with_overrides(raw: Any, overrides: Mapping[str, Any]) -> dict:
    """A copy of a parsed params mapping with dotted `key: value` overrides, as `dvc exp run -S key=value`
    applies them: a string value is read as YAML (`"false"` -> False, `"[0.5,1.0]"` -> a list), and a
    missing section is created (so that validation names the unknown key). A key may start with Hydra's
    `+` or `++` (what `dvc exp run -S` needs to add a key params.yaml lacks)."""
    params = copy.deepcopy(raw) if isinstance(raw, dict) else {}
    for dotted, value in overrides.items():
        *parents, leaf = dotted.lstrip("+").split(".")
        node = params
        for key in parents:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[leaf] = yaml.safe_load(value) if isinstance(value, str) else value
    return params


class Empty:
    """A key written with no value (`epochs:`), at `line`: an empty section or a null where null is allowed,
    an error elsewhere (a person who deletes a value does not mean "null")."""

    def __init__(self, line: int):
        self.line = line

    def __repr__(self) -> str:
        return "no value"


class _Misread(Exception):
    """Something PyYAML accepts that a person editing params.yaml would not mean, at a line."""

    def __init__(self, node: yaml.Node, problem: str):
        super().__init__(f"line {node.start_mark.line + 1}: {problem}")


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing the YAML 1.1 readings that surprise people editing params.yaml:
    a key set twice in one section (YAML keeps the last), a leading zero (octal: 010 is 8), and colons
    in a number (base 60: 1:30 is 90). An empty value is `Empty`, for validation to judge."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise _Misread(
                    key_node,
                    f"{key} is set twice in one section (also at line {seen[key]}); YAML would keep "
                    "only the last: delete one",
                )
            if isinstance(key, (str, int, float, bool)):
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        text = str(node.value).replace("_", "")
        value = super().construct_yaml_int(node)
        digits = text.lstrip("+-")
        if len(digits) > 1 and digits[0] == "0" and digits.isdigit():
            raise _Misread(
                node,
                f"{node.value} starts with 0, which YAML reads as octal ({value}): write it without the 0",
            )
        if ":" in text:
            raise _Misread(
                node,
                f"{node.value} has a colon, which YAML reads as base 60 ({value}): quote it or write a number",
            )
        return value

    def construct_yaml_float(self, node: yaml.ScalarNode) -> float:
        value = super().construct_yaml_float(node)
        if ":" in str(node.value):
            raise _Misread(
                node,
                f"{node.value} has a colon, which YAML reads as base 60 ({value}): quote it or write a number",
            )
        return value

    def construct_yaml_null(self, node: yaml.ScalarNode) -> Empty | None:
        return Empty(node.start_mark.line + 1) if node.value == "" else None


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)
_Loader.add_constructor("tag:yaml.org,2002:float", _Loader.construct_yaml_float)
_Loader.add_constructor("tag:yaml.org,2002:null", _Loader.construct_yaml_null)


def read_params(path: str | Path = "params.yaml") -> Any:
    """The parsed YAML of a params file, unvalidated (a one-line `UserError` when missing, not YAML, or
    YAML that reads otherwise than a person means: see `_Loader`)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: not found (run from the repository root, or pass --params)")
    try:
        return yaml.load(path.read_text(), Loader=_Loader)  # noqa: S506  (a SafeLoader)
    except _Misread as exc:
        raise UserError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{path}: not valid YAML{where}: {problem}") from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; every problem is a one-line `UserError`."""
    return parse_params(read_params(path))


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
