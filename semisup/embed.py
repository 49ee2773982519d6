"""Embeddings of the evaluation splits with a saved encoder, written as npz for the kNN stage."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from semisup.data import readers
from semisup.errors import UserError
from semisup.io import atomic_path
from semisup.progress import track
from semisup.train import embed

SPLITS = ("labeled", "test")


def load_encoder(path: str | Path) -> keras.Model:
    """Load a saved encoder in Keras' safe mode; a clear error when it is missing."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no saved encoder (run `dvc repro pretrain@{path.parent.name}` first)")
    return keras.models.load_model(path, compile=False, safe_mode=True)


def embed_splits(
    model_path: str | Path, shard_dir: str | Path, out_dir: str | Path, *, batch_size: int
) -> dict:
    """Write out_dir/{labeled,test}.npz (float32 `features`, int64 `labels`); -> images per split."""
    manifest = readers.verify_shards(shard_dir)
    encoder = load_encoder(model_path)
    counts = {}
    for split in SPLITS:
        batches = -(-manifest["counts"][split] // batch_size)  # progress on large splits only (track)
        dataset = track(
            readers.eval_dataset(shard_dir, split, batch_size), batches, f"embed {split}", batch_size
        )
        features, labels = embed(encoder, dataset)
        with atomic_path(Path(out_dir) / f"{split}.npz", suffix=".npz") as tmp:
            np.savez(tmp, features=features, labels=labels)
        counts[split] = len(labels)
    return counts
