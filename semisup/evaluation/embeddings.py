"""A run's embeddings and the shards' class names, as the knn stage and `semisup predict` read them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from semisup.core.errors import DataError, UserError


def load_embeddings(path: Path, method: str) -> tuple[np.ndarray, np.ndarray]:
    """features (N, D) float32 and labels (N,) int64 of one embeddings file."""
    if not path.exists():
        raise UserError(f"{path}: not found (run `dvc repro embed@{method}` first)")
    try:
        with np.load(path) as data:
            features, labels = data["features"], data["labels"]
    except KeyError as exc:
        raise DataError(
            f"{path}: no array {exc} (expected 'features' and 'labels'; rerun embed@{method})"
        ) from None
    except (OSError, ValueError) as exc:
        raise DataError(
            f"{path}: not a readable .npz file ({exc}); rerun `dvc repro -f embed@{method}`"
        ) from None
    return features.astype(np.float32, copy=False), labels.astype(np.int64, copy=False)


def check_labels(path: Path, features: np.ndarray, labels: np.ndarray, num_classes: int, method: str) -> None:
    """A DataError unless labels (N,) pair with features (N, D) and are class ids in [0, num_classes)."""
    if labels.shape != features.shape[:1]:
        raise DataError(
            f"{path}: {labels.shape} labels for {features.shape} features; rerun `dvc repro -f embed@{method}`"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
            f"{path}: labels outside [0, {num_classes}) (the manifest's classes); rerun `dvc repro embed@{method}`"
        )


def load_class_names(shards: Path) -> list[str]:
    """Class names, in class-id order, from the shard manifest."""
    path = shards / "manifest.json"
    if not path.exists():
        raise UserError(f"{path}: not found (run `dvc repro shard` first)")
    try:
        manifest = json.loads(path.read_text())
        names, count = list(manifest["class_names"]), int(manifest["num_classes"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: unreadable manifest ({exc}); rerun `dvc repro -f shard`") from None
    if len(names) != count:
        raise DataError(
            f"{path}: {len(names)} class_names but num_classes {count}; rerun `dvc repro -f shard`"
        )
    return [str(n) for n in names]
