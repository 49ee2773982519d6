"""Decode image files and bring every image to one uint8 (size, size, 3) shape, deterministically."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps

# What PIL raises on a truncated, corrupted or unknown file (UnidentifiedImageError is an OSError).
DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def decode_image(data: bytes) -> np.ndarray:
    """PNG/JPEG bytes -> (H, W, 3) uint8, EXIF orientation applied; raises one of DECODE_ERRORS."""
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        img = ImageOps.exif_transpose(img)
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


def resize_rgb(image: np.ndarray, size: int) -> np.ndarray:
    """(H, W) or (H, W, 1|3) uint8 -> (size, size, 3) uint8; bicubic, antialiased when shrinking.

    The whole image is resized to a square (no crop), so non-square images are stretched.
    """
    image = np.asarray(image, dtype=np.uint8)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.shape[:2] != (size, size):
        # PIL resizes a gray image as one channel, then the channel is repeated: same numbers, 3x faster.
        image = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC))
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image)
