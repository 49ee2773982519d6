"""Cosine k-nearest-neighbour classification of embeddings, chunked over queries.

The evaluation protocol of Wu et al. (2018), "Unsupervised feature learning via non-parametric
instance discrimination": top-k cosine neighbours in a labeled bank, unweighted majority vote and a
vote weighted by exp(similarity / T).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from semisup.core.errors import DataError, UserError

Predictions = dict[int, tuple[np.ndarray, np.ndarray]]


def knn_predict(
    bank_features: Any,
    bank_labels: Any,
    query_features: Any,
    *,
    ks: Sequence[int],
    num_classes: int,
    temperature: float = 0.07,
    query_chunk: int = 1024,
) -> Predictions:
    """Per k: (unweighted, weighted) class predictions (Q,) int64 of queries (Q, D) from a bank (N, D)."""
    bank, labels, queries = _validated(
        bank_features, bank_labels, query_features, ks, num_classes, temperature, query_chunk
    )
    ks = tuple(sorted({int(k) for k in ks}))
    step = _chunk_step(ks, num_classes)
    temperature = tf.constant(temperature, tf.float32)
    chunks = []
    with _full_float32():
        bank = tf.math.l2_normalize(bank, axis=1)
        for start in range(0, int(queries.shape[0]), query_chunk):
            chunk = queries[start : start + query_chunk]
            chunks.append(step(bank, labels, chunk, temperature).numpy())  # (2 len(ks), B)
    preds = np.concatenate(chunks, axis=1).astype(np.int64)  # (2 len(ks), Q)
    return {k: (preds[2 * i], preds[2 * i + 1]) for i, k in enumerate(ks)}


def knn_accuracy(
    bank_features: Any,
    bank_labels: Any,
    query_features: Any,
    query_labels: Any,
    *,
    ks: Sequence[int],
    num_classes: int,
    temperature: float = 0.07,
    query_chunk: int = 1024,
) -> dict[str, dict[str, float]]:
    """{"k<k>": {"accuracy", "weighted_accuracy"}} of queries (Q, D) with labels (Q,) against a bank (N, D)."""
    query_features = _features(query_features, "query_features")
    query_labels = _labels(query_labels, "query_labels", num_classes)
    if query_labels.shape[0] != query_features.shape[0]:
        raise UserError(
            f"knn: {query_labels.shape[0]} query labels for {query_features.shape[0]} query features "
            "(they must match one to one)"
        )
    predictions = knn_predict(
        bank_features,
        bank_labels,
        query_features,
        ks=ks,
        num_classes=num_classes,
        temperature=temperature,
        query_chunk=query_chunk,
    )
    return accuracy_metrics(predictions, query_labels)


def accuracy_metrics(predictions: Mapping[int, tuple[np.ndarray, np.ndarray]], labels: Any) -> dict:
    """{"k<k>": {"accuracy", "weighted_accuracy"}} of knn_predict's output against true labels (Q,)."""
    labels = np.asarray(labels)
    return {
        f"k{k}": {
            "accuracy": float(np.mean(plain == labels)),
            "weighted_accuracy": float(np.mean(weighted == labels)),
        }
        for k, (plain, weighted) in predictions.items()
    }


