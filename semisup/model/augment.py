"""SimCLR augmentation, batched, with independent random parameters per image (Chen et al., 2020).

Horizontal flip, random resized crop and colour jitter with torchvision's semantics, drawn from
stateless TF random ops: the same (images, seed) always gives the same views, so a resumed run
replays the exact augmentations of the run it continues.

Why not Keras 3's preprocessing layers: they draw from a stateful `SeedGenerator`, not from an
explicit per-step seed, and their maths differs from torchvision's. RandomBrightness adds a delta
(torchvision multiplies); RandomContrast blends each channel with its own mean (torchvision: the mean
of the grayscale image); RandomSaturation scales S in HSV (torchvision blends with the grayscale
image, which can over-saturate and is then clipped); RandomColorJitter always runs brightness,
contrast, saturation, hue in that fixed order; and Keras has no random resized crop. So every op is
written here, in a few lines each, and all of it compiles with XLA (`jit_compile=True`).

Jitter order: each image draws its own permutation of the four ops at every call, as torchvision
does when ColorJitter runs per image (a stricter reading of "a random order that changes from step
to step" than one order per batch), replayed in one batched pass by `color_jitter`.
"""

from __future__ import annotations

import math
from typing import Any

import tensorflow as tf

from semisup.config import AugmentParams
from semisup.core.errors import UserError

_ALG = "philox"  # explicit, so the same seed gives the same views on CPU and GPU
_CROP_TRIES = 10  # torchvision's RandomResizedCrop tries 10 boxes, then falls back to a centre crop
_GRAY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3  # column of `factors`, entry of `order`
_NO_OP = -1


def scale_images(images: tf.Tensor) -> tf.Tensor:
    """uint8 (B, H, W, 3) in [0, 255] -> float32 in [0, 1]; float input is taken as already in [0, 1]."""
    images = tf.convert_to_tensor(images)
    if images.dtype == tf.uint8:
        return tf.cast(images, tf.float32) / 255.0
    return tf.cast(images, tf.float32)


def _check(crop_scale, crop_ratio, brightness, contrast, saturation, hue) -> None:
    """Raise UserError on strengths that torchvision would reject, before any compute."""
    lo, hi = crop_scale
    if not 0.0 < lo <= hi <= 1.0:
        raise UserError(
            f"augment.crop_scale: {list(crop_scale)} must be [low, high] with 0 < low <= high <= 1"
        )
    lo, hi = crop_ratio
    if not 0.0 < lo <= hi:
        raise UserError(f"augment.crop_ratio: {list(crop_ratio)} must be [low, high] with 0 < low <= high")
    for name, value in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
        if value < 0:
            raise UserError(f"augment.{name}: {value} is out of range (must be >= 0)")
    if not 0.0 <= hue <= 0.5:
        raise UserError(f"augment.hue: {hue} is out of range (must be in [0, 0.5])")


def _uniform(shape, seed, lo: float = 0.0, hi: float = 1.0) -> tf.Tensor:
    """Uniform float32 in [lo, hi) from stateless Philox bits."""
    # TF's CPU/GPU kernels and XLA turn Philox bits into floats differently (so a jit-compiled
    # augmentation would draw other views), but agree on the raw bits: convert them here.
    bits = tf.random.stateless_uniform(shape, seed, minval=None, maxval=None, dtype=tf.uint32, alg=_ALG)
    u = tf.cast(tf.bitwise.right_shift(bits, 8), tf.float32) * (1.0 / (1 << 24))
    return lo + (hi - lo) * u


def _split(seed: tf.Tensor, num: int) -> list[tf.Tensor]:
    """`num` independent seeds from one; int32 and int64 seeds with equal values split alike."""
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    return tf.unstack(tf.random.experimental.stateless_split(seed, num, alg=_ALG))


# Streams of step_seeds: the reference's three batches, then the options' extra ones (PAWS).
REFERENCE, SUPPORT_VIEWS, SMALL_CROPS = 0, 1, 2


