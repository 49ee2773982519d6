"""Decode image files and bring every image to one uint8 (size, size, 3) shape, deterministically.

Every pixel mode Pillow opens becomes 8-bit RGB by arithmetic on the pixel values, not by Pillow's
`convert("RGB")` (which clips 16-bit images instead of scaling them and drops transparency):

- 16-bit channels (I;16*, 16-bit PNG gray, gray+alpha, RGB, RGBA) are scaled: round(v / 257).
- 1-bit images map 0/1 to 0/255; gray images repeat their channel; palettes are looked up.
- CMYK: R = 255 (1 - C)(1 - K) and likewise G, B; YCbCr, LAB and HSV by Pillow's conversion.
- Transparency (an alpha channel, a palette's or a colour key's tRNS) is composited over BACKGROUND,
  white: out = c a + 255 (1 - a), with c and a in [0, 1], rounded.

An image with more than `max_pixels` pixels is refused from its header, before any decoding.
`read_header` reads only that header (format, mode, size): the folder's download stage checks every
file with it, and the shard stage decodes each file once, with `decode_image`.
"""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
from PIL import Image, ImageOps

BACKGROUND = 255  # transparent pixels show white: the documented background
# What PIL raises on a truncated, corrupted or unknown file (UnidentifiedImageError is an OSError).
DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
_SIXTEEN = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_EXIF_ORIENTATION = 0x0112


class TooManyPixels(ValueError):
    """An image over the pixel limit (a decompression bomb, or simply too big to decode)."""


_limit_lock = threading.Lock()
_limit_state: dict[str, Any] = {"users": 0, "saved": None}


@contextlib.contextmanager
def _pillow_limit_off() -> Iterator[None]:
    """Our own max_pixels check replaces Pillow's global one (which warns, then raises at twice its limit).

    Pillow's limit is one global: threads decoding at once (`semisup predict`) turn it off together, and
    the last one out puts it back.
    """
    with _limit_lock:
        if _limit_state["users"] == 0:
            _limit_state["saved"] = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
        _limit_state["users"] += 1
    try:
        yield
    finally:
        with _limit_lock:
            _limit_state["users"] -= 1
            if _limit_state["users"] == 0:
                Image.MAX_IMAGE_PIXELS = _limit_state["saved"]


def _check_pixels(img: Image.Image, max_pixels: int | None) -> None:
    width, height = img.size
    if max_pixels is not None and width * height > max_pixels:
        raise TooManyPixels(
            f"{width}x{height} = {width * height} pixels, over data.max_pixels ({max_pixels})"
        )


def read_header(data: bytes, *, max_pixels: int | None = None) -> dict[str, str | int]:
    """Image file bytes -> {format, mode, width, height} from the header alone, no pixel decoded.

    Raises one of DECODE_ERRORS when the header cannot be read, TooManyPixels over `max_pixels`. A file
    whose header reads may still fail to decode (a truncated JPEG): only `decode_image` tells.
    """
    with _pillow_limit_off(), Image.open(io.BytesIO(data)) as img:
        _check_pixels(img, max_pixels)
        return {"format": img.format or "", "mode": img.mode, "width": img.width, "height": img.height}


def decode_image(data: bytes, *, max_pixels: int | None = None) -> np.ndarray:
    """Image file bytes -> (H, W, 3) uint8, EXIF orientation applied; raises one of DECODE_ERRORS.

    With `max_pixels`, a larger image raises TooManyPixels from its header, before any decoding.
    """
    with _pillow_limit_off(), Image.open(io.BytesIO(data)) as img:
        _check_pixels(img, max_pixels)
        if _is_png16_color(img):
            key = img.info.get("transparency")
            return _orient(_png16(data, key), img.getexif().get(_EXIF_ORIENTATION, 1))
        img.load()
        return to_rgb8(ImageOps.exif_transpose(img))


