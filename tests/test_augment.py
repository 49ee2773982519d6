"""SimCLR augmentation: crop/flip statistics, torchvision jitter formulas, determinism, identity."""

from __future__ import annotations

import colorsys
import itertools
import math

import numpy as np
import pytest
import tensorflow as tf

from semisup.config import AugmentParams
from semisup.core.errors import UserError
from semisup.model import augment as aug

NO_JITTER = dict(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)
IDENTITY = dict(flip=False, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), **NO_JITTER)
GRAY = np.array([0.2989, 0.587, 0.114])


def _images(batch: int, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)


def _ramps(batch: int, size: int) -> np.ndarray:
    """Float images whose channel 0 is row / (size - 1) and channel 1 is col / (size - 1)."""
    ramp = np.arange(size, dtype=np.float32) / (size - 1)
    img = np.stack(np.broadcast_arrays(ramp[:, None], ramp[None, :], np.float32(0.5)), axis=-1)
    return np.repeat(img[None], batch, axis=0)


def _measure_boxes(out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Read (top, left, h, w) and the flip of each view of `_ramps` from its corner pixels."""
    n = out.shape[1] - 1
    top = out[:, 0, 0, 0] * n
    h = (out[:, -1, 0, 0] - out[:, 0, 0, 0]) * n + 1
    first_col, last_col = out[:, 0, 0, 1] * n, out[:, 0, -1, 1] * n
    flipped = first_col > last_col
    left = np.minimum(first_col, last_col)
    w = np.abs(last_col - first_col) + 1
    return np.round(np.stack([top, left, h, w], axis=1)).astype(int), flipped


# --- numpy references of torchvision's functional_tensor formulas, one image (H, W, 3) at a time ---


def np_brightness(img: np.ndarray, f: float) -> np.ndarray:
    return np.clip(f * img, 0, 1)


def np_contrast(img: np.ndarray, f: float) -> np.ndarray:
    mean = (img @ GRAY).mean()
    return np.clip(f * img + (1 - f) * mean, 0, 1)


def np_saturation(img: np.ndarray, f: float) -> np.ndarray:
    return np.clip(f * img + (1 - f) * (img @ GRAY)[..., None], 0, 1)


def np_hue(img: np.ndarray, shift: float) -> np.ndarray:
    out = np.empty_like(img)
    for idx in np.ndindex(img.shape[:-1]):
        h, s, v = colorsys.rgb_to_hsv(*img[idx])
        out[idx] = colorsys.hsv_to_rgb((h + shift) % 1.0, s, v)
    return out


NP_OPS = {
    aug.BRIGHTNESS: np_brightness,
    aug.CONTRAST: np_contrast,
    aug.SATURATION: np_saturation,
    aug.HUE: np_hue,
}


def test_scale_images_maps_uint8_to_unit_float():
    x = np.array([[[[0, 128, 255]]]], dtype=np.uint8)
    out = aug.scale_images(x)
    assert out.dtype == tf.float32
    np.testing.assert_allclose(out.numpy(), [[[[0.0, 128 / 255, 1.0]]]], rtol=1e-7)
    np.testing.assert_array_equal(aug.scale_images(out).numpy(), out.numpy())


def test_sampled_crops_have_area_and_ratio_in_range_and_fit_the_image():
    crops = aug.sample_crops(4000, 96, 80, tf.constant([3, 4]), (0.2, 1.0), (3 / 4, 4 / 3)).numpy()
    top, left, h, w = crops.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 96).all() and (left + w <= 80).all()
    area, ratio = h * w / (96 * 80), w / h
    # w and h are rounded to whole pixels, which moves area and ratio by at most ~1/40 here.
    assert area.min() >= 0.2 * 0.97 and area.max() <= 1.0
    assert ratio.min() >= 0.75 * 0.97 and ratio.max() <= 4 / 3 * 1.03
    assert area.min() < 0.22 and area.max() > 0.9  # the whole range is used
    assert np.log(ratio).min() < math.log(0.78) and np.log(ratio).max() > math.log(1.28)


def test_crop_position_is_uniform_over_valid_offsets():
    crops = aug.sample_crops(5000, 64, 64, tf.constant([5, 6]), (0.25, 0.25), (1.0, 1.0)).numpy()
    top, left, h, w = crops.T
    assert (h == 32).all() and (w == 32).all()
    for offsets in (top, left):
        counts = np.bincount(offsets, minlength=33)
        assert len(counts) == 33 and counts.min() > 0  # every offset 0..32 occurs, none beyond
        assert abs(offsets.mean() - 16) < 0.5


@pytest.mark.parametrize(
    ("ratio", "expected"),
    [((2.0, 3.0), (24, 0, 48, 96)), ((0.3, 0.4), (0, 29, 96, 38))],
)
def test_crop_falls_back_to_torchvision_centre_crop(ratio, expected):
    # Every try is too wide (or too tall) for the image, so all images take the fallback box.
    crops = aug.sample_crops(50, 96, 96, tf.constant([0, 1]), (0.9, 1.0), ratio).numpy()
    assert (crops == np.array(expected)).all()


def test_augment_crops_resizes_and_flips_as_sampled():
    size, n = 48, 2000
    ramps = _ramps(n, size)
    out = aug.augment(ramps, tf.constant([7, 8]), jit_compile=False, **NO_JITTER).numpy()
    boxes, flipped = _measure_boxes(out)
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (top + h <= size).all() and (left >= 0).all() and (left + w <= size).all()
    area, ratio = h * w / size**2, w / h
    assert area.min() >= 0.2 * 0.94 and area.max() <= 1.0
    assert ratio.min() >= 0.75 * 0.94 and ratio.max() <= 4 / 3 * 1.06
    assert abs(flipped.mean() - 0.5) < 0.05
    assert len({tuple(b) for b in boxes}) > 0.9 * n  # each image draws its own box
    # Bilinear resampling reproduces a linear ramp: every pixel is an affine map of the box.
    k = np.arange(size) / (size - 1)
    rows = (top[:, None] + k * (h - 1)[:, None]) / (size - 1)
    np.testing.assert_allclose(out[..., 0], np.broadcast_to(rows[:, :, None], out.shape[:3]), atol=1e-5)
    kx = np.where(flipped[:, None], 1 - k, k)
    cols = (left[:, None] + kx * (w - 1)[:, None]) / (size - 1)
    np.testing.assert_allclose(out[..., 1], np.broadcast_to(cols[:, None, :], out.shape[:3]), atol=1e-5)


def test_no_flip_when_flip_is_off():
    out = aug.augment(_ramps(300, 32), [1, 1], flip=False, jit_compile=False, **NO_JITTER).numpy()
    _, flipped = _measure_boxes(out)
    assert not flipped.any()


def test_zero_strength_is_the_identity():
    x = _images(5)
    out = aug.augment(x, [0, 0], jit_compile=False, **IDENTITY)
    np.testing.assert_allclose(out.numpy(), aug.scale_images(x).numpy(), atol=1e-6)
    floats = aug.scale_images(x)
    np.testing.assert_allclose(aug.augment(floats, [9, 9], jit_compile=False, **IDENTITY), floats, atol=1e-6)


@pytest.mark.slow
def test_compiled_matches_uncompiled_and_zero_strength_is_identity_under_xla():
    x = _images(16)
    eager = aug.augment(x, [4, 2], jit_compile=False).numpy()
    compiled = aug.augment(x, [4, 2], jit_compile=True).numpy()
    # Same random parameters; only float rounding of the resampling coordinates differs.
    np.testing.assert_allclose(compiled, eager, atol=1e-4)
    same = aug.augment(x, [0, 0], jit_compile=True, **IDENTITY)
    np.testing.assert_allclose(same.numpy(), aug.scale_images(x).numpy(), atol=1e-6)


def test_same_seed_same_views_other_seed_other_views():
    x = _images(8)
    a = aug.augment(x, tf.constant([1, 2], tf.int64), jit_compile=False).numpy()
    b = aug.augment(x, tf.constant([1, 2], tf.int32), jit_compile=False).numpy()
    c = aug.augment(x, tf.constant([1, 3], tf.int64), jit_compile=False).numpy()
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).mean() > 0.05


def test_each_copy_of_one_image_gets_its_own_view():
    x = np.repeat(_images(1), 8, axis=0)
    out = aug.augment(x, [5, 5], jit_compile=False).numpy().reshape(8, -1)
    dists = [np.abs(out[i] - out[j]).mean() for i, j in itertools.combinations(range(8), 2)]
    assert min(dists) > 1e-3


def test_output_is_float32_in_unit_range_for_any_batch_size():
    fn = tf.function(
        lambda x, s: aug.augment(x, s, jit_compile=False),
        input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.uint8), tf.TensorSpec([2], tf.int64)],
    )
    for batch in (1, 7):
        out = fn(_images(batch), tf.constant([batch, 0], tf.int64))
        assert out.dtype == tf.float32 and out.shape == (batch, 32, 32, 3)
        assert float(tf.reduce_min(out)) >= 0.0 and float(tf.reduce_max(out)) <= 1.0


def test_jitter_factors_are_per_image_and_in_torchvision_ranges():
    factors, _ = aug.sample_jitter(3000, tf.constant([2, 2]), 0.5, 0.3, 1.5, 0.2)
    f = factors.numpy()
    lows, highs = [0.5, 0.7, 0.0, -0.2], [1.5, 1.3, 2.5, 0.2]
    for col, (lo, hi) in enumerate(zip(lows, highs, strict=True)):
        assert f[:, col].min() >= lo and f[:, col].max() <= hi
        assert f[:, col].min() < lo + 0.01 and f[:, col].max() > hi - 0.01
        assert len(np.unique(f[:, col])) > 0.99 * len(f)  # per image (24-bit floats: rare ties)


def test_jitter_order_is_per_image_and_changes_between_calls_of_a_compiled_function():
    orders = tf.function(lambda s: aug.sample_jitter(2400, s, 0.5, 0.5, 0.5, 0.2)[1], jit_compile=True)
    first = orders(tf.constant([0, 0], tf.int64)).numpy()
    assert all(sorted(row) == [0, 1, 2, 3] for row in first)
    counts = {}
    for row in map(tuple, first):
        counts[row] = counts.get(row, 0) + 1
    assert len(counts) == 24 and min(counts.values()) > 50  # uniform over permutations: ~100 each
    seconds = [orders(tf.constant([0, step], tf.int64)).numpy() for step in range(1, 6)]
    assert orders.experimental_get_tracing_count() == 1  # one trace, yet new orders at every step
    for later in seconds:
        assert (later != first).any(axis=1).mean() > 0.9


def _factors(rng: np.random.Generator, batch: int) -> np.ndarray:
    return np.stack(
        [
            rng.uniform(0.2, 1.8, batch),
            rng.uniform(0.2, 1.8, batch),
            rng.uniform(0.0, 2.5, batch),
            rng.uniform(-0.5, 0.5, batch),
        ],
        axis=1,
    ).astype(np.float32)


@pytest.mark.parametrize("op", [aug.BRIGHTNESS, aug.CONTRAST, aug.SATURATION, aug.HUE])
def test_each_jitter_op_matches_the_torchvision_formula(op):
    rng = np.random.default_rng(op)
    x = rng.random((4, 5, 6, 3), dtype=np.float32)
    x[0, 0, 0] = [0.3, 0.3, 0.3]  # gray pixel: hue undefined, must stay put
    x[0, 0, 1] = [1.0, 0.0, 0.0]
    factors = _factors(rng, 4)
    fn = {
        aug.BRIGHTNESS: aug.adjust_brightness,
        aug.CONTRAST: aug.adjust_contrast,
        aug.SATURATION: aug.adjust_saturation,
        aug.HUE: aug.adjust_hue,
    }[op]
    out = fn(tf.constant(x), tf.constant(factors[:, op])).numpy()
    expected = np.stack([NP_OPS[op](x[i].astype(np.float64), factors[i, op]) for i in range(4)])
    np.testing.assert_allclose(out, expected, atol=2e-6)


def test_hue_shift_by_a_third_turn_rotates_channels():
    x = np.random.default_rng(1).random((2, 3, 4, 3), dtype=np.float32)
    out = aug.adjust_hue(tf.constant(x), tf.constant([1 / 3, -1 / 3])).numpy()
    np.testing.assert_allclose(out[0], x[0][..., [2, 0, 1]], atol=2e-6)  # red -> green
    np.testing.assert_allclose(out[1], x[1][..., [1, 2, 0]], atol=2e-6)


def test_color_jitter_applies_each_images_ops_in_its_own_order():
    rng = np.random.default_rng(3)
    perms = np.array(list(itertools.permutations(range(4))), dtype=np.int32)  # all 24 orders
    x = rng.random((24, 6, 5, 3), dtype=np.float32)
    factors = _factors(rng, 24)
    out = aug.color_jitter(tf.constant(x), tf.constant(factors), tf.constant(perms)).numpy()
    for i, order in enumerate(perms):
        img = x[i].astype(np.float64)
        for op in order:
            img = NP_OPS[op](img, factors[i, op])
        np.testing.assert_allclose(out[i], img, atol=5e-6, err_msg=f"order {order}")


def test_color_jitter_without_hue_skips_only_hue():
    rng = np.random.default_rng(4)
    x = rng.random((2, 4, 4, 3), dtype=np.float32)
    factors = _factors(rng, 2)
    order = np.array([[3, 0, 1, 2], [1, 3, 2, 0]], dtype=np.int32)
    out = aug.color_jitter(tf.constant(x), tf.constant(factors), tf.constant(order), use_hue=False).numpy()
    for i in range(2):
        img = x[i].astype(np.float64)
        for op in order[i][order[i] != aug.HUE]:
            img = NP_OPS[op](img, factors[i, op])
        np.testing.assert_allclose(out[i], img, atol=5e-6)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"crop_scale": (0.5, 0.2)}, "augment.crop_scale"),
        ({"crop_scale": (0.0, 1.0)}, "augment.crop_scale"),
        ({"crop_ratio": (1.5, 1.0)}, "augment.crop_ratio"),
        ({"contrast": -0.1}, "augment.contrast"),
        ({"hue": 0.7}, "augment.hue"),
    ],
)
def test_bad_strengths_raise_user_error_naming_the_key(kwargs, key):
    with pytest.raises(UserError, match=key):
        aug.augment(_images(1), [0, 0], **kwargs)


def test_bad_image_shape_raises_user_error():
    with pytest.raises(UserError, match=r"\(batch, height, width, 3\)"):
        aug.augment(np.zeros((2, 8, 8, 1), np.uint8), [0, 0])


def test_from_params_gives_augments_keywords():
    kwargs = aug.from_params(AugmentParams(crop_scale=(0.3, 0.9), hue=0.1))
    assert kwargs["crop_scale"] == (0.3, 0.9) and kwargs["hue"] == 0.1 and kwargs["flip"] is True
    x = _images(4)
    np.testing.assert_array_equal(
        aug.augment(x, [1, 2], jit_compile=False, **kwargs),
        aug.augment(x, [1, 2], jit_compile=False, **{**kwargs, "crop_scale": [0.3, 0.9]}),
    )


def test_step_seeds_are_deterministic_and_distinct_per_step_and_view():
    seeds = {(s, v): tuple(aug.step_seeds(7, s)[v].numpy()) for s in range(50) for v in range(3)}
    assert len(set(seeds.values())) == len(seeds)
    assert tuple(aug.step_seeds(7, tf.constant(3, tf.int64))[1].numpy()) == seeds[(3, 1)]
    assert tuple(aug.step_seeds(7, tf.constant(3, tf.int32))[1].numpy()) == seeds[(3, 1)]
    assert tuple(aug.step_seeds(8, 3)[1].numpy()) != seeds[(3, 1)]
    # The scheme itself, written out: philox splits of (seed * 1000003, step).
    expected = tf.random.experimental.stateless_split(tf.constant([7 * 1_000_003, 3], tf.int64), 3, "philox")
    np.testing.assert_array_equal(aug.step_seeds(7, 3), expected)


def test_small_crops_sample_the_same_boxes_and_resize_them_to_their_own_size():
    # Multi-crop's small crops: the box is drawn on the full image as before, then resampled to 12 x 12.
    size, small, n = 48, 12, 200
    ramps = _ramps(n, size)
    seed = tf.constant([3, 9])
    full = aug.augment(ramps, seed, jit_compile=False, **NO_JITTER).numpy()
    out = aug.augment(ramps, seed, jit_compile=False, size=small, **NO_JITTER).numpy()
    assert out.shape == (n, small, small, 3)
    boxes, flipped = _measure_boxes(full)
    top, left, h, w = boxes.T
    k = np.arange(small) / (small - 1)
    rows = (top[:, None] + k * (h - 1)[:, None]) / (size - 1)
    np.testing.assert_allclose(out[..., 0], np.broadcast_to(rows[:, :, None], out.shape[:3]), atol=1e-5)
    kx = np.where(flipped[:, None], 1 - k, k)
    cols = (left[:, None] + kx * (w - 1)[:, None]) / (size - 1)
    np.testing.assert_allclose(out[..., 1], np.broadcast_to(cols[:, None, :], out.shape[:3]), atol=1e-5)
    compiled = aug.augment(ramps[:4], seed, size=small, **NO_JITTER).numpy()  # XLA: the same to rounding
    np.testing.assert_allclose(compiled, out[:4], rtol=0, atol=1e-6)


def test_the_options_seed_streams_are_their_own():
    reference = aug.step_seeds(7, 3)
    np.testing.assert_array_equal(aug.step_seeds(7, 3, 3, aug.REFERENCE), reference)
    seen = {tuple(s) for s in reference.numpy()}
    for stream in (aug.SUPPORT_VIEWS, aug.SMALL_CROPS):
        seeds = aug.step_seeds(7, 3, 4, stream).numpy()
        assert seeds.shape == (4, 2)
        assert not seen & {tuple(s) for s in seeds}
        seen |= {tuple(s) for s in seeds}
    assert len(seen) == 3 + 4 + 4
