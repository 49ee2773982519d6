"""The -S profiles of `make demo` and `make study` on top of params.yaml's reference recipe, and the check
of a user's -S settings on top of them.

Each method's batch sizes derive from the registry (semisup.methods), and each configuration's from its
method's entry and its own params (params.yaml's methods section): a method added there, or a configuration
defined there, is in both profiles with no edit here. The study's profile is the demo's with its differences.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from semisup.config import Configuration, parse_params, read_params, with_overrides
from semisup.core.errors import UserError
from semisup.methods import METHODS, Method, view_options
from semisup.training.few_labels import fit_method

BatchRule = Callable[[Method, Any], int]
ROOT = Path(__file__).resolve().parents[1]


def configurations(path: str | Path = ROOT / "params.yaml") -> dict[str, Configuration]:
    """The configurations of params.yaml's methods section (none when it does not validate: the drivers
    check params.yaml themselves and say what is wrong)."""
    try:
        return dict(parse_params(read_params(path)).configurations)
    except UserError:
        return {}


CONFIGURATIONS = configurations()


def method_of(name: str) -> str:
    """The registered method that `name` (a method, or a configuration of params.yaml) runs."""
    return CONFIGURATIONS[name].method if name in CONFIGURATIONS else name


def method_batches(
    unlabeled: BatchRule, labeled: BatchRule, configured: Mapping[str, Configuration] | None = None
) -> dict[str, int]:
    """`-S` batch sizes for every method of the registry, then every configuration of `configured`
    (default: params.yaml's): unlabeled(method, its params) and labeled(method, its params), where a
    method's params are its defaults and a configuration's are its own (its method's defaults but for the
    keys it sets)."""
    out = {}
    named = [(m.name, m, m.params()) for m in METHODS.values()]
    named += [
        (n, METHODS[c.method], c.params)
        for n, c in (CONFIGURATIONS if configured is None else configured).items()
    ]
    for name, method, defaults in named:
        out[f"methods.{name}.unlabeled_batch"] = unlabeled(method, defaults)
        out[f"methods.{name}.labeled_batch"] = labeled(method, defaults)
    return out


def scaled_unlabeled(size: int) -> BatchRule:
    """Each method's reference unlabeled batch scaled from 250 images to `size` (InfoNCE's 500 -> 2 x size)."""
    return lambda method, defaults: round(defaults.unlabeled_batch * size / 250)


def fitted_labeled(per_class: int) -> BatchRule:
    """Each method's labeled batch by the few-labels rule (semisup.training.few_labels) for a labeled subset
    of `per_class` images of each digit class: the recipe's where the subset fills it, else the subset (a
    method that never encodes labeled images keeps its own)."""
    counts = np.full(DIGITS_CLASSES, per_class)
    return lambda method, defaults: fit_method(method, defaults, counts, "")[0].labeled_batch


def labeled_if_used(size: int, otherwise: int | None = None) -> BatchRule:
    """`size` labeled images for a method that encodes them; one that only draws them keeps its default
    (or `otherwise`)."""
    return lambda method, defaults: size if method.uses_labeled else (otherwise or defaults.labeled_batch)


DIGITS_CLASSES = 10
REFERENCE_EPOCHS = 25  # params.yaml's train.epochs, which the configurations' epoch counts are written for


def configuration_scaling(per_class: int, epochs: int) -> dict[str, int]:
    """`-S` settings that keep each configuration of params.yaml what it is at a profile's labeled subset
    (`per_class` images of each digit class) and length (`epochs`): class-stratified supports as the
    few-labels rule fits them (semisup.training.few_labels), and epoch counts (SuNCEt's supervised_epochs, a
    warmup) keep their share of the run."""
    out: dict[str, int] = {}
    share = lambda n: max(1, round(n * epochs / REFERENCE_EPOCHS))  # noqa: E731
    counts = np.full(DIGITS_CLASSES, per_class)
    for name, config in CONFIGURATIONS.items():
        p = config.params
        if view_options(p).stratified:
            fitted = fit_method(METHODS[config.method], p, counts, "")[0]
            out[f"methods.{name}.supports_per_class"] = view_options(fitted).supports_per_class
        # The epoch after which the method drops its labeled batch (SuNCEt's supervised_epochs), if any.
        until = METHODS[config.method].labeled_until
        last = dataclasses.asdict(p).get(until) if until else None
        if last is not None:
            out[f"methods.{name}.{until}"] = share(last)
        warmup = config.overrides.get("train", {}).get("warmup_epochs")
        if warmup:
            out[f"methods.{name}.train.warmup_epochs"] = share(warmup)
    return out


# The digits profile: 32x32 images (the smallest the 4-layer encoder takes), 25 labels per class (a bank
# large enough for kNN@200), a narrower encoder, and augmentation fit for digits (no flip: a mirrored 2 is
# not a 2; crops of at least half the area). It runs all four methods in a few minutes on two CPU cores.
# The methods' maths, temperatures and optimizer stay the reference recipe's.
DEMO: dict[str, object] = {
    "data.source": "digits",
    "data.image_size": 32,
    "data.labeled_per_class": 25,
    "data.num_shards": 2,
    "train.epochs": 25,
    "train.shuffle_buffer": 2000,
    "encoder.filters": 32,
    "augment.flip": "false",
    "augment.crop_scale": "[0.5,1.0]",
    # The reference batches scaled to 128 unlabeled images (InfoNCE's 256); the labeled ones as the
    # few-labels rule fits them to 10 images of each class (100 where encoded).
    **method_batches(scaled_unlabeled(128), fitted_labeled(10)),
    **configuration_scaling(10, 25),
}

# The study: the demo at 10 epochs, with the labeled batches the few-labels rule gives its smallest budget
# (5 per class: 50 labeled images), the same at every budget; k = 20 (a bank of 50 cannot vote with 200
# neighbours), 3 budgets x 3 seeds.
STUDY: dict[str, object] = DEMO | {
    "train.epochs": 10,
    **method_batches(scaled_unlabeled(128), fitted_labeled(5)),
    **configuration_scaling(5, 10),
    "knn.k": "[20]",
    "study.labeled_per_class": "[5,10,25]",
    "study.seeds": "[0,1,2]",
}


def parse_sets(
    sets: tuple[str, ...], profile: dict[str, object], what: str, check_profile: bool = False
) -> dict[str, str]:
    """`-S KEY=VALUE` options -> {KEY: VALUE}, checked against params.yaml's rules as the stages will check
    them on top of `profile` (the profile alone too when `check_profile`), so that a mistake stops here,
    before any experiment starts (a UserError)."""
    extra = {}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(
                f"-S {item!r}: expected KEY=VALUE, as dvc exp run -S (e.g. -S 'study.seeds=[0,1]')"
            )
        extra[key] = value
    if not extra and not check_profile:
        return extra
    try:
        parse_params(with_overrides(read_params("params.yaml"), {**profile, **extra}))
    except UserError as exc:
        given = f" and -S {' -S '.join(sets)}" if sets else ""
        raise UserError(f"{exc} (params.yaml with the {what} profile{given})") from None
    return extra


# --- the papers' study: `make study PROFILE=paper` and `PROFILE=paper-extra` ------------------------------
# A profile is a few parts, each one DVC experiment with its own report (a part's rows are trained on the
# same label subsets and seeds, so its paired tests pair them). `paper`: the four methods with the papers'
# PAWS and SuNCEt at 5, 10 and 25 labels per class; PAWS with each paper option added alone at 5 and 10.
# `paper-extra`: each method in float32 beside its default precision (bfloat16 where the machine is fast at
# it) at 10; PAWS with the pooled encoder alone, and the papers' PAWS with multi-crop taken out again, at 5
# and 10. Together they took 50.5 minutes on 2 cores, over the 40 a study gets, so they are two commands. A
# run two parts share (paws-10-0 ...) is trained once: the other part, or the other profile run later,
# restores it from DVC's run cache. A profile's parts run at once (one queue worker each); DVC trains a
# part's runs in method_names order, so a part reaches the runs it shares with another after that one has
# trained them (the options parts end with paws and paws_paper, which the methods parts reach fourth and
# fifth; precision starts with the float32 runs).

# PAWS with one of the paper's options each (named configurations defined by the profile, `+` as DVC's -S
# needs for a key params.yaml lacks); its batches as the study's PAWS.
PAWS_OPTIONS: dict[str, dict[str, object]] = {
    "paws_stratified": {"supports_per_class": 5},  # 5 of each of the 10 classes: the study's 50 supports
    "paws_views": {"support_views": 2},
    "paws_smoothing": {"label_smoothing": 0.1},
    # 6 small crops, the preset for the study's 32 px: CIFAR10's (18 px at (0.3, 0.75), views (0.75, 1.0))
    "paws_multicrop": {"multicrop": 6, "encoder.padding": "same", "encoder.pooling": "average"},
    "paws_head": {"encoder.projection_layers": 3},  # the PAWS code's 3-layer head (hidden 512, out 128)
    "paws_schedule": {"train.lr_schedule": "cosine", "train.warmup_epochs": 1},
}
# The encoder multi-crop needs (its own option, not the PAWS paper's), alone on PAWS: so that a difference
# multi-crop makes can be told apart from one the pooled encoder makes.
POOLING: dict[str, dict[str, object]] = {
    "paws_pooling": {"encoder.padding": "same", "encoder.pooling": "average"},
}
FLOAT32 = {f"{m}_fp32": m for m in METHODS}  # each method in float32 (train.mixed_precision: false)
# The papers' PAWS with one of its options taken out again (-S settings over paws_paper's section of
# params.yaml): multi-crop, with the pooled encoder that only multi-crop needs (its views then keep the
# profile's augment.crop_scale, as the paper's CIFAR10 views without multi-crop keep (0.5, 1.0)). What
# this pair can show is narrow: digits are 8x8 scans upsampled to 32 px, so a small crop is a stroke
# fragment, and the study's test split holds 359 images (one image moves accuracy by 0.0028); a
# difference here is one on digits at this size, not a reading of multi-crop on 32-px photographs
# (issue 27: on one such data set the papers' PAWS scored kNN@20 0.793 with it, 0.802 without).
PAPER_WITHOUT: dict[str, dict[str, object]] = {
    "paws_paper_no_multicrop": {"multicrop": 0, "encoder.padding": "valid", "encoder.pooling": "flatten"},
}


def _flat(section: Mapping[str, object], prefix: str = "") -> dict[str, object]:
    """{"encoder": {"pooling": "average"}} -> {"encoder.pooling": "average"}, values as -S writes them."""
    out: dict[str, object] = {}
    for key, value in section.items():
        if isinstance(value, Mapping):
            out |= _flat(value, f"{prefix}{key}.")
        elif isinstance(value, list | tuple):
            out[f"{prefix}{key}"] = "[" + ",".join(str(v) for v in value) + "]"
        else:
            out[f"{prefix}{key}"] = (
                "null" if value is None else str(value).lower() if isinstance(value, bool) else value
            )
    return out


def paper_without(base: str, changes: Mapping[str, object]) -> dict[str, object]:
    """`-S` settings over configuration `base` of params.yaml (its own section, as the study scales it)
    with `changes`, for a new configuration (defined() adds the method and the study's batches)."""
    raw = dict(read_params(ROOT / "params.yaml")["methods"][base])
    settings = {
        k: v for k, v in _flat(raw).items() if k not in ("method", "unlabeled_batch", "labeled_batch")
    }
    scaled = {
        k.removeprefix(f"methods.{base}."): v for k, v in STUDY.items() if k.startswith(f"methods.{base}.")
    }
    return settings | {k: v for k, v in scaled.items() if "batch" not in k} | dict(changes)


def defined(name: str, method: str, settings: Mapping[str, object]) -> dict[str, object]:
    """`-S` settings that define configuration `name` of `method` with the study profile's batches."""
    out: dict[str, object] = {f"+methods.{name}.method": method}
    for key in ("unlabeled_batch", "labeled_batch"):
        out[f"+methods.{name}.{key}"] = STUDY[f"methods.{method}.{key}"]
    return out | {f"+methods.{name}.{key}": value for key, value in settings.items()}


def defined_all(method: str, configurations: Mapping[str, Mapping[str, object]]) -> dict[str, object]:
    """`-S` settings that define each of `configurations` (name -> settings) as a configuration of `method`."""
    return {
        k: v for name, settings in configurations.items() for k, v in defined(name, method, settings).items()
    }


@dataclass(frozen=True)
class Part:
    """One experiment of a study: the runs it holds (method_names x budgets x the study's seeds) and the
    `-S` settings on top of the study profile that define its configurations."""

    name: str
    method_names: tuple[str, ...]
    budgets: str
    settings: Mapping[str, object]

    def profile(self) -> dict[str, object]:
        """The part's whole `-S` profile."""
        return {
            **STUDY,
            **self.settings,
            "study.labeled_per_class": self.budgets,
            "method_names": "[" + ",".join(self.method_names) + "]",
        }


# One experiment per budget: DVC's bookkeeping per stage grows with the experiment's pipeline (it reads
# and writes the whole dvc.lock after each stage: 240 stages of `echo` take 1.4 s of CPU each, 60 take
# 0.4 s), and the paired tests pair within a budget anyway. The options parts train the runs they share
# with the methods parts (paws, paws_paper) last, restored from the run cache by then.
PAPER_PARTS: tuple[Part, ...] = (
    *(Part(f"methods-{b}", (*METHODS, "paws_paper", "suncet_paper"), f"[{b}]", {}) for b in (5, 10, 25)),
    *(
        Part(
            f"paws-options-{b}",
            (*PAWS_OPTIONS, "paws", "paws_paper"),
            f"[{b}]",
            defined_all("paws", PAWS_OPTIONS),
        )
        for b in (5, 10)
    ),
)
EXTRA_PARTS: tuple[Part, ...] = (
    Part(
        "precision",
        # float32 first: the defaults at 10 come last, restored from the run cache where `PROFILE=paper`
        # trained them (its methods part) or the ablation part has (paws)
        (*FLOAT32, *METHODS),
        "[10]",
        {
            k: v
            for name, method in FLOAT32.items()
            for k, v in defined(name, method, {"train.mixed_precision": "false"}).items()
        },
    ),
    Part(
        "paws-ablation",
        ("paws", *POOLING, "paws_paper", *PAPER_WITHOUT),
        "[5,10]",
        defined_all(
            "paws",
            POOLING | {name: paper_without("paws_paper", changes) for name, changes in PAPER_WITHOUT.items()},
        ),
    ),
)
# `make study PROFILE=<name>`: a profile's parts.
PAPER_PROFILES: dict[str, tuple[Part, ...]] = {"paper": PAPER_PARTS, "paper-extra": EXTRA_PARTS}


# --- your own folder: `make study DATA=path/to/folder` ------------------------------------------------------
# The study's settings for an image folder (a sub-folder per class, unlabeled/ optional): the budgets every
# class can give after its test share, the study's length and encoder at 32 px (a few minutes a run on a CPU),
# the recipe's labeled batches and k (fitted to each run's labeled subset: semisup.training.few_labels), and
# each method's unlabeled batch scaled to what the folder holds. Any of it can be changed with -S.
FOLDER_BUDGETS = (1, 5, 10, 25)
FOLDER_IMAGE_SIZE, FOLDER_EPOCHS = 32, 10


@dataclass(frozen=True)
class FolderStudy:
    """What the folder study picked: its -S profile and the facts it picked them from."""

    profile: dict[str, object]
    classes: int
    labeled: int  # images in the class sub-folders
    unlabeled: int  # images the unlabeled split will hold (unlabeled/ and what the budgets leave)
    budgets: tuple[int, ...]

    def lines(self) -> list[str]:
        """The study's first lines: what it found and what it picked (each overridable with -S)."""
        p = self.profile
        return [
            f"study: {p['data.path']}: {self.classes} classes, {self.labeled} labeled images, "
            f"{self.unlabeled} for the unlabeled split",
            f"study: budgets {list(self.budgets)} labels per class (study.labeled_per_class), seeds "
            f"{p['study.seeds']}, images {p['data.image_size']} px (data.image_size), {p['train.epochs']} "
            "epochs (train.epochs); change any with -S KEY=VALUE",
        ]


def folder_study(path: str | Path, test_fraction: float = 0.2) -> FolderStudy:
    """The study of image folder `path`; a UserError, before any training, when it cannot make one (no
    such folder, no images, one class, a class smaller than 1 label plus its test share, nothing to
    train the unlabeled methods on)."""
    from semisup.data.folder import scan_folder
    from semisup.data.splits import check_class_sizes, class_counts, test_counts

    root = Path(path).expanduser().resolve()
    names, labeled, unlabeled = scan_folder(root)
    counts = class_counts(np.array([y for _, y in labeled]), len(names))
    check_class_sizes(counts, names, need=2, why="a study (1 label per class and 1 test image)")
    available = counts - test_counts(counts, test_fraction)
    budgets = tuple(b for b in FOLDER_BUDGETS if b <= int(available.min()))
    left = int((available - budgets[-1]).sum()) + len(unlabeled)
    if left < 4:
        raise UserError(
            f"data.path: {root}: {left} images would be left for the unlabeled split (4 at least: InfoNCE "
            f"contrasts 2 x 2): add images to {root / 'unlabeled'} or to the classes"
        )
    size = min(128, left // 2)  # InfoNCE's unlabeled batch is twice the others'
    profile = {
        "data.source": "folder",
        "data.path": str(root),
        "data.image_size": FOLDER_IMAGE_SIZE,
        "data.labeled_per_class": budgets[-1],
        "data.test_fraction": test_fraction,
        "data.num_shards": 2,
        "train.epochs": FOLDER_EPOCHS,
        "train.shuffle_buffer": 2000,
        "encoder.filters": 32,
        **method_batches(scaled_unlabeled(size), lambda method, defaults: defaults.labeled_batch, {}),
        "study.labeled_per_class": "[" + ",".join(map(str, budgets)) + "]",
        "study.seeds": "[0,1,2]",
    }
    return FolderStudy(profile, len(names), len(labeled), left, budgets)
