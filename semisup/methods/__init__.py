"""The methods: each one's loss and what it needs from a batch, picked by name from `METHODS`.

The trainer encodes what a method declares (`unlabeled_views`, `uses_labeled`, `has_head`), gathers the
features of all replicas, and calls `compute(LossInputs(...), params_section)`. Losses are plain float32
maths on the global batch, safe inside `tf.function(jit_compile=True)`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import tensorflow as tf

from semisup.methods import crossentropy, infonce, paws, suncet


@dataclass(frozen=True)
class LossInputs:
    """Encoded batch handed to a loss: unlabeled views (B, D) each, labeled features (L, D) or logits (L, C)."""

    views: tuple[tf.Tensor, ...] = ()  # embeddings of the unlabeled views; same images in the same order
    labeled: tf.Tensor | None = None  # labeled embeddings (L, D); for CrossEntropy the head logits (L, C)
    labels: tf.Tensor | None = None  # (L,) integer class ids
    num_classes: int = 0


LossFn = Callable[[LossInputs, Any], tuple[tf.Tensor, dict[str, tf.Tensor]]]


@dataclass(frozen=True)
class Method:
    """A method's loss and the parts of a batch it needs encoded."""

    name: str
    unlabeled_views: int  # augmented views of the unlabeled batch to encode: 0 or 2
    uses_labeled: bool  # whether the labeled batch is encoded at all
    has_head: bool  # encoder -> ReLU -> Dense(classes); `labeled` then holds logits
    compute: LossFn  # (inputs, params section) -> (scalar float32 loss, float32 scalar logs)
    # The loss and logs are means over labeled rows that do not interact (no other row in the formula):
    # under several replicas each computes them on its own rows and the replicas average them, with no
    # gather of features or labels.
    per_example: bool = False


def _static_dim(t: tf.Tensor, axis: int) -> int | None:
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
    if not method.uses_labeled:
        if inputs.labeled is not None:
            raise ValueError(f"{name}: does not use the labeled batch; do not encode it")
        return
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


def _checked(method: Method) -> Method:
    """The same method, its `compute` checking the inputs against the declared needs first."""
    loss_fn = method.compute

    def compute(inputs: LossInputs, params: Any) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        check_inputs(method, inputs)
        return loss_fn(inputs, params)

    return dataclasses.replace(method, compute=compute)


METHODS: dict[str, Method] = {
    m.name: _checked(m)
    for m in (
        Method(
            "crossentropy",
            unlabeled_views=0,
            uses_labeled=True,
            has_head=True,
            compute=crossentropy.compute,
            per_example=True,
        ),
        Method("infonce", unlabeled_views=2, uses_labeled=False, has_head=False, compute=infonce.compute),
        Method("suncet", unlabeled_views=2, uses_labeled=True, has_head=False, compute=suncet.compute),
        Method("paws", unlabeled_views=2, uses_labeled=True, has_head=False, compute=paws.compute),
    )
}

__all__ = ["METHODS", "LossInputs", "Method", "check_inputs"]