def step_seeds(run_seed: int, step: int | tf.Tensor, num: int = 3, stream: int = REFERENCE) -> tf.Tensor:
    """The training's one seeding scheme: the seeds of a step's three augmented batches (unlabeled view 1,
    view 2, the labeled view) from the run's seed and the global step -> int64 (3, 2). The same (seed, step)
    gives the same views on any number of replicas and workers, and after a resume.
    Other streams give `num` seeds of their own (the labeled batch's extra views, the small crops), from a
    key no run's reference stream uses, so they leave the reference's three seeds as they are."""
    key = tf.constant(run_seed, tf.int64) * 1_000_003
    if stream != REFERENCE:
        key = -key - stream  # negative: never a run's reference key (seeds are >= 0)
    base = tf.stack([key, tf.cast(step, tf.int64)])
    return tf.random.experimental.stateless_split(base, num=num, alg=_ALG)


def sample_crops(batch_size, height, width, seed, crop_scale, crop_ratio) -> tf.Tensor:
    """torchvision RandomResizedCrop.get_params for every image -> int32 (B, 4): top, left, h, w."""
    area_seed, ratio_seed, pos_seed = _split(seed, 3)
    h_img, w_img = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    tries = [batch_size, _CROP_TRIES]
    area = h_img * w_img * _uniform(tries, area_seed, *crop_scale)
    ratio = tf.exp(_uniform(tries, ratio_seed, math.log(crop_ratio[0]), math.log(crop_ratio[1])))
    w = tf.round(tf.sqrt(area * ratio))  # tf.round, like Python's round, rounds halves to even
    h = tf.round(tf.sqrt(area / ratio))
    ok = (w > 0) & (w <= w_img) & (h > 0) & (h <= h_img)
    first = tf.argmax(tf.cast(ok, tf.int32), axis=1, output_type=tf.int32)  # first valid try
    w = tf.gather(w, first, axis=1, batch_dims=1)
    h = tf.gather(h, first, axis=1, batch_dims=1)
    found = tf.reduce_any(ok, axis=1)
    fb_h, fb_w = _fallback_crop(h_img, w_img, crop_ratio)
    h, w = tf.where(found, h, fb_h), tf.where(found, w, fb_w)
    u = _uniform([batch_size, 2], pos_seed)
    # randint(0, H - h + 1); the minimum guards against u rounding up to 1.
    top = tf.minimum(tf.floor(u[:, 0] * (h_img - h + 1)), h_img - h)
    left = tf.minimum(tf.floor(u[:, 1] * (w_img - w + 1)), w_img - w)
    top = tf.where(found, top, tf.floor((h_img - h) / 2))
    left = tf.where(found, left, tf.floor((w_img - w) / 2))
    return tf.cast(tf.stack([top, left, h, w], axis=1), tf.int32)


def _fallback_crop(h_img: tf.Tensor, w_img: tf.Tensor, crop_ratio) -> tuple[tf.Tensor, tf.Tensor]:
    """torchvision's centre crop after 10 failed tries: the largest box whose ratio is in range."""
    in_ratio = w_img / h_img
    lo, hi = crop_ratio
    h = tf.where(in_ratio < lo, tf.round(w_img / lo), h_img)
    w = tf.where(in_ratio > hi, tf.round(h_img * hi), w_img)
    return h, w


def _lerp_gather(x: tf.Tensor, coords: tf.Tensor, axis: int) -> tf.Tensor:
    """Linear interpolation of x along axis 1 or 2 at per-image float coords (B, N) -> float32."""
    size = tf.shape(x)[axis]
    i0 = tf.floor(coords)
    frac = coords - i0
    i0 = tf.cast(i0, tf.int32)
    i1 = tf.minimum(i0 + 1, size - 1)
    a = tf.cast(tf.gather(x, i0, axis=axis, batch_dims=1), tf.float32)
    b = tf.cast(tf.gather(x, i1, axis=axis, batch_dims=1), tf.float32)
    frac = frac[:, :, None, None] if axis == 1 else frac[:, None, :, None]
    return a + (b - a) * frac


