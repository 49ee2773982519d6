"""Supervised baseline: softmax cross-entropy of a linear head on the labeled images only.

The encoder is followed by ReLU -> Dense(classes) for this method alone; unlabeled images are never encoded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import tensorflow as tf

if TYPE_CHECKING:
    from semisup.config import CrossEntropyParams
    from semisup.methods import LossInputs


def loss(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Mean softmax cross-entropy of (L, C) head logits against (L,) integer labels -> float32 scalar."""
    logits = tf.cast(logits, tf.float32)  # float16 logits lose the log-sum-exp's precision
    per_row = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(labels, tf.int32), logits=logits)
    return tf.reduce_mean(per_row)


def accuracy(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Top-1 training accuracy of (L, C) logits against (L,) labels -> float32 scalar."""
    hits = tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), tf.cast(labels, tf.int32))
    return tf.reduce_mean(tf.cast(hits, tf.float32))


def compute(inputs: LossInputs, params: CrossEntropyParams) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """Registry entry: head logits of the labeled batch -> (loss, {"accuracy"})."""
    del params  # the batch sizes it holds are the trainer's business
    return loss(inputs.labeled, inputs.labels), {"accuracy": accuracy(inputs.labeled, inputs.labels)}
