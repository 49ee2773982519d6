"""SuNCEt: supervised noise-contrastive estimation (Assran et al., 2020, arXiv:2006.10803).

InfoNCE on two unlabeled views plus `supervised_weight` x a soft nearest-neighbour loss on the labeled
batch: p(y_i) = sum_{j!=i, y_j=y_i} exp((s_ij-1)/tau) / sum_{j!=i} exp((s_ij-1)/tau), loss -log p(y_i).

`supervised_epochs` switches the supervised term off after that many epochs, as the paper does to save
its compute: the trainer then encodes no labeled batch and the loss is InfoNCE alone.

A labeled image whose class has no other member in the batch has an empty numerator (p = 0, -log p = inf).
Such rows are left out of the mean (and the loss is 0 when no row has a partner): there is nothing for
them to be pulled towards, and clamping p with an epsilon would add a large constant to the loss curve.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import tensorflow as tf

from semisup.methods.common import MASKED, contrastive_loss, normalize, top1_accuracy

if TYPE_CHECKING:
    from semisup.methods import LossInputs, SuNCEtParams


def snn_log_prob(z: tf.Tensor, labels: tf.Tensor, temperature: float) -> tuple[tf.Tensor, tf.Tensor]:
    """log p(y_i) of each labeled row, self excluded; (L, D), (L,) -> ((L,) log p, (L,) has-a-partner)."""
    z = normalize(z)
    logits = (tf.matmul(z, z, transpose_b=True) - 1.0) / temperature  # (L, L); the -1 keeps exp <= 1
    labels = tf.cast(labels, tf.int32)
    not_self = tf.logical_not(tf.cast(tf.eye(tf.shape(z)[0]), tf.bool))
    same = tf.logical_and(tf.equal(labels[:, None], labels[None, :]), not_self)  # (L, L)
    numerator = tf.reduce_logsumexp(tf.where(same, logits, MASKED), axis=1)
    denominator = tf.reduce_logsumexp(tf.where(not_self, logits, MASKED), axis=1)
    return numerator - denominator, tf.reduce_any(same, axis=1)


def supervised_loss(z: tf.Tensor, labels: tf.Tensor, temperature: float) -> tf.Tensor:
    """Mean -log p(y_i) over labeled rows whose class appears at least twice. (L, D), (L,) -> scalar"""
    log_p, valid = snn_log_prob(z, labels, temperature)
    # tf.where (not a product) so the huge finite value of a partnerless row never reaches the sum.
    per_row = tf.where(valid, -log_p, 0.0)
    count = tf.reduce_sum(tf.cast(valid, tf.float32))
    return tf.reduce_sum(per_row) / tf.maximum(count, 1.0)


def loss(
    z1: tf.Tensor,
    z2: tf.Tensor,
    labeled: tf.Tensor | None,
    labels: tf.Tensor | None,
    temperature: float,
    supervised_weight: float = 1.0,
    symmetric: bool = False,
) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """InfoNCE of (B, D) views + weight x supervised SNN loss of (L, D) labeled -> (scalar, logs).

    labeled None (the supervised term switched off): InfoNCE alone, logged with a supervised_loss of 0.
    """
    contrastive, logits, positives = contrastive_loss(z1, z2, temperature, symmetric)
    if labeled is None:
        supervised = tf.constant(0.0, tf.float32)
    else:
        supervised = supervised_loss(labeled, labels, temperature)
    logs = {
        "contrastive_loss": contrastive,
        "supervised_loss": supervised,
        "contrastive_acc": top1_accuracy(logits, positives),
    }
    if labeled is None:
        return contrastive, logs
    return contrastive + supervised_weight * supervised, logs


def compute(inputs: LossInputs, params: SuNCEtParams) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """Registry entry: two unlabeled views + labeled features and labels -> (loss, logs)."""
    z1, z2 = inputs.views
    return loss(
        z1,
        z2,
        inputs.labeled,
        inputs.labels,
        params.temperature,
        params.supervised_weight,
        params.symmetric,
    )
