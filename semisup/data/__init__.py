"""Image data: sources (stl10, digits, folder) -> TFRecord shards + manifest -> tf.data readers.

The readers are what training and evaluation use; `sources`, `shards` and the per-source modules
serve the download and shard stages. TensorFlow is imported only when a reader is first used, so
the download stage and its error messages stay fast.
"""

from typing import Any

__all__ = ["eval_dataset", "load_split", "read_manifest", "train_dataset", "verify_shards"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from semisup.data import readers

        return getattr(readers, name)
    raise AttributeError(f"module 'semisup.data' has no attribute {name!r}")
