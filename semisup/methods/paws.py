"""PAWS: predicting view assignments with support samples (Assran et al., 2021, arXiv:2104.13963).

Each unlabeled view gets soft nearest-neighbour class probabilities against the labeled support batch;
its target is the other view's probabilities, sharpened and held constant (stop-gradient).

Mean-entropy maximisation (`me_max`) follows facebookresearch/suncet (src/losses.py): the term subtracted
from the loss is H(mean over both views of sharpen(prediction)), the entropy of the average *sharpened
prediction*, and it carries gradient (the targets are constants, so their entropy could not regularise
anything). Maximising it keeps the batch from collapsing onto a few classes.
Unlike the reference, targets below 1e-4 are not zeroed: the logarithm of the predictions is clamped instead.

Multi-crop (the paper's, `multicrop` > 0): the small crops of each image are predicted too, each pulled to
the mean of the two large views' sharpened targets; the cross-entropy and the me-max term then run over
every anchor (2 + K views of each image), and targets below 1e-4 are zeroed, all as the official loss
(init_paws_loss) does. Support views and class-stratified supports reach the loss as more labeled rows;
with class-stratified supports, label smoothing spreads its mass over the classes of the step's supports
(the official labels matrix has one column per class of the batch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import tensorflow as tf

from semisup.methods.common import normalize

if TYPE_CHECKING:
    from semisup.methods import LossInputs, PAWSParams

# log(p) of a prediction that underflowed to 0 (its target is then ~0 too); smallest normal float32.
_TINY = 1.1754944e-38
# Multi-crop's targets below this are set to 0 (facebookresearch/suncet, src/losses.py).
_SMALL_TARGET = 1e-4


def sharpen(p: tf.Tensor, temperature: float) -> tf.Tensor:
    """Raise class probabilities to 1/T and renormalise rows. (N, C) -> (N, C)"""
    p = tf.cast(p, tf.float32) ** (1.0 / temperature)
    return p / tf.reduce_sum(p, axis=1, keepdims=True)


def smooth_onehot(
    labels: tf.Tensor, num_classes: int, label_smoothing: float = 0.0, present_only: bool = False
) -> tf.Tensor:
    """(1 - ls) * onehot + ls / C of integer labels. (L,) -> (L, C) float32

    present_only: spread ls over the classes present in `labels` instead of all C (0 on the others).
    """
    onehot = tf.one_hot(tf.cast(labels, tf.int32), num_classes, dtype=tf.float32)
    if not present_only:
        return (1.0 - label_smoothing) * onehot + label_smoothing / num_classes
    present = tf.reduce_max(onehot, axis=0)  # (C,): 1 for a class of the batch
    return (1.0 - label_smoothing) * onehot + label_smoothing * present / tf.reduce_sum(present)


def snn(queries: tf.Tensor, supports: tf.Tensor, support_onehot: tf.Tensor, temperature: float) -> tf.Tensor:
    """Soft nearest-neighbour class probabilities: softmax(q s^T / tau) @ onehot. (N, D), (L, D), (L, C) -> (N, C)"""
    weights = tf.nn.softmax(
        tf.matmul(normalize(queries), normalize(supports), transpose_b=True) / temperature
    )
    return tf.matmul(weights, support_onehot)  # (N, L) x (L, C) -> (N, C)


def targets(probs: tf.Tensor, sharpen_temperature: float) -> tf.Tensor:
    """Sharpened probabilities as constant targets: no gradient flows back through them. (N, C) -> (N, C)"""
    return tf.stop_gradient(sharpen(probs, sharpen_temperature))


def cross_entropy(target: tf.Tensor, probs: tf.Tensor) -> tf.Tensor:
    """Mean over rows of -sum_c target * log(probs). (N, C), (N, C) -> scalar"""
    log_p = tf.math.log(tf.maximum(probs, _TINY))
    return tf.reduce_mean(-tf.reduce_sum(target * log_p, axis=1))


def mean_entropy(p: tf.Tensor) -> tf.Tensor:
    """Entropy H(mean_n p_n) of the average row, in nats. (N, C) -> scalar"""
    avg = tf.reduce_mean(p, axis=0)
    return -tf.reduce_sum(tf.math.xlogy(avg, avg))  # xlogy: 0 log 0 = 0, with a finite gradient


def loss(
    view1: tf.Tensor,
    view2: tf.Tensor,
    supports: tf.Tensor,
    support_labels: tf.Tensor,
    num_classes: int,
    temperature: float = 0.1,
    sharpen_temperature: float = 0.25,
    me_max: bool = True,
    label_smoothing: float = 0.0,
    crops: tuple[tf.Tensor, ...] = (),
    present_only: bool = False,
) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """PAWS of (B, D) views against (L, D) supports with (L,) labels -> (scalar, {"ce", "me_max_entropy"}).

    crops: (B, D) embeddings of small crops of the same images (multi-crop); present_only: label
    smoothing over the supports' classes only (class-stratified supports).
    """
    onehot = smooth_onehot(support_labels, num_classes, label_smoothing, present_only)
    p1 = snn(view1, supports, onehot, temperature)
    p2 = snn(view2, supports, onehot, temperature)
    if crops:
        crop_probs = [snn(c, supports, onehot, temperature) for c in crops]
        return multicrop_loss(p1, p2, crop_probs, sharpen_temperature, me_max)
    # View 1 is predicted from view 2's target and vice versa; the two halves are averaged.
    ce = 0.5 * (
        cross_entropy(targets(p2, sharpen_temperature), p1)
        + cross_entropy(targets(p1, sharpen_temperature), p2)
    )
    entropy = mean_entropy(sharpen(tf.concat([p1, p2], axis=0), sharpen_temperature))
    value = ce - entropy if me_max else ce
    return value, {"ce": ce, "me_max_entropy": entropy}


def multicrop_loss(
    p1: tf.Tensor, p2: tf.Tensor, crop_probs: list[tf.Tensor], sharpen_temperature: float, me_max: bool
) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """The official multi-crop PAWS of the large views' (B, C) and K small crops' (B, C) probabilities.

    Anchors: view 1, view 2, then each crop. Targets: view 1's is view 2's sharpened prediction and vice
    versa, each crop's the mean of the two; below 1e-4 they are 0. Cross-entropy and me-max over all
    (2 + K) B anchors.
    """
    t1, t2 = sharpen(p2, sharpen_temperature), sharpen(p1, sharpen_temperature)
    mean_target = 0.5 * (t1 + t2)
    target = tf.concat([t1, t2] + [mean_target] * len(crop_probs), axis=0)  # ((2 + K) B, C)
    target = tf.stop_gradient(tf.where(target < _SMALL_TARGET, 0.0, target))
    probs = tf.concat([p1, p2, *crop_probs], axis=0)
    ce = cross_entropy(target, probs)
    entropy = mean_entropy(sharpen(probs, sharpen_temperature))
    value = ce - entropy if me_max else ce
    return value, {"ce": ce, "me_max_entropy": entropy}


def compute(inputs: LossInputs, params: PAWSParams) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """Registry entry: two unlabeled views + labeled supports and labels -> (loss, logs)."""
    if inputs.num_classes < 1:
        raise ValueError(
            f"paws: needs num_classes >= 1 to one-hot the support labels, got {inputs.num_classes}"
        )
    view1, view2 = inputs.views
    return loss(
        view1,
        view2,
        inputs.labeled,
        inputs.labels,
        inputs.num_classes,
        params.temperature,
        params.sharpen_temperature,
        params.me_max,
        params.label_smoothing,
        crops=tuple(inputs.crops),
        present_only=params.supports_per_class is not None,
    )