def per_class_accuracy(predictions: Any, labels: Any, num_classes: int) -> list[float | None]:
    """Accuracy of predictions (Q,) within each true class; None for a class with no queries."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    result: list[float | None] = []
    for c in range(num_classes):
        mask = labels == c
        result.append(float(np.mean(predictions[mask] == c)) if mask.any() else None)
    return result


@functools.lru_cache(maxsize=16)
def _chunk_step(ks: tuple[int, ...], num_classes: int) -> Any:
    """A tf.function: (bank (N, D) unit rows, labels (N,), queries (B, D), T) -> predictions (2 len(ks), B)."""
    spec = [
        tf.TensorSpec([None, None], tf.float32),
        tf.TensorSpec([None], tf.int32),
        tf.TensorSpec([None, None], tf.float32),
        tf.TensorSpec([], tf.float32),
    ]

    @tf.function(input_signature=spec, autograph=False)
    def step(bank: tf.Tensor, labels: tf.Tensor, queries: tf.Tensor, temperature: tf.Tensor) -> tf.Tensor:
        # One top-k at the largest k serves every k: its first k columns are the top k.
        top_labels, weights = _neighbours(bank, labels, queries, temperature, ks[-1])  # (B, kmax) each
        out = []
        for k in ks:
            votes = _class_sums(top_labels[:, :k], tf.ones_like(weights[:, :k]), num_classes)
            weighted = _class_sums(top_labels[:, :k], weights[:, :k], num_classes)
            out += [_argmax_lowest(votes), _argmax_lowest(weighted)]
        return tf.stack(out)  # (2 len(ks), B)

    return step


def knn_vote(
    bank_features: Any,
    bank_labels: Any,
    query_features: Any,
    *,
    k: int,
    num_classes: int,
    weighted: bool = True,
    temperature: float = 0.07,
    query_chunk: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """knn_predict's vote at one k, and how sure it is: predictions (Q,) int64 and the winning class's
    share of the vote (Q,) float32 (of exp(sim/T) weights, or of the k neighbours when not weighted)."""
    bank, labels, queries = _validated(
        bank_features, bank_labels, query_features, [k], num_classes, temperature, query_chunk
    )
    step = _vote_step(int(k), num_classes, bool(weighted))
    temperature = tf.constant(temperature, tf.float32)
    predictions, shares = [], []
    with _full_float32():
        bank = tf.math.l2_normalize(bank, axis=1)
        for start in range(0, int(queries.shape[0]), query_chunk):
            predicted, share = step(bank, labels, queries[start : start + query_chunk], temperature)
            predictions.append(predicted.numpy())
            shares.append(share.numpy())
    return np.concatenate(predictions).astype(np.int64), np.concatenate(shares)


@functools.lru_cache(maxsize=16)
def _vote_step(k: int, num_classes: int, weighted: bool) -> Any:
    """A tf.function: (bank (N, D) unit rows, labels (N,), queries (B, D), T) -> (predictions (B,), shares (B,))."""
    spec = [
        tf.TensorSpec([None, None], tf.float32),
        tf.TensorSpec([None], tf.int32),
        tf.TensorSpec([None, None], tf.float32),
        tf.TensorSpec([], tf.float32),
    ]

    @tf.function(input_signature=spec, autograph=False)
    def step(
        bank: tf.Tensor, labels: tf.Tensor, queries: tf.Tensor, temperature: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        top_labels, weights = _neighbours(bank, labels, queries, temperature, k)  # (B, k) each
        votes = _class_sums(top_labels, weights if weighted else tf.ones_like(weights), num_classes)  # (B, C)
        return _argmax_lowest(votes), tf.reduce_max(votes, axis=1) / tf.reduce_sum(votes, axis=1)

    return step


def _neighbours(
    bank: tf.Tensor, labels: tf.Tensor, queries: tf.Tensor, temperature: tf.Tensor, k: int
) -> tuple[tf.Tensor, tf.Tensor]:
    """Labels of each query's k nearest bank rows by cosine similarity, and their vote weights: (B, k) each."""
    queries = tf.math.l2_normalize(queries, axis=1)
    sims = tf.matmul(queries, bank, transpose_b=True)  # (B, D) x (D, N) -> (B, N)
    top_sims, top_idx = tf.math.top_k(sims, k=k, sorted=True)  # (B, k)
    # Subtracting each row's best similarity rescales a row's weights by one common factor, so the
    # vote is unchanged, and exp never overflows however small T is.
    weights = tf.exp((top_sims - top_sims[:, :1]) / temperature)  # (B, k)
    return tf.gather(labels, top_idx), weights


def _class_sums(labels: tf.Tensor, values: tf.Tensor, num_classes: int) -> tf.Tensor:
    """Per row, the sum of values (B, k) by class labels (B, k) -> (B, C)."""
    rows = tf.shape(labels)[0]
    segment = labels + num_classes * tf.range(rows)[:, None]  # one segment per (row, class)
    sums = tf.math.unsorted_segment_sum(values, segment, num_segments=rows * num_classes)
    return tf.reshape(sums, [rows, num_classes])


