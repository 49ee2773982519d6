"""Checks that run before any compute: what a stage can know to fail from params, manifest and disk alone.

Each raises a one-line UserError naming the key or folder, what is wrong and what to do.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from semisup.config import EncoderParams, Params, RunSpec
from semisup.core.errors import DataError, UserError
from semisup.core.io import check_free_space, probe_writable
from semisup.methods import METHODS

_SLACK = 2**20  # file headers, JSON, dvclive's few lines


def check_batches(
    manifest: dict[str, Any],
    method_name: str,
    method_params: Any,
    labeled: int | None = None,
    method: str | None = None,
) -> None:
    """Fail before any compute when a split (or the labeled subset of `labeled` images) cannot fill one of
    the batches of `method_name` (a method, or a configuration of registered `method`); only the parts
    the method reads count."""
    spec = METHODS[method or method_name]
    needs = [("unlabeled", method_params.unlabeled_batch, manifest["counts"].get("unlabeled", 0))]
    if spec.uses_labeled:
        available = manifest["counts"].get("labeled", 0) if labeled is None else labeled
        needs.append(("labeled", method_params.labeled_batch, available))
    for split, batch, available in needs:
        if available < batch:
            what = f"{split} split" if split == "unlabeled" or labeled is None else "labeled subset"
            raise DataError(
                f"methods.{method_name}.{split}_batch: {batch} is larger than the {what} "
                f"({available} images): lower it or add data"
            )


def conv_side(side: int, enc: EncoderParams) -> int:
    """An image side after the encoder's `depth` strided convolutions (valid or same padding); <= 0: none."""
    for _ in range(enc.depth):
        side = -(-side // enc.stride) if enc.padding == "same" else (side - enc.kernel_size) // enc.stride + 1
    return side


def check_crops(spec: RunSpec, image_size: int) -> None:
    """Multi-crop needs an encoder of any image size (pooling average) whose convolutions leave the small
    crops at least one pixel: a UserError naming the key otherwise."""
    views, enc = spec.views, spec.params.encoder
    if not views.multicrop:
        return
    key = f"methods.{spec.name}"
    if enc.pooling != "average":
        raise UserError(
            f"{key}.multicrop: {views.multicrop} small crops need an encoder that takes several image sizes: "
            "set encoder.pooling: average (Flatten takes one size only), or multicrop: 0"
        )
    crops = views.crop_settings(image_size)
    if crops.size > image_size:
        raise UserError(
            f"{key}.multicrop_size: {crops.size} is larger than the images ({image_size}): use at most {image_size}"
        )
    if conv_side(crops.size, enc) < 1:
        given = "" if views.multicrop_size else f" (the {crops.preset} preset's)"
        raise UserError(
            f"{key}.multicrop_size: small crops of {crops.size} pixels{given} do not survive "
            f"encoder.depth={enc.depth} (kernel {enc.kernel_size}, stride {enc.stride}, padding {enc.padding}): set encoder.padding: "
            "same, or raise multicrop_size"
        )


def check_supports(spec: RunSpec, shard_dir: str | os.PathLike, manifest: dict[str, Any]) -> None:
    """Class-stratified supports (supports_per_class) against the run's labeled subset: a UserError naming
    the key when a class has too few images, classes_per_batch does not divide the classes, or
    labeled_batch is not their product. Reads the subset's labels only when the option is on."""
    views, labeled_ids = spec.views, spec.labeled_ids
    if views.supports_per_class is None and views.classes_per_batch is None:
        return
    import numpy as np  # here: the linear stage imports this module before it pins BLAS's threads

    from semisup.data import stratified
    from semisup.data.subsets import labeled_split_labels

    labels, _ = labeled_split_labels(shard_dir)
    if labeled_ids is not None:
        labels = labels[np.asarray(list(labeled_ids), dtype=np.int64)]
    num_classes = int(manifest["num_classes"])
    stratified.check(
        np.bincount(labels, minlength=num_classes)[:num_classes],
        supports_per_class=views.supports_per_class,
        classes_per_batch=views.classes_per_batch,
        labeled_batch=spec.method_params.labeled_batch,
        method=spec.name,
        class_names=manifest.get("class_names"),
        where="the run's labeled subset" if labeled_ids is not None else "the labeled split",
        more="raise the label budget (study.labeled_per_class)"
        if labeled_ids is not None
        else "label more images (data.labeled_per_class)",
    )


def check_run(spec: RunSpec, manifest: dict[str, Any], shard_dir: str | os.PathLike | None = None) -> None:
    """What a run (a method or configuration, its labeled subset) can fail on, from the manifest alone: its
    batches; multi-crop against the encoder, and with `shard_dir`, class-stratified supports against the
    subset's labels."""
    check_crops(spec, int(manifest["image_shape"][0]))
    if shard_dir is not None:
        check_supports(spec, shard_dir, manifest)
    labeled = None if spec.labeled_ids is None else len(spec.labeled_ids)
    check_batches(manifest, spec.name, spec.method_params, labeled, spec.method.name)
    # knn.k is not checked against the bank: the monitor and the knn stage fit a k not smaller than the
    # bank to it (semisup.training.few_labels.fit_k).


def check_manifest_matches(manifest: dict[str, Any], params: Params, where: str | os.PathLike) -> None:
    """DataError when the shards were written for another image size or source than params.yaml asks for."""
    data = params.data
    want = [data.image_size, data.image_size, 3]
    if list(manifest.get("image_shape", [])) != want:
        raise DataError(
            f"{where}: shards of {manifest.get('image_shape')} images, params.yaml's data.image_size "
            f"asks for {want}: run the shard stage again (dvc repro shard)"
        )
    if manifest.get("source") not in (None, data.source):
        raise DataError(
            f"{where}: shards of source {manifest['source']!r}, params.yaml's data.source is "
            f"{data.source!r}: run the download and shard stages again (dvc repro shard)"
        )


def encoder_weights(image_shape: Sequence[int], enc: EncoderParams) -> int:
    """Number of weights of get_encoder(image_shape, ...) with `enc`'s settings, without building it."""
    channels = image_shape[2]
    total = 0
    for _ in range(enc.depth):
        total += enc.filters * (enc.kernel_size**2 * channels + 1)
        channels = enc.filters
    pixels = (
        1 if enc.pooling == "average" else conv_side(image_shape[0], enc) * conv_side(image_shape[1], enc)
    )
    return total + pixels * channels * enc.embedding_dim + enc.embedding_dim


def projection_weights(enc: EncoderParams) -> int:
    """Number of weights of the projection head (semisup.model.projection) with `enc`'s settings, BatchNorm's
    moving statistics included (the checkpoints hold them); 0 without a head."""
    if enc.projection_layers == 0:
        return 0
    total, width = 0, enc.embedding_dim
    for _ in range(enc.projection_layers - 1):
        total += (width + 1) * enc.projection_hidden + 4 * enc.projection_hidden  # Dense + BatchNorm
        width = enc.projection_hidden
    return total + (width + 1) * enc.projection_dim


def pretrain_bytes(image_shape: Sequence[int], enc: EncoderParams, num_classes: int) -> dict[str, int]:
    """Bytes pretrain writes: 'model' (float32 weights of the encoder) and 'checkpoints' (two checkpoints
    of encoder, projection head, classifier head and Adam's two slots while a new one replaces the old)."""
    width = enc.projection_dim if enc.projection_layers else enc.embedding_dim
    weights = encoder_weights(image_shape, enc) + width * num_classes + num_classes
    trained = weights + projection_weights(enc)
    return {"model": 4 * weights + _SLACK, "checkpoints": 2 * 3 * 4 * trained + _SLACK}


def check_pretrain(
    spec: RunSpec,
    shard_dir: str | os.PathLike,
    model_dir: str | os.PathLike,
    metrics_dir: str | os.PathLike,
    checkpoint_dir: str | os.PathLike,
    live_dir: str | os.PathLike | None = None,
) -> None:
    """Everything pretrain@run can check before its first step, for the resolved run `spec` (its params,
    labeled subset); `live_dir`: where its curves appear as it trains (None: off)."""
    from semisup.data.readers import MANIFEST, read_manifest

    name = spec.name
    manifest, manifest_path = read_manifest(shard_dir), Path(shard_dir) / MANIFEST
    check_manifest_matches(manifest, spec.params, manifest_path)
    check_run(spec, manifest, shard_dir)
    for folder in (model_dir, metrics_dir, checkpoint_dir, *([live_dir] if live_dir else [])):
        probe_writable(folder)
    need = pretrain_bytes(manifest["image_shape"], spec.params.encoder, int(manifest["num_classes"]))
    check_free_space(model_dir, need["model"], f"the {name} encoder")
    check_free_space(checkpoint_dir, need["checkpoints"], f"the {name} checkpoints")
    check_free_space(metrics_dir, _SLACK, f"the {name} training curves")


def check_outputs(*folders: str | os.PathLike, need_bytes: int = 0) -> None:
    """Every output folder writable, with `need_bytes` free: before compute, for any stage."""
    for folder in folders:
        probe_writable(folder)
        check_free_space(Path(folder), need_bytes, "the outputs")
