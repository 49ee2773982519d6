"""The convolutional encoder of the reference recipe, and CrossEntropy's classification head.

The encoder is the small convnet of the keras-io semi-supervised SimCLR example (Chen et al., 2020):
depth x Conv2D(stride 2, ReLU, valid) -> Flatten -> Dense. Only built-in layers, so a saved model
loads with `keras.models.load_model(path)` in safe mode, without custom objects.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import keras

from semisup.errors import UserError
from semisup.io import atomic_path


def min_image_size(depth: int, kernel_size: int, stride: int) -> int:
    """Smallest image side that leaves at least one pixel after `depth` valid strided convolutions."""
    size = 1
    for _ in range(depth):
        size = (size - 1) * stride + kernel_size
    return size


def get_encoder(
    input_shape: tuple[int, int, int],
    *,
    filters: int = 128,
    depth: int = 4,
    kernel_size: int = 3,
    stride: int = 2,
    embedding_dim: int = 128,
    name: str = "encoder",
) -> keras.Model:
    """Float32 images (B, H, W, C) in [0, 1] -> embeddings (B, embedding_dim)."""
    height, width = input_shape[0], input_shape[1]
    need = min_image_size(depth, kernel_size, stride)
    if min(height, width) < need:
        raise UserError(
            f"data.image_size: {min(height, width)} is too small for encoder.depth={depth} "
            f"(kernel {kernel_size}, stride {stride}); it must be at least {need} (or lower encoder.depth)"
        )
    inputs = keras.Input(shape=tuple(input_shape), dtype="float32", name="images")
    x = inputs
    for i in range(depth):
        x = keras.layers.Conv2D(
            filters, kernel_size, strides=stride, padding="valid", activation="relu", name=f"conv{i + 1}"
        )(x)
    x = keras.layers.Flatten(name="flatten")(x)
    outputs = keras.layers.Dense(embedding_dim, name="embedding")(x)
    return keras.Model(inputs, outputs, name=name)


def get_head(num_classes: int, input_dim: int | None = None, name: str = "head") -> keras.Sequential:
    """CrossEntropy's classifier: embeddings (B, D) -> ReLU -> logits (B, num_classes).

    With `input_dim` the head is built at once, so its variables exist before an optimizer sees them.
    """
    if num_classes < 2:
        raise UserError(
            f"head: {num_classes} classes; a classifier needs at least 2 (check the labeled data)"
        )
    layers = [keras.layers.ReLU(name="relu"), keras.layers.Dense(num_classes, name="logits")]
    if input_dim is not None:
        layers.insert(0, keras.Input((input_dim,)))
    return keras.Sequential(layers, name=name)


# Every entry of a saved model gets this time: a .keras zip otherwise records when it was written, so
# identical weights would give new bytes (and DVC a new model) on every run.
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def save_encoder(model: keras.Model, path: str | Path) -> None:
    """model.save(path) as a .keras file whose bytes depend only on the model: written atomically."""
    path = Path(path)
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
        canonical_keras(tmp)


def canonical_keras(path: str | Path) -> None:
    """Rewrite a .keras zip in place without write times: fixed entry times, no metadata date_saved."""
    path = Path(path)
    with zipfile.ZipFile(path) as src:
        entries = [(info, src.read(info.filename)) for info in src.infolist()]
    tmp = path.with_name(path.name + ".canonical")
    with zipfile.ZipFile(tmp, "w") as dst:
        for info, data in sorted(entries, key=lambda e: e[0].filename):
            if info.filename == "metadata.json":
                meta = json.loads(data)
                meta.pop("date_saved", None)
                data = json.dumps(meta, sort_keys=True).encode()
            entry = zipfile.ZipInfo(info.filename, date_time=_ZIP_TIME)
            entry.compress_type = info.compress_type
            entry.external_attr = 0o644 << 16
            dst.writestr(entry, data)
    os.replace(tmp, path)