def _is_png16_color(img: Image.Image) -> bool:
    """16-bit PNG with more than one channel: Pillow would keep only the high byte of each sample."""
    if img.format != "PNG" or img.mode in _SIXTEEN or not img.tile:
        return False
    rawmode = img.tile[0][-1]
    return isinstance(rawmode, str) and rawmode.endswith(";16B")


def _png16(data: bytes, key: object = None) -> np.ndarray:
    """A 16-bit gray+alpha, RGB or RGBA PNG -> (H, W, 3) uint8, decoded at full depth by TensorFlow.

    `key` is Pillow's reading of an RGB PNG's tRNS chunk, a colour key of three 16-bit samples: TensorFlow
    ignores tRNS, so the pixels equal to it are made transparent here.
    """
    import tensorflow as tf

    raw = tf.io.decode_png(data, channels=0, dtype=tf.uint16).numpy()
    pixels = raw.astype(np.float64) / 65535.0
    if pixels.shape[-1] == 3:  # RGB: no alpha channel, perhaps a colour key
        return _compose(pixels, _key_alpha(raw, key))
    return _compose(pixels[..., :-1], pixels[..., -1])


def _orient(image: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1..8) to an (H, W, C) array, as ImageOps.exif_transpose does."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.transpose(1, 0, 2),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),
        8: lambda a: np.rot90(a, 1),
    }
    return np.ascontiguousarray(ops.get(orientation, lambda a: a)(image))


def _compose(color: np.ndarray, alpha: np.ndarray | None, premultiplied: bool = False) -> np.ndarray:
    """color (H, W, 1|3) and alpha (H, W) in [0, 1] -> (H, W, 3) uint8 over BACKGROUND."""
    if alpha is not None:
        a = alpha[..., None]
        color = (color if premultiplied else color * a) + (BACKGROUND / 255.0) * (1.0 - a)
    rgb = np.rint(np.clip(color, 0.0, 1.0) * 255.0).astype(np.uint8)
    if rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, axis=-1)
    return np.ascontiguousarray(rgb)


def _key_alpha(raw: np.ndarray, key: object) -> np.ndarray | None:
    """Alpha (H, W) from a tRNS colour key (an int for gray, a tuple for RGB); None when there is none."""
    if key is None or isinstance(key, bytes):
        return None
    key = np.asarray(key).reshape(-1)
    match = raw == key if raw.ndim == 2 else np.all(raw == key, axis=-1)
    return np.where(match, 0.0, 1.0)


def to_rgb8(img: Image.Image) -> np.ndarray:
    """A decoded Pillow image of any mode -> (H, W, 3) uint8 (see the module docstring for the rules)."""
    mode, key = img.mode, img.info.get("transparency")
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or key is not None
        return to_rgb8(img.convert("RGBA" if has_alpha else "RGB"))
    if mode in ("YCbCr", "LAB", "HSV"):
        return to_rgb8(img.convert("RGB"))
    raw = np.asarray(img)
    if mode == "1":
        return _compose(raw[..., None].astype(np.float64), None)
    if mode in _SIXTEEN:
        values = np.clip(raw.astype(np.float64), 0, 65535)  # mode I: 16-bit PNGs in older Pillows
        return _compose(values[..., None] / 65535.0, _key_alpha(raw, key))
    if raw.dtype != np.uint8:
        raise ValueError(f"pixel mode {mode} ({raw.dtype}) has no defined 0..255 range")
    unit = raw.astype(np.float64) / 255.0
    if mode == "L":
        return _compose(unit[..., None], _key_alpha(raw, key))
    if mode in ("LA", "La"):
        return _compose(unit[..., :1], unit[..., 1], premultiplied=mode == "La")
    if mode in ("RGB", "RGBX"):
        return _compose(unit[..., :3], _key_alpha(raw[..., :3], key) if mode == "RGB" else None)
    if mode in ("RGBA", "RGBa"):
        return _compose(unit[..., :3], unit[..., 3], premultiplied=mode == "RGBa")
    if mode == "CMYK":
        return _compose((1.0 - unit[..., :3]) * (1.0 - unit[..., 3:]), None)
    raise ValueError(f"pixel mode {mode} is not supported")


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
