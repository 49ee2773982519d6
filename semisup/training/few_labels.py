"""The batches and kNN's k of a run with few labels: the recipe's values where the run's labeled subset
fills them, one stated rule where it does not.

The rule, after what the papers do at a few labels per class (facebookresearch/suncet: PAWS's
ClassStratifiedSampler takes every class in every step, CIFAR10 `classes_per_batch: 10` of 10, and at
ImageNet's 1% about half of each class's ~13 images per step, `supervised_imgs_per_class: 7`; SuNCEt's
ImageNet config takes 2 per class with `supervised_views: 1`):
- a labeled batch larger than the run's labeled subset becomes the subset: every step sees each labeled
  image once, so every class is in every step (the reader reshuffles the subset per pass);
- class-stratified supports (`supports_per_class`) beyond the smallest class of the subset become that
  class's count, and the labeled batch classes_per_batch x that;
- SuNCEt's supervised contrast needs a partner of the same class in the batch: where a class has a single
  image, each labeled image is encoded in 2 views (`support_views: 2`, as SuNCEt's `supervised_views`),
  its other view its partner;
- a k of knn.k as large as the bank (the run's labeled subset) or larger becomes the bank's smallest
  class count: the largest neighbourhood that one class can fill, so that a vote still separates classes
  (a k of the whole bank votes the bank's majority, the same class, for every query). Results keep the key of the k asked for
  (`k200`) and say the k used.
Values the subset can fill are the run's as set (an explicit setting wins), and unlabeled batches are
always the recipe's. Standard library and NumPy only: stages call it at their boundary, the drivers to
scale their profiles.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from semisup.data.splits import class_counts
from semisup.methods import Method, view_options

if TYPE_CHECKING:
    from semisup.config import RunSpec

SUPERVISED_VIEWS = 2  # SuNCEt's views of each labeled image when a class has one image in the batch


@dataclass(frozen=True)
class Fitted:
    """What the rule changed for one run: `params.yaml key -> (recipe value, value used)`."""

    changes: Mapping[str, tuple[Any, Any]] = field(default_factory=dict)
    labeled: int = 0  # images in the run's labeled subset
    smallest_class: int = 0  # images of its smallest class
    used: Mapping[str, Any] = field(default_factory=dict)  # the run's batches and k, changed or not

    def describe(self, run: str) -> str:
        """One line for the run's output: the batches and k it trains with, and what the rule changed."""
        line = f"{run}: " + ", ".join(f"{key} {value}" for key, value in self.used.items())
        line += f" (labeled subset: {self.labeled} images, smallest class {self.smallest_class})"
        if self.changes:
            what = ", ".join(f"{key} {old} -> {new}" for key, (old, new) in self.changes.items())
            line += f"; fitted to the subset: {what} (semisup/training/few_labels.py)"
        return line

    def record(self) -> dict[str, Any]:
        """JSON for the run's metrics folder: the subset, the values used, each changed key's recipe value."""
        return {
            "labeled": self.labeled,
            "smallest_class": self.smallest_class,
            "used": dict(self.used),
            "changed": {key: {"recipe": old, "used": new} for key, (old, new) in self.changes.items()},
        }


def _smallest(counts: np.ndarray) -> int:
    present = counts[counts > 0]
    return int(present.min()) if present.size else 0


def fit_method(method: Method, mp: Any, counts: np.ndarray, key: str) -> tuple[Any, dict[str, tuple]]:
    """A method's (or configuration's) params section fitted to a subset of `counts` images per class (C,);
    -> (params, changes keyed `methods.<name>.<field>`). `key`: `methods.<name>`."""
    if not method.uses_labeled:
        return mp, {}
    n, smallest = int(counts.sum()), _smallest(counts)
    new: dict[str, Any] = {}
    views = view_options(mp)
    spc = views.supports_per_class
    if spc is not None:
        if spc > smallest:
            cpb = views.classes_per_batch or int((counts > 0).sum())
            new = {"supports_per_class": smallest, "labeled_batch": cpb * smallest}
        per_class = new.get("supports_per_class", spc)
    else:
        if mp.labeled_batch > n:
            new["labeled_batch"] = n
        batch = new.get("labeled_batch", mp.labeled_batch)
        per_class = smallest if batch >= n else 0  # 0: a random part of the subset, no class certain
    if method.name == "suncet" and views.support_views == 1 and per_class == 1:
        new["support_views"] = SUPERVISED_VIEWS
    changes = {f"{key}.{name}": (getattr(mp, name), value) for name, value in new.items()}
    return (dataclasses.replace(mp, **new) if new else mp), changes


def subset_counts(shard_dir: Any, labeled_ids: Sequence[int] | None) -> np.ndarray:
    """Images per class (C,) of a run's labeled subset (`labeled_ids` in the labeled split; None: all)."""
    from semisup.data.readers import check_labeled_ids
    from semisup.data.subsets import labeled_split_labels

    labels, manifest = labeled_split_labels(shard_dir)
    if labeled_ids is not None:
        ids = check_labeled_ids(labeled_ids, len(labels))
        labels = labels[np.asarray(ids, dtype=np.int64)]
    return class_counts(labels, int(manifest["num_classes"]))


def fit_k(ks: Sequence[int], counts: np.ndarray) -> tuple[tuple[int, ...], dict[int, int]]:
    """knn.k for a bank of `counts` images per class (C,): each k not smaller than the bank -> its smallest
    class count; -> (the k's in knn.k's order, {k asked: k used} for those changed)."""
    n, smallest = int(counts.sum()), max(1, _smallest(counts))
    used = {k: (k if k < n or k <= smallest else smallest) for k in ks}
    return tuple(used[k] for k in ks), {k: v for k, v in used.items() if v != k}


def fit_spec(spec: RunSpec, counts: np.ndarray) -> RunSpec:
    """Run `spec` with its labeled batches fitted to its labeled subset of `counts` images per class (C,),
    and what the rule changed (`spec.fitted`). knn.k stays as asked (results are keyed by it): the monitor
    and the knn stage fit it to their bank with fit_k; the record says the k's they use."""
    name, method = spec.name, spec.method
    mp, changes = fit_method(method, spec.method_params, counts, f"methods.{name}")
    ks, k_changes = fit_k(spec.params.knn.k, counts)
    if k_changes:
        changes["knn.k"] = (list(spec.params.knn.k), list(ks))
    section = dataclasses.asdict(mp)
    used = {
        f"methods.{name}.{key}": section[key]
        for key in ("unlabeled_batch", "labeled_batch", "supports_per_class", "support_views")
        if section.get(key) is not None and (key == "unlabeled_batch" or method.uses_labeled)
    }
    fitted = Fitted(changes, int(counts.sum()), _smallest(counts), used | {"knn.k": list(ks)})
    if mp is spec.method_params:  # nothing of the method's changed (knn.k stays as asked)
        return dataclasses.replace(spec, fitted=fitted)
    # Where the trainer reads it: a configuration's params stand in its method's section too.
    return spec.with_method_params(mp, fitted)
