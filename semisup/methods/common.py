"""Maths several methods share: L2 normalisation, InfoNCE / NT-Xent, top-1 accuracy of logits.

InfoNCE between two augmented views (van den Oord et al., 2018; SimCLR, Chen et al., 2020) lives here
rather than in infonce.py because SuNCEt adds its supervised term to it: every method module imports this
one and no other method's, so a change to one method's file reruns only that method's runs.
Default InfoNCE: one direction, B x B logits, the positive of view-1 row i is view-2 row i.
`symmetric=True`: SimCLR's NT-Xent, 2N x 2N logits with 2N-2 negatives per anchor.
"""

from __future__ import annotations

import tensorflow as tf

# Added to logits that must never win a softmax (self-similarity). Finite rather than -inf so that a row
# whose every entry is masked still has a finite gradient; in float32 exp(-1e9) is exactly 0.
MASKED = -1.0e9


def normalize(x: tf.Tensor) -> tf.Tensor:
    """Cast to float32 (exp(cos/tau) overflows float16) and L2-normalise rows. (N, D) -> (N, D)"""
    return tf.math.l2_normalize(tf.cast(x, tf.float32), axis=-1)


def top1_accuracy(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Fraction of rows whose top-1 logit is the row's label column. (N, M), (N,) -> float32 scalar"""
    top1 = tf.argmax(logits, axis=-1, output_type=tf.int32)
    return tf.reduce_mean(tf.cast(tf.equal(top1, tf.cast(labels, tf.int32)), tf.float32))


def info_nce(z1: tf.Tensor, z2: tf.Tensor, temperature: float) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """One-direction InfoNCE of (B, D) views -> (scalar loss, (B, B) logits, (B,) positive columns)."""
    z1, z2 = normalize(z1), normalize(z2)
    logits = tf.matmul(z1, z2, transpose_b=True) / temperature  # (B, D) x (D, B) -> (B, B)
    labels = tf.range(tf.shape(logits)[0])
    loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    return tf.reduce_mean(loss), logits, labels


def nt_xent(z1: tf.Tensor, z2: tf.Tensor, temperature: float) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Symmetric NT-Xent of (B, D) views -> (scalar loss, (2B, 2B) logits, (2B,) positive columns)."""
    z = normalize(tf.concat([z1, z2], axis=0))  # (2B, D): rows 0..B-1 view 1, rows B..2B-1 view 2
    n = tf.shape(z)[0]
    b = n // 2
    logits = tf.matmul(z, z, transpose_b=True) / temperature  # (2B, 2B)
    logits += MASKED * tf.eye(n)  # an image is not its own negative: 2N-2 negatives remain
    labels = tf.concat([tf.range(b) + b, tf.range(b)], axis=0)  # row i pairs with the other view of i
    loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    # The mean over all 2B anchors is the average of both directions.
    return tf.reduce_mean(loss), logits, labels


def contrastive_loss(
    z1: tf.Tensor, z2: tf.Tensor, temperature: float, symmetric: bool = False
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """InfoNCE (or NT-Xent when `symmetric`) -> (scalar loss, logits, labels)."""
    return (nt_xent if symmetric else info_nce)(z1, z2, temperature)