def resized_crop(images: tf.Tensor, crops: tf.Tensor, flips: tf.Tensor, size: int | None = None) -> tf.Tensor:
    """Bilinear crop of (B, H, W, 3) to boxes (B, 4) resized back to (H, W) (or to (size, size)), mirrored
    where flips (B,)."""
    shape = tf.shape(images)
    h_img, w_img = (shape[1], shape[2]) if size is None else (size, size)  # the output's sides
    top, left, h, w = tf.unstack(tf.cast(crops, tf.float32), axis=1)
    # Output pixel k samples source top + k (h - 1) / (H - 1): the crop's corner pixels map to the
    # output's (align-corners), so no sample falls outside the image and a full box is the identity.
    # torchvision/PIL use half-pixel centres instead, a sub-pixel difference in scale.
    # k (h - 1) is an exact integer in float32, so a full box gives integer coordinates exactly.
    ky = tf.range(h_img, dtype=tf.float32)
    kx = tf.range(w_img, dtype=tf.float32)
    kx = tf.where(flips[:, None], tf.cast(w_img - 1, tf.float32) - kx, kx)  # (B, W)
    ys = top[:, None] + ky[None, :] * (h - 1)[:, None] / tf.cast(tf.maximum(h_img - 1, 1), tf.float32)
    xs = left[:, None] + kx * (w - 1)[:, None] / tf.cast(tf.maximum(w_img - 1, 1), tf.float32)
    rows = _lerp_gather(images, ys, axis=1)  # (B, H, W, 3)
    return _lerp_gather(rows, xs, axis=2)


def _grayscale(x: tf.Tensor) -> tf.Tensor:
    """(B, H, W, 3) -> (B, H, W, 1) luma with torchvision's weights."""
    r, g, b = tf.unstack(x, axis=-1)
    return (_GRAY[0] * r + _GRAY[1] * g + _GRAY[2] * b)[..., None]


def _per_image(f: tf.Tensor) -> tf.Tensor:
    return tf.cast(f, tf.float32)[:, None, None, None]


