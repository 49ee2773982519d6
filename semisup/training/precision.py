"""Training precision: mixed_bfloat16 where this machine is fast at bfloat16, float32 elsewhere."""

from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf


def fast_bfloat16() -> bool:
    """Whether this machine computes bf16 natively: a GPU of compute capability 8.0 or newer, or a CPU
    with AVX512-BF16 or AMX (elsewhere TensorFlow emulates bf16, slower than float32)."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0))
        return tuple(capability) >= (8, 0)
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_mixed_precision(setting: bool | str) -> bool:
    """`train.mixed_precision`: true, false, or auto (mixed where bf16 is fast on this machine)."""
    return fast_bfloat16() if setting == "auto" else bool(setting)


def set_precision(mixed: bool) -> None:
    """mixed_bfloat16 (no loss scaling needed) or float32 for every layer built afterwards."""
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if mixed else "float32")
