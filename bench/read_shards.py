"""Throughput of the training stream (readers.train_dataset) on STL10-shaped shards, with and without shuffle.

Writes 5,000 unlabeled + 1,000 labeled random 96x96x3 images as shards in a temporary directory, then
times full epochs of 250 unlabeled + 250 labeled images per step. Prints images/s (both streams
counted) and images/s per core (os.cpu_count()); the last line is one JSON object of the figures.
Usage: python bench/read_shards.py [--passes 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from semisup.data import readers, shards  # noqa: E402
from semisup.data.sources import SourceSplits, SplitStream  # noqa: E402

SIZE, UNLABELED, LABELED, BATCH = 96, 5000, 1000, 250


def stl10_like(seed: int = 0) -> SourceSplits:
    """Random uint8 images of STL10's shape; labels cycle through 10 classes."""
    rng = np.random.default_rng(seed)

    def stream(n: int, labeled: bool) -> SplitStream:
        def examples() -> Iterator[tuple[np.ndarray, int]]:
            for i in range(n):
                yield rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8), i % 10 if labeled else -1

        return SplitStream(n, examples)

    names = tuple(str(i) for i in range(10))
    splits = {
        "unlabeled": stream(UNLABELED, False),
        "labeled": stream(LABELED, True),
        "test": stream(0, True),
    }
    return SourceSplits("bench", names, splits)


def one_epoch(shard_dir: Path, epoch: int, shuffle_buffer: int) -> tuple[float, int]:
    """Seconds to build and drain one epoch of the stream, and the images it yielded."""
    start = time.perf_counter()
    ds, steps = readers.train_dataset(
        shard_dir,
        unlabeled_batch=BATCH,
        labeled_batch=BATCH,
        seed=0,
        epoch=epoch,
        shuffle_buffer=shuffle_buffer,
    )
    images = 0
    for u, x, _ in ds:
        images += int(u.shape[0]) + int(x.shape[0])
    return time.perf_counter() - start, images


def measure(shard_dir: Path, shuffle_buffer: int, passes: int) -> dict[str, float]:
    """Median images/s over `passes` epochs, after one warm-up epoch."""
    one_epoch(shard_dir, 0, shuffle_buffer)
    rates = []
    for epoch in range(1, passes + 1):
        seconds, images = one_epoch(shard_dir, epoch, shuffle_buffer)
        rates.append(images / seconds)
    rate = statistics.median(rates)
    return {"images_per_s": round(rate), "images_per_s_per_core": round(rate / os.cpu_count())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        shard_dir = Path(tmp) / "shards"
        start = time.perf_counter()
        shards.write_shards(
            shard_dir, stl10_like(), image_size=SIZE, num_shards=16, seed=0, data_params={}, progress=False
        )
        write_s = time.perf_counter() - start
        print(f"wrote {UNLABELED + LABELED} images of {SIZE}x{SIZE}x3 in {write_s:.1f} s", file=sys.stderr)
        figures: dict = {
            "cores": os.cpu_count(),
            "passes": args.passes,
            "write_images_per_s": round(6000 / write_s),
        }
        for name, buffer in (("shuffle", 10000), ("no_shuffle", 1)):
            figures[name] = measure(shard_dir, buffer, args.passes)
            f = figures[name]
            print(f"{name:>10}: {f['images_per_s']} images/s, {f['images_per_s_per_core']} per core")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
