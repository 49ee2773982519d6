"""Embeddings of the evaluation splits with a saved encoder, written as npz for the kNN stage."""

from __future__ import annotations

from pathlib import Path

from semisup.data import readers
from semisup.data.sources import save_npz
from semisup.encoder import load_encoder
from semisup.io import check_free_space, output_set, probe_writable
from semisup.progress import track
from semisup.train import embed

SPLITS = ("labeled", "test")


def embed_splits(
    model_path: str | Path, shard_dir: str | Path, out_dir: str | Path, *, batch_size: int, rerun: str
) -> dict:
    """Write out_dir/{labeled,test}.npz (float32 `features`, int64 `labels`) together; -> images per split.

    Shards and model are checked before anything is computed; the two files appear together or not at all.
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
            features, labels = embed(encoder, dataset)
            save_npz(tmp / f"{split}.npz", features=features, labels=labels)
            counts[split] = len(labels)
    return counts
