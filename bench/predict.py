"""Benchmark: `semisup predict`'s images per second, decoding PNG files through the encoder and the vote.

Writes N PNG files of digits size (32x32) and of STL10 size (96x96), and one JPEG set at 96x96, then runs
predict_folder with the reference encoder (4 x Conv2D(128), Dense(128); untrained weights cost the same)
and a weighted 20-NN vote against a bank of 5,000. Prints one line per size: median images/s over runs,
and the share of the time spent decoding (the same loop without the encoder and the vote).

    .venv/bin/python bench/predict.py [--images 2000] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image  # noqa: E402

from semisup.model.predict import predict_folder  # noqa: E402


def write_images(folder: Path, count: int, size: int, suffix: str) -> list[Path]:
    """count random-texture RGB images of size x size; -> their paths."""
    rng = np.random.default_rng(size)
    folder.mkdir(parents=True)
    paths = []
    for i in range(count):
        small = rng.integers(0, 256, (size // 4, size // 4, 3), dtype=np.uint8)  # compressible, like photos
        image = Image.fromarray(small).resize((size, size), Image.Resampling.BILINEAR)
        paths.append(folder / f"{i:06d}{suffix}")
        image.save(paths[-1], quality=90) if suffix == ".jpg" else image.save(paths[-1])
    return paths


def timed(paths: list[Path], size: int, embed, vote) -> float:
    """Seconds of one predict_folder pass over paths."""
    started = time.perf_counter()
    predict_folder(
        paths, embed=embed, vote=vote, image_size=size, max_pixels=None, on_bad_image="error", chunk=500
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    from semisup.evaluation.knn import knn_vote
    from semisup.model.embed import embed as embed_batches
    from semisup.model.encoder import get_encoder

    rng = np.random.default_rng(0)
    bank = rng.normal(size=(5000, 128)).astype(np.float32)
    bank_labels = rng.integers(0, 10, 5000)
    vote = lambda f: knn_vote(bank, bank_labels, f, k=20, num_classes=10)  # noqa: E731
    no_vote = lambda f: (np.zeros(len(f), np.int64), np.ones(len(f), np.float32))  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        for size, suffix in ((32, ".png"), (96, ".png"), (96, ".jpg")):
            paths = write_images(Path(tmp) / f"{size}{suffix}", args.images, size, suffix)
            encoder = get_encoder((size, size, 3))
            embed = lambda x, e=encoder: embed_batches(e, [(x, np.zeros(len(x), np.int64))])[0]  # noqa: E731
            timed(paths[:500], size, embed, vote)  # trace the functions once
            full = [timed(paths, size, embed, vote) for _ in range(args.runs)]
            decode = [
                timed(paths, size, lambda x: np.zeros((len(x), 128), np.float32), no_vote)
                for _ in range(args.runs)
            ]
            rate = args.images / statistics.median(full)
            print(
                f"{size}x{size} {suffix[1:].upper()}: {rate:,.0f} images/s (median of {args.runs} x {args.images}), "
                f"decoding alone {args.images / statistics.median(decode):,.0f} images/s "
                f"({statistics.median(decode) / statistics.median(full):.0%} of the time)"
            )


if __name__ == "__main__":
    main()