def adjust_brightness(x: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """torchvision: clip(f x); x (B, H, W, 3) in [0, 1], factor (B,)."""
    return tf.clip_by_value(_per_image(factor) * x, 0.0, 1.0)


def adjust_contrast(x: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """torchvision: clip(f x + (1 - f) mean(gray(x))); x (B, H, W, 3), factor (B,)."""
    f = _per_image(factor)
    mean = tf.reduce_mean(_grayscale(x), axis=[1, 2, 3], keepdims=True)
    return tf.clip_by_value(f * x + (1 - f) * mean, 0.0, 1.0)


def adjust_saturation(x: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """torchvision: clip(f x + (1 - f) gray(x)); x (B, H, W, 3), factor (B,)."""
    f = _per_image(factor)
    return tf.clip_by_value(f * x + (1 - f) * _grayscale(x), 0.0, 1.0)


def adjust_hue(x: tf.Tensor, shift: tf.Tensor) -> tf.Tensor:
    """torchvision: rotate the HSV hue by shift (B,) turns; x (B, H, W, 3) in [0, 1].

    Exact, but cheaper than RGB -> HSV -> RGB through torchvision's six-sector table: the rotation
    keeps V = max and V S = max - min, and channel n (5, 3, 1 for R, G, B) comes back as
    max - chroma * clamp(min(k, 4 - k), 0, 1) with k = (n + 6 hue) mod 6 (the closed form of the table).
    """
    r, g, b = tf.unstack(x, axis=-1)
    maxc = tf.maximum(tf.maximum(r, g), b)
    chroma = maxc - tf.minimum(tf.minimum(r, g), b)
    safe = tf.where(chroma > 0, chroma, 1.0)
    # Hue in sextants (-1 to 5), taking the max channel in torchvision's order: r, then g, then b.
    sextant = tf.where(maxc == r, g - b, tf.where(maxc == g, 2 * chroma + b - r, 4 * chroma + r - g)) / safe
    k = sextant[..., None] + (tf.constant([5.0, 3.0, 1.0]) + 6.0 * _per_image(shift))  # (B, H, W, 3)
    k = k - 6.0 * tf.floor(k * (1 / 6))  # mod 6 without floormod, which is slow under XLA
    return maxc[..., None] - chroma[..., None] * tf.clip_by_value(tf.minimum(k, 4.0 - k), 0.0, 1.0)


def sample_jitter(batch_size, seed, brightness, contrast, saturation, hue) -> tuple[tf.Tensor, tf.Tensor]:
    """ColorJitter.get_params per image -> factors float32 (B, 4) and order int32 (B, 4).

    factors columns: brightness, contrast, saturation ~ U[max(0, 1 - s), 1 + s], hue ~ U[-h, h].
    order[i] is a uniformly random permutation of (BRIGHTNESS, CONTRAST, SATURATION, HUE): as in
    torchvision, where ColorJitter runs once per image, each image gets its own order, new every step.
    """
    factor_seed, order_seed = _split(seed, 2)
    lows = tf.constant([max(0.0, 1 - brightness), max(0.0, 1 - contrast), max(0.0, 1 - saturation), -hue])
    highs = tf.constant([1 + brightness, 1 + contrast, 1 + saturation, hue])
    factors = lows + (highs - lows) * _uniform([batch_size, 4], factor_seed)
    order = tf.argsort(_uniform([batch_size, 4], order_seed), axis=1, stable=True)
    return factors, tf.cast(order, tf.int32)


def _blend(x: tf.Tensor, op: tf.Tensor, factors: tf.Tensor) -> tf.Tensor:
    """Apply brightness, contrast or saturation (or nothing, op = -1) per image: op (B,), x (B, H, W, 3)."""
    # All three are torchvision's _blend(x, target, f) = clip(f x + (1 - f) target) with target
    # 0, mean(gray) or gray, so one pass serves every image whatever op it draws.
    f = tf.where(op >= 0, tf.gather(factors, tf.maximum(op, 0), axis=1, batch_dims=1), 1.0)
    f = _per_image(f)
    gray = _grayscale(x)
    mean = tf.reduce_mean(gray, axis=[1, 2, 3], keepdims=True)
    on_gray = _per_image(tf.cast(op == SATURATION, tf.float32))
    on_mean = _per_image(tf.cast(op == CONTRAST, tf.float32))
    target = on_gray * gray + on_mean * mean
    return tf.clip_by_value(f * x + (1 - f) * target, 0.0, 1.0)


def color_jitter(x: tf.Tensor, factors: tf.Tensor, order: tf.Tensor, use_hue: bool = True) -> tf.Tensor:
    """Apply the four jitter ops of each image in its own order: x (B, H, W, 3), factors/order (B, 4)."""
    # Hue is the costly op, so it runs once for the whole batch: the blends an image draws before
    # hue go in three "before" slots (right-aligned, padded with no-ops), the rest in three "after"
    # slots. Six cheap blend passes + one hue pass replay every image's own order exactly.
    slots = tf.range(3)[None, :]
    hue_at = tf.argmax(tf.cast(order == HUE, tf.int32), axis=1, output_type=tf.int32)[:, None]
    before = slots + hue_at - 3
    after = slots + hue_at + 1
    pick = lambda i: tf.gather(order, tf.clip_by_value(i, 0, 3), axis=1, batch_dims=1)  # noqa: E731
    before = tf.where(before >= 0, pick(before), _NO_OP)
    after = tf.where(after <= 3, pick(after), _NO_OP)
    for s in range(3):
        x = _blend(x, before[:, s], factors)
    if use_hue:
        x = adjust_hue(x, factors[:, HUE])
    for s in range(3):
        x = _blend(x, after[:, s], factors)
    return x


def augment(
    images: tf.Tensor,
    seed: tf.Tensor,
    *,
    flip: bool = True,
    crop_scale: tuple[float, float] = (0.2, 1.0),
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
    brightness: float = 0.5,
    contrast: float = 0.5,
    saturation: float = 0.5,
    hue: float = 0.2,
    jit_compile: bool = True,
    part: tuple[int | tf.Tensor, int] = (0, 1),
    size: int | None = None,
) -> tf.Tensor:
    """One SimCLR view of each image: uint8 or [0, 1] float (B, H, W, 3), seed int (2,) -> float32 (B, H, W, 3).

    jit_compile=True runs it as XLA functions (inlined when the caller is already compiled): 2-3x
    faster on CPU than TF's kernels, and the same views whether or not the caller is compiled.
    part=(index, count): `images` are rows index*B .. (index+1)*B of a global batch of count*B images
    (one replica's share). The random parameters are drawn for the whole global batch and this part's
    rows kept, so every image gets the view it would get on one device, however many replicas share it.
    size: the crop is resized to (size, size) instead of (H, W) (multi-crop's small crops) -> (B, size, size, 3).
    """
    _check(crop_scale, crop_ratio, brightness, contrast, saturation, hue)
    images = tf.convert_to_tensor(images)
    if images.shape.rank != 4 or images.shape[-1] != 3:
        raise UserError(f"augment: images must be (batch, height, width, 3), got shape {images.shape}")
    crop_seed, flip_seed, jitter_seed = _split(seed, 3)
    index, count = tf.cast(part[0], tf.int32), int(part[1])
    # Two XLA functions, not one: fused, XLA recomputes the crop's gathers inside every jitter pass
    # instead of storing the cropped batch once (~1.5x slower on CPU).
    crop_fn, jitter_fn = (_crop_flip_xla, _jitter_xla) if jit_compile else (_crop_flip, _jitter)
    ranges = {"crop_scale": tuple(map(float, crop_scale)), "crop_ratio": tuple(map(float, crop_ratio))}
    if size is not None:
        ranges["size"] = int(size)
    x = crop_fn(images, crop_seed, flip_seed, index, flip=bool(flip), count=count, **ranges)
    if brightness == contrast == saturation == hue == 0:
        return x
    strengths = {"brightness": brightness, "contrast": contrast, "saturation": saturation, "hue": hue}
    return jitter_fn(x, jitter_seed, index, count=count, **{k: float(v) for k, v in strengths.items()})


def _rows(t: tf.Tensor, index: tf.Tensor, batch: tf.Tensor) -> tf.Tensor:
    """Rows index*batch .. (index+1)*batch of t (G, ...): one part's share of global-batch draws."""
    return t[index * batch : (index + 1) * batch]


def _crop_flip(
    images, crop_seed, flip_seed, index, *, flip, count, crop_scale, crop_ratio, size=None
) -> tf.Tensor:
    """Random resized crop + flip of uint8 or [0, 1] float (B, H, W, 3) -> float32 in [0, 1], (H, W) or
    (size, size)."""
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    crops = _rows(sample_crops(batch * count, height, width, crop_seed, crop_scale, crop_ratio), index, batch)
    flips = _rows(_uniform([batch * count], flip_seed), index, batch) < (0.5 if flip else 0.0)
    # Crop the uint8 images, then scale: gathering bytes is cheaper than gathering floats.
    x = resized_crop(images, crops, flips, size)
    return x / 255.0 if images.dtype == tf.uint8 else x


def _jitter(x, seed, index, *, count, brightness, contrast, saturation, hue) -> tf.Tensor:
    """Colour jitter with per-image factors and order: (B, H, W, 3) in [0, 1] -> same."""
    batch = tf.shape(x)[0]
    factors, order = sample_jitter(batch * count, seed, brightness, contrast, saturation, hue)
    factors, order = _rows(factors, index, batch), _rows(order, index, batch)
    return color_jitter(x, factors, order, use_hue=hue > 0)


_crop_flip_xla = tf.function(_crop_flip, jit_compile=True, autograph=False)
_jitter_xla = tf.function(_jitter, jit_compile=True, autograph=False)


def from_params(p: AugmentParams) -> dict[str, Any]:
    """The keyword arguments of `augment` from params.yaml's augment section."""
    return {
        "flip": p.flip,
        "crop_scale": tuple(p.crop_scale),
        "crop_ratio": tuple(p.crop_ratio),
        "brightness": p.brightness,
        "contrast": p.contrast,
        "saturation": p.saturation,
        "hue": p.hue,
    }
