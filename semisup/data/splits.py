"""Stratified, seeded splits of a labeled image set into test / labeled / unlabeled indices.

The semi-supervised protocol of SuNCEt and PAWS (Assran et al., 2020; 2021): a few labeled images
per class, and every other training image used without its label.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from semisup.core.errors import UserError


def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Images per class. labels: (N,) int -> (C,) int64."""
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)[:num_classes]


def test_counts(counts: np.ndarray, test_fraction: float) -> np.ndarray:
    """Test images per class: round(fraction x count), at least 1 and leaving at least 1. (C,) -> (C,)"""
    return np.clip(np.rint(test_fraction * counts).astype(np.int64), 1, np.maximum(counts - 1, 1))


def check_class_sizes(counts: np.ndarray, class_names: Sequence[str], *, need: int, why: str) -> None:
    """A UserError naming the smallest class when some class has fewer than `need` images."""
    smallest = int(np.argmin(counts))
    if counts[smallest] < need:
        n = int(counts[smallest])
        raise UserError(
            f"class {class_names[smallest]!r} has {n} image{'' if n == 1 else 's'}: {why} need at least "
            f"{need}; add images to it or remove the class"
        )


def check_labeled_per_class(
    available: np.ndarray, class_names: Sequence[str], labeled_per_class: int | None, *, where: str
) -> None:
    """A UserError when `labeled_per_class` exceeds the training images of the smallest class."""
    if labeled_per_class is None:
        return
    smallest = int(np.argmin(available))
    if labeled_per_class > available[smallest]:
        raise UserError(
            f"data.labeled_per_class: {labeled_per_class} is more than class {class_names[smallest]!r} has "
            f"{where} ({int(available[smallest])} images); set it to at most {int(available[smallest])}"
        )


def check_unlabeled_nonempty(
    available: np.ndarray, labeled_per_class: int | None, extra_unlabeled: int, source: str
) -> None:
    """A UserError when labeling every training image would leave the unlabeled split empty."""
    left = 0 if labeled_per_class is None else int(available.sum()) - labeled_per_class * len(available)
    if extra_unlabeled + left <= 0:
        shown = "null" if labeled_per_class is None else labeled_per_class
        raise UserError(
            f"data.labeled_per_class: {shown} labels every training image of {source}, so the "
            f"unlabeled split is empty; set it below {int(available.min())}"
            + (" or add an unlabeled/ folder" if source == "folder" else "")
        )


def subsample_per_class(
    labels: np.ndarray, num_classes: int, per_class: int | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Pick `per_class` random indices of each class (None: all). labels: (N,) -> (chosen, rest), sorted."""
    chosen, rest = [], []
    for c in range(num_classes):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = len(idx) if per_class is None else per_class
        chosen.append(idx[:k])
        rest.append(idx[k:])
    return np.sort(np.concatenate(chosen)), np.sort(np.concatenate(rest))


def check_split(
    labels: np.ndarray,
    class_names: Sequence[str],
    *,
    test_fraction: float,
    labeled_per_class: int | None,
    extra_unlabeled: int = 0,
    source: str = "the source",
) -> None:
    """The UserErrors of `stratified_split`, before any work. labels: (N,) int."""
    counts = class_counts(labels, len(class_names))
    check_class_sizes(counts, class_names, need=2, why="a test image and a training image")
    available = counts - test_counts(counts, test_fraction)
    check_labeled_per_class(available, class_names, labeled_per_class, where="after the test split")
    check_unlabeled_nonempty(available, labeled_per_class, extra_unlabeled, source)


def stratified_split(
    labels: np.ndarray,
    class_names: Sequence[str],
    *,
    test_fraction: float,
    labeled_per_class: int | None,
    seed: int,
    extra_unlabeled: int = 0,
    source: str = "the source",
) -> dict[str, np.ndarray]:
    """Indices of each split, each in a seeded random order. labels: (N,) -> {test, labeled, unlabeled}.

    Per class: round(test_fraction x n) images (at least one) go to test; `labeled_per_class` of the
    rest (None: all of them) to labeled; the remaining training images to unlabeled.
    """
    labels = np.asarray(labels, dtype=np.int64)
    check_split(
        labels,
        class_names,
        test_fraction=test_fraction,
        labeled_per_class=labeled_per_class,
        extra_unlabeled=extra_unlabeled,
        source=source,
    )
    rng = np.random.default_rng(seed)
    test, train = [], []
    for c, n_test in enumerate(test_counts(class_counts(labels, len(class_names)), test_fraction)):
        idx = rng.permutation(np.flatnonzero(labels == c))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    train = np.sort(np.concatenate(train))
    chosen, rest = subsample_per_class(labels[train], len(class_names), labeled_per_class, rng)
    # Shuffle within each split so that every shard holds a mix of classes.
    return {
        "test": rng.permutation(np.concatenate(test)),
        "labeled": rng.permutation(train[chosen]),
        "unlabeled": rng.permutation(train[rest]),
    }
