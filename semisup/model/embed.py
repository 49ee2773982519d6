"""Inference: encoder features of image batches (`embed`), and the evaluation splits' embeddings written
as npz for the kNN and linear stages (`embed_splits`)."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from semisup.core.io import check_free_space, output_set, probe_writable
from semisup.core.progress import track
from semisup.data import readers
from semisup.data.base import save_npz
from semisup.model.augment import scale_images
from semisup.model.encoder import load_encoder

SPLITS = ("labeled", "test")


def embed(
    encoder: keras.Model,
    dataset: Iterable,
    *,
    jit_compile: bool = False,
    on_batch: Callable[[], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Encoder features of every (uint8 images, labels) batch, scaled to [0,1], no augmentation.

    -> (features (N, D) float32, labels (N,) int64). Memory is bounded by the batch plus the outputs.
    on_batch() runs after every batch (a command's safe point for an interrupt).
    """
    forward = _inference_fn(encoder, jit_compile)
    feats, labels = [], []
    for images, y in dataset:
        feats.append(forward(images).numpy())
        labels.append(np.asarray(y, dtype=np.int64))
        if on_batch is not None:
            on_batch()
    dim = encoder.output_shape[-1]
    if not feats:
        return np.zeros((0, dim), np.float32), np.zeros((0,), np.int64)
    return np.concatenate(feats).astype(np.float32), np.concatenate(labels)


# One traced inference function per (encoder, jit) for as long as the encoder lives: the per-epoch monitor
# embeds with the same encoder every epoch and should not retrace.
_INFERENCE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _inference_fn(encoder: keras.Model, jit_compile: bool) -> Callable[[tf.Tensor], tf.Tensor]:
    cache = _INFERENCE.setdefault(encoder, {})
    if jit_compile not in cache:

        def forward(images: tf.Tensor) -> tf.Tensor:
            return tf.cast(encoder(scale_images(images), training=False), tf.float32)

        cache[jit_compile] = tf.function(
            forward, jit_compile=jit_compile, reduce_retracing=True, autograph=False
        )
    return cache[jit_compile]


def embed_splits(
    model_path: str | Path,
    shard_dir: str | Path,
    out_dir: str | Path,
    *,
    batch_size: int,
    rerun: str,
    on_batch: Callable[[], None] | None = None,
) -> dict:
    """Write out_dir/{labeled,test}.npz (float32 `features`, int64 `labels`) together; -> images per split.

    Shards and model are checked before anything is computed; the two files appear together or not at all.
    on_batch() runs after every batch.
    """
    manifest = readers.verify_shards(shard_dir)
    encoder = load_encoder(model_path, image_shape=tuple(manifest["image_shape"]), rerun=rerun)
    dim = int(encoder.outputs[0].shape[-1])
    images = sum(manifest["counts"][split] for split in SPLITS)
    probe_writable(out_dir)
    check_free_space(out_dir, images * (4 * dim + 8) + 2**20, "the embeddings")
    counts = {}
    with output_set(out_dir) as (tmp,):
        tmp.mkdir()
        for split in SPLITS:
            batches = -(-manifest["counts"][split] // batch_size)  # progress on large splits only (track)
            dataset = track(
                readers.eval_dataset(shard_dir, split, batch_size), batches, f"embed {split}", batch_size
            )
            features, labels = embed(encoder, dataset, on_batch=on_batch)
            save_npz(tmp / f"{split}.npz", features=features, labels=labels)
            counts[split] = len(labels)
    return counts
