"""Class-stratified support batches, as PAWS's ClassStratifiedSampler (Assran et al., 2021;
facebookresearch/suncet, src/data_manager.py): each step's labeled batch holds `supports_per_class`
images of each of `classes_per_batch` classes, the classes taken in turn from a seeded permutation.

Every class appears once in every num_classes / classes_per_batch consecutive steps (each step, when
classes_per_batch is every class). A class's images are drawn without replacement, `supports_per_class`
at a time, in a seeded order; when fewer than that are left, a new order starts (the few left wait for
a later pass), so no image appears twice in one step. A batch is laid out as the official sampler lays it out: row
r * classes_per_batch + j is the r-th image of the step's j-th class. The batches are global (the same
on any number of replicas and workers) and depend only on the labels and the seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from semisup.core.errors import UserError


def check(
    counts: Sequence[int],
    *,
    supports_per_class: int | None,
    classes_per_batch: int | None,
    labeled_batch: int,
    method: str = "paws",
    class_names: Sequence[str] | None = None,
    where: str = "the labeled subset",
    more: str = "raise the label budget (study.labeled_per_class)",
) -> int:
    """UserError unless stratified batches can be drawn from a subset of `counts` images per class (C,);
    -> the classes per batch (classes_per_batch, or every class when it is None)."""
    key = f"methods.{method}"
    if supports_per_class is None:
        if classes_per_batch is not None:
            raise UserError(
                f"{key}.classes_per_batch: {classes_per_batch} needs {key}.supports_per_class "
                "(class-stratified supports): set it, or classes_per_batch: null"
            )
        return 0
    num_classes = len(counts)
    cpb = num_classes if classes_per_batch is None else classes_per_batch
    if cpb > num_classes or num_classes % cpb:
        divisors = [d for d in range(1, num_classes + 1) if num_classes % d == 0]
        raise UserError(
            f"{key}.classes_per_batch: {cpb} does not divide the {num_classes} classes into equal turns: "
            f"use one of {', '.join(map(str, divisors))} (or null: every class)"
        )
    smallest = int(np.argmin(counts))
    if counts[smallest] < supports_per_class:
        name = class_names[smallest] if class_names is not None else smallest
        raise UserError(
            f"{key}.supports_per_class: {supports_per_class} is more than class {name!r} has in {where} "
            f"({int(counts[smallest])} images): lower it, or {more}"
        )
    if labeled_batch != cpb * supports_per_class:
        raise UserError(
            f"{key}.labeled_batch: {labeled_batch}, but class-stratified supports make batches of "
            f"classes_per_batch x supports_per_class = {cpb} x {supports_per_class}: "
            f"set labeled_batch to {cpb * supports_per_class}"
        )
    return cpb


def batches(
    labels: np.ndarray,
    num_classes: int,
    *,
    supports_per_class: int,
    classes_per_batch: int | None,
    steps: int,
    seed: int,
) -> np.ndarray:
    """`steps` stratified batches of positions into `labels` (N,) -> int64 (steps, classes x supports)."""
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels, minlength=num_classes)[:num_classes]
    cpb = check(
        counts,
        supports_per_class=supports_per_class,
        classes_per_batch=classes_per_batch,
        labeled_batch=(classes_per_batch or num_classes) * supports_per_class,
    )
    rng = np.random.default_rng(seed)
    turns = num_classes // cpb  # steps per permutation of the classes
    cycles = -(-steps // turns)
    order = np.concatenate([rng.permutation(num_classes) for _ in range(cycles)])
    classes = order[: steps * cpb].reshape(steps, cpb)  # (steps, cpb): each step's classes
    # Each class's turns, in step order: (turns, supports) positions, `per_pass` turns per seeded order.
    turns_of = {}
    for c in range(num_classes):
        ids = np.flatnonzero(labels == c)
        turns = int(np.sum(classes == c))
        per_pass = len(ids) // supports_per_class
        passes = [rng.permutation(ids)[: per_pass * supports_per_class] for _ in range(-(-turns // per_pass))]
        turns_of[c] = iter(np.concatenate(passes or [ids[:0]]).reshape(-1, supports_per_class))
    out = np.empty((steps, supports_per_class, cpb), dtype=np.int64)
    for t in range(steps):
        for j, c in enumerate(classes[t]):
            out[t, :, j] = next(turns_of[c])
    return out.reshape(steps, supports_per_class * cpb)
