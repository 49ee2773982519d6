"""The convolutional encoder of the reference recipe, and CrossEntropy's classification head.

The encoder is the small convnet of the keras-io semi-supervised SimCLR example (Chen et al., 2020):
depth x Conv2D(stride 2, ReLU, valid) -> Flatten -> Dense. Options for multi-crop (PAWS): `same`
padding, and GlobalAveragePooling2D in place of Flatten, which makes an encoder of any image size.
Only built-in layers, so a saved model loads with `keras.models.load_model(path)` in safe mode,
without custom objects.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import keras

from semisup.core.errors import DataError, UserError
from semisup.core.io import atomic_path

# What a saved encoder of this pipeline is made of, in order: anything else is a foreign model.
ENCODER_LAYERS = ("InputLayer", "Conv2D", "Flatten", "Dense")
# The same with encoder.pooling: average (it takes images of any size).
POOLED_ENCODER_LAYERS = ("InputLayer", "Conv2D", "GlobalAveragePooling2D", "Dense")


def min_image_size(depth: int, kernel_size: int, stride: int, padding: str = "valid") -> int:
    """Smallest image side that leaves at least one pixel after `depth` strided convolutions (same: 1)."""
    if padding == "same":
        return 1
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
    padding: str = "valid",
    pooling: str = "flatten",
    name: str = "encoder",
) -> keras.Model:
    """Float32 images (B, H, W, C) in [0, 1] -> embeddings (B, embedding_dim).

    pooling "flatten" (the reference) takes images of `input_shape` only; "average" (GlobalAveragePooling2D)
    takes any height and width that survive the convolutions, so its input is (None, None, C).
    """
    height, width = input_shape[0], input_shape[1]
    need = min_image_size(depth, kernel_size, stride, padding)
    if min(height, width) < need:
        raise UserError(
            f"data.image_size: {min(height, width)} is too small for encoder.depth={depth} "
            f"(kernel {kernel_size}, stride {stride}); it must be at least {need} (or lower encoder.depth)"
        )
    if pooling not in ("flatten", "average") or padding not in ("valid", "same"):
        raise UserError(
            f"encoder: pooling {pooling!r} / padding {padding!r}: pooling is flatten or average, "
            "padding valid or same"
        )
    # Each layer gets its own policy object, named after the global one (float32 or mixed_bfloat16, as
    # set_precision chose): left to default, every layer would hold the one global policy object, and
    # model.save would write it as a shared object whose id is a memory address, new in every process.
    policy = keras.config.dtype_policy().name
    shape = tuple(input_shape) if pooling == "flatten" else (None, None, input_shape[2])
    inputs = keras.Input(shape=shape, dtype="float32", name="images")
    x = inputs
    for i in range(depth):
        x = keras.layers.Conv2D(
            filters,
            kernel_size,
            strides=stride,
            padding=padding,
            activation="relu",
            dtype=policy,
            name=f"conv{i + 1}",
        )(x)
    if pooling == "flatten":
        x = keras.layers.Flatten(dtype=policy, name="flatten")(x)
    else:
        x = keras.layers.GlobalAveragePooling2D(dtype=policy, name="pool")(x)
    outputs = keras.layers.Dense(embedding_dim, dtype=policy, name="embedding")(x)
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
    """Rewrite a .keras zip in place without what changes from run to run: fixed entry times and order,
    no metadata date_saved, shared objects numbered 1, 2, ... instead of by memory address."""
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
            elif info.filename == "config.json":
                data = renumber_shared_objects(data)
            entry = zipfile.ZipInfo(info.filename, date_time=_ZIP_TIME)
            entry.compress_type = info.compress_type
            entry.external_attr = 0o644 << 16
            dst.writestr(entry, data)
    os.replace(tmp, path)


def renumber_shared_objects(config_json: bytes) -> bytes:
    """config.json with each `shared_object_id` replaced by 1, 2, ... in order of first appearance.

    Keras marks an object that several layers hold (a dtype policy, an initializer) with `id(obj)`, a
    memory address that differs in every process. Loading only matches equal ids within one file, so
    any numbering that keeps equal ids equal and distinct ids distinct loads the same model.
    """
    if b'"shared_object_id"' not in config_json:
        return config_json  # byte for byte as Keras wrote it
    numbers: dict[int, int] = {}

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "shared_object_id" in node:
                node["shared_object_id"] = numbers.setdefault(node["shared_object_id"], len(numbers) + 1)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    config = json.loads(config_json)
    walk(config)
    return json.dumps(config).encode()  # as Keras's saving_lib writes it: json.dumps with its defaults


def load_encoder(path: str | Path, *, image_shape: tuple[int, int, int], rerun: str) -> keras.Model:
    """A saved encoder (B, H, W, 3) -> (B, D), in safe mode; a one-line error for anything else at `path`.

    `rerun` says how to make a good one (e.g. "rerun `dvc repro -f pretrain@paws`").
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no saved encoder: {rerun.replace('rerun', 'run', 1)}")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not a .keras model file (empty, truncated or another format): {rerun}")
    try:
        model = keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises ValueError, TypeError, KeyError... for whatever it cannot rebuild
        problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "Lambda" in problem:
            problem = "it holds a Lambda layer (arbitrary Python code), which safe mode refuses"
        raise DataError(f"{path}: not an encoder of this pipeline ({problem[:200]}): {rerun}") from None
    check_encoder(model, path, image_shape=image_shape, rerun=rerun)
    return model


def check_encoder(model: keras.Model, path: str | Path, *, image_shape: tuple[int, ...], rerun: str) -> None:
    """DataError unless `model` is get_encoder's architecture for images of `image_shape`."""
    kinds = [type(layer).__name__ for layer in model.layers]
    # Deduplicated in order: Conv2D repeats `depth` times, each kind must appear once in this order.
    ordered = [k for i, k in enumerate(kinds) if i == 0 or kinds[i - 1] != k]
    if kinds and kinds[0] != "InputLayer":
        ordered.insert(0, "InputLayer")
    if tuple(ordered) not in (ENCODER_LAYERS, POOLED_ENCODER_LAYERS):
        raise DataError(
            f"{path}: layers {', '.join(kinds)} are not this pipeline's encoder "
            f"(Conv2D x depth, Flatten or GlobalAveragePooling2D, Dense): {rerun}"
        )
    inputs = model.inputs
    shape = tuple(inputs[0].shape[1:]) if len(inputs) == 1 else None
    # A pooled encoder takes any height and width: only its channels must match.
    pooled = tuple(ordered) == POOLED_ENCODER_LAYERS and shape is not None and shape[:2] == (None, None)
    if shape != tuple(image_shape) and not (pooled and shape[2:] == tuple(image_shape)[2:]):
        raise DataError(
            f"{path}: takes images of shape {shape}, the shards hold {tuple(image_shape)}: {rerun}"
        )
    if len(model.outputs) != 1 or len(model.outputs[0].shape) != 2:
        raise DataError(f"{path}: does not output one (batch, features) embedding: {rerun}")