def _argmax_lowest(scores: tf.Tensor) -> tf.Tensor:
    """Column of each row's maximum of scores (B, C), the lowest one on a tie (tf.argmax does not promise that)."""
    num_classes = tf.shape(scores)[1]
    is_max = tf.cast(scores >= tf.reduce_max(scores, axis=1, keepdims=True), tf.int32)
    preference = num_classes - tf.range(num_classes)  # distinct and decreasing: lowest class wins
    return tf.argmax(is_max * preference[None, :], axis=1, output_type=tf.int32)


@contextlib.contextmanager
def _full_float32() -> Iterator[None]:
    """Turn off TensorFloat-32 matmuls (GPUs since Ampere) for the block: their 10-bit mantissa
    reorders near neighbours; restore the caller's setting afterwards."""
    was_enabled = tf.config.experimental.tensor_float_32_execution_enabled()
    tf.config.experimental.enable_tensor_float_32_execution(False)
    try:
        yield
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(was_enabled)


def _validated(
    bank_features: Any,
    bank_labels: Any,
    query_features: Any,
    ks: Sequence[int],
    num_classes: int,
    temperature: float,
    query_chunk: int,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Check every argument before any compute; return bank (N, D), labels (N,) int32, queries (Q, D)."""
    _check_scalars(ks, num_classes, temperature, query_chunk)
    bank = _features(bank_features, "bank_features")
    queries = _features(query_features, "query_features")
    labels = _labels(bank_labels, "bank_labels", num_classes)
    n = int(bank.shape[0])
    if n == 0 or int(queries.shape[0]) == 0:
        raise UserError(
            f"knn: empty input ({n} bank rows, {int(queries.shape[0])} queries); embed some data first"
        )
    if labels.shape[0] != n:
        raise UserError(
            f"knn: {labels.shape[0]} bank labels for {n} bank features (they must match one to one)"
        )
    if bank.shape[1] != queries.shape[1]:
        raise UserError(
            f"knn: bank features have dimension {bank.shape[1]} but queries {queries.shape[1]} "
            "(embed both with the same encoder)"
        )
    if max(ks) > n:
        raise UserError(f"knn.k: {max(ks)} is larger than the bank ({n} labeled examples); use k <= {n}")
    return bank, tf.constant(labels, tf.int32), queries


def _check_scalars(ks: Sequence[int], num_classes: int, temperature: float, query_chunk: int) -> None:
    """UserErrors for k values, class count, temperature and chunk size."""
    ks = list(ks)
    if not ks:
        raise UserError("knn.k: no k given; list at least one, e.g. [20, 200]")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise UserError(f"knn.k: {k!r} is not a positive integer")
    if num_classes < 1:
        raise UserError(f"knn: num_classes {num_classes} must be at least 1")
    if not temperature > 0:
        raise UserError(f"knn.temperature: {temperature!r} must be > 0")
    if query_chunk < 1:
        raise UserError(f"knn.query_chunk: {query_chunk!r} must be >= 1")


def _features(features: Any, name: str) -> tf.Tensor:
    """Features as a float32 (rows, D) tensor, kept on its device if it already is a tensor."""
    tensor = tf.convert_to_tensor(features)
    if tensor.shape.rank != 2:
        raise UserError(f"knn: {name} must be a (rows, dim) matrix, got shape {tuple(tensor.shape)}")
    tensor = tf.cast(tensor, tf.float32)
    if not bool(tf.reduce_all(tf.math.is_finite(tensor))):
        raise DataError(
            f"knn: {name} holds NaN or infinite values (did training diverge? check the loss curve)"
        )
    return tensor


def _labels(labels: Any, name: str, num_classes: int) -> np.ndarray:
    """Labels as an int64 vector, every one in [0, num_classes)."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or not (np.issubdtype(labels.dtype, np.integer) or labels.size == 0):
        raise UserError(
            f"knn: {name} must be a vector of integer class ids, got {labels.dtype} {labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)][0]
        raise UserError(
            f"knn: {name} holds class id {bad}, outside [0, {num_classes}) "
            "(unlabeled examples have -1: keep them out of the bank and the queries)"
        )
    return labels.astype(np.int64)
