"""The kNN monitor: unweighted kNN accuracy of the encoder being trained, after an epoch.

The bank is the labeled images the run trains with (its subset, or all), the queries the test split: the
per-epoch curve of what the knn stage scores at the end.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import keras
import tensorflow as tf

from semisup.config import Params
from semisup.data import readers
from semisup.data.splits import class_counts
from semisup.evaluation.knn import knn_accuracy
from semisup.model.embed import embed
from semisup.training.few_labels import fit_k


def monitor(
    encoder: keras.Model,
    shard_dir: str | Path,
    params: Params,
    num_classes: int,
    labeled_ids: Sequence[int] | None = None,
) -> dict[str, float]:
    """{"knn_<k>": accuracy} of `encoder`: the labeled images trained on (labeled_ids, or all) as the bank,
    the test split as queries."""
    batch = params.embed.batch_size
    jit = params.train.jit_compile
    images, labels = readers.labeled_subset(shard_dir, labeled_ids)
    bank_data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch)
    bank, bank_labels = embed(encoder, bank_data, jit_compile=jit)
    queries, query_labels = embed(encoder, readers.eval_dataset(shard_dir, "test", batch), jit_compile=jit)
    # A k not smaller than the bank: the few-labels rule's, logged under the key of the k asked for.
    ks, _ = fit_k(params.knn.k, class_counts(bank_labels, num_classes))
    scores = knn_accuracy(
        bank,
        bank_labels,
        queries,
        query_labels,
        ks=ks,
        num_classes=num_classes,
        temperature=params.knn.temperature,
        query_chunk=params.knn.query_chunk,
    )
    return {f"knn_k{k}": scores[f"k{used}"]["accuracy"] for k, used in zip(params.knn.k, ks, strict=True)}
