"""How much class signal a multi-crop setting leaves in digits' crops: a linear model on raw pixels.

Digits (scikit-learn's 8x8 scans, resized to 32 px as the digits source does) are split 80/20, stratified.
Each image gets `--crops` random resized crops of each setting (the trainer's augment, flips and colour
jitter off: the crop's geometry alone), and a multinomial logistic regression on the crops' grey pixels,
fit on the training crops, is scored on the test crops (chance 0.10). The settings: the small crops of
each preset as PAWSParams.multicrop_settings resolves them at 32 px, the earlier 14-px crops at
(0.05, 0.3), and the large views at the preset's raised scale and at the digits profile's (0.5, 1.0).
Prints one line per setting, then one JSON object of the figures.

    .venv/bin/python bench/crop_signal.py [--crops 4] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from semisup.data.digits import load_digits_arrays  # noqa: E402
from semisup.data.images import resize_rgb  # noqa: E402
from semisup.methods import PAWSParams  # noqa: E402
from semisup.model.augment import augment  # noqa: E402

SIDE = 32  # the digits profile's data.image_size


def settings() -> dict[str, tuple[int, tuple[float, float]]]:
    """Setting name -> (crop side in pixels, area scale)."""
    out = {"earlier small crops (14 px, (0.05, 0.3))": (14, (0.05, 0.3))}
    for preset in ("cifar10", "imagenet"):
        s = PAWSParams(multicrop=6, multicrop_preset=preset).multicrop_settings(SIDE)
        out[f"{preset} small crops ({s.size} px, {s.scale})"] = (s.size, s.scale)
        out[f"{preset} views ({SIDE} px, {s.global_scale})"] = (SIDE, s.global_scale)
    out["digits profile views (32 px, (0.5, 1.0))"] = (SIDE, (0.5, 1.0))
    return out


def crops_of(images: np.ndarray, size: int, scale: tuple[float, float], count: int, seed: int) -> np.ndarray:
    """`count` crops of each image, grey pixels flattened: (N, S, S, 3) uint8 -> (count x N, size^2)."""
    out = []
    for k in range(count):
        view = augment(
            images,
            tf.constant([seed, k], tf.int32),
            flip=False,
            crop_scale=scale,
            brightness=0.0,
            contrast=0.0,
            saturation=0.0,
            hue=0.0,
            jit_compile=False,
            size=size,
        )
        out.append(view.numpy()[..., 0].reshape(len(images), -1))
    return np.concatenate(out)


def score(train: np.ndarray, test: np.ndarray, y_train, y_test, size, scale, count, seed) -> float:
    """Test accuracy of a logistic regression on the crops of one setting."""
    x_train = crops_of(train, size, scale, count, seed)
    x_test = crops_of(test, size, scale, count, seed + 1)
    with threadpool_limits(1):
        model = LogisticRegression(max_iter=2000).fit(x_train, np.tile(y_train, count))
    return float(model.score(x_test, np.tile(y_test, count)))


def main() -> None:
    """Print each setting's test accuracy, then the JSON of them all."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crops", type=int, default=4, help="crops per image and setting")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    images, labels, _ = load_digits_arrays()
    rgb = np.stack([resize_rgb(np.repeat(im[..., None], 3, axis=-1), SIDE) for im in images])
    train, test, y_train, y_test = train_test_split(
        rgb, labels, test_size=0.2, stratify=labels, random_state=args.seed
    )
    figures = {}
    for name, (size, scale) in settings().items():
        figures[name] = score(train, test, y_train, y_test, size, scale, args.crops, args.seed)
        print(f"{name:48s} {figures[name]:.3f}", flush=True)
    print(json.dumps({"test_images": len(test), "crops_per_image": args.crops, "accuracy": figures}))


if __name__ == "__main__":
    main()
