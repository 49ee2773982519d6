"""Supervised baseline: softmax cross-entropy of a linear head on the labeled images only.

The encoder is followed by ReLU -> Dense(classes) for this method alone (on top of the projection head when
encoder.projection_layers > 0); unlabeled images are never encoded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import tensorflow as tf

from semisup.methods.common import top1_accuracy

if TYPE_CHECKING:
    from semisup.methods import CrossEntropyParams, LossInputs


def loss(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Mean softmax cross-entropy of (L, C) head logits against (L,) integer labels -> float32 scalar."""
    logits = tf.cast(logits, tf.float32)  # float16 logits lose the log-sum-exp's precision
    per_row = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(labels, tf.int32), logits=logits)
    return tf.reduce_mean(per_row)


def compute(inputs: LossInputs, params: CrossEntropyParams) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """Registry entry: head logits of the labeled batch -> (loss, {"accuracy"})."""
    del params  # the batch sizes it holds are the trainer's business
    return loss(inputs.labeled, inputs.labels), {"accuracy": top1_accuracy(inputs.labeled, inputs.labels)}
