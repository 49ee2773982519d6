"""Throughput of the training stream (readers.train_dataset) on STL10-shaped shards, with and without shuffle,
and what the shard integrity check (readers.verify_shards) adds to a stage on STL10-sized shards.

Writes 5,000 unlabeled + 1,000 labeled random 96x96x3 images as shards in a temporary directory, then
times full epochs of 250 unlabeled + 250 labeled images per step. Prints images/s (both streams
counted) and images/s per core (os.cpu_count()).
With --integrity-images N (default 113,000: STL10's 100k unlabeled + 5k train + 8k test, about 2.6 GB)
it writes that many images as shards under --tmp (default bench/out, not /tmp, which may be small) and
times verify_shards, sha256 (the default) and the records' CRC32C (the path over a hash limit), with the
files in the page cache and, where the machine lets us drop it (root), from disk; then deletes them.
The last line is one JSON object of the figures.
Usage: python bench/read_shards.py [--passes 5] [--integrity-images 113000] [--tmp bench/out]
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
from semisup.data.base import SourceSplits, SplitStream  # noqa: E402

SIZE, UNLABELED, LABELED, BATCH = 96, 5000, 1000, 250


def stl10_like(
    seed: int = 0, unlabeled: int = UNLABELED, labeled: int = LABELED, test: int = 0
) -> SourceSplits:
    """Random uint8 images of STL10's shape; labels cycle through 10 classes."""
    rng = np.random.default_rng(seed)
    # One block of random pixels, cycled with a per-image offset: as incompressible, much faster to make.
    block = rng.integers(0, 256, (SIZE * SIZE * 3 * 64,), dtype=np.uint8)

    def stream(n: int, labeled: bool) -> SplitStream:
        def examples() -> Iterator[tuple[np.ndarray, int]]:
            for i in range(n):
                start = (i * 7919) % (block.size - SIZE * SIZE * 3)
                image = block[start : start + SIZE * SIZE * 3].reshape(SIZE, SIZE, 3)
                yield image, i % 10 if labeled else -1

        return SplitStream(n, examples)

    names = tuple(str(i) for i in range(10))
    splits = {
        "unlabeled": stream(unlabeled, False),
        "labeled": stream(labeled, True),
        "test": stream(test, True),
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


def drop_page_cache() -> bool:
    """Ask the kernel to forget cached file pages (root only); -> whether it did."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def time_verify(shard_dir: Path, hash_limit_bytes: int | None) -> float:
    """Seconds of one full verify_shards (its per-process memo cleared first)."""
    readers.forget(shard_dir)
    start = time.perf_counter()
    readers.verify_shards(shard_dir, hash_limit_bytes=hash_limit_bytes)
    return time.perf_counter() - start


def integrity(images: int, tmp_root: Path) -> dict[str, float]:
    """Write `images` STL10-shaped images as shards under tmp_root, time the integrity checks, delete them."""
    tmp_root.mkdir(parents=True, exist_ok=True)
    unlabeled, labeled = round(images * 100 / 113), round(images * 5 / 113)
    source = stl10_like(1, unlabeled, labeled, images - unlabeled - labeled)
    with tempfile.TemporaryDirectory(dir=tmp_root) as tmp:
        shard_dir = Path(tmp) / "shards"
        start = time.perf_counter()
        shards.write_shards(
            shard_dir, source, image_size=SIZE, num_shards=16, seed=0, data_params={}, progress=False
        )
        write_s = time.perf_counter() - start
        total = sum(s["bytes"] for s in readers.read_manifest(shard_dir)["shards"])
        print(f"wrote {images} images, {total / 1e9:.2f} GB of shards in {write_s:.0f} s", file=sys.stderr)
        figures: dict[str, float] = {"images": images, "gb": round(total / 1e9, 2)}
        figures["sha256_cached_s"] = round(time_verify(shard_dir, None), 2)
        readers._verified.clear()  # as in the next stage's process: only the stamp on disk remembers
        start = time.perf_counter()
        readers.verify_shards(shard_dir)  # what the next stage pays: a few stat calls
        figures["remembered_s"] = round(time.perf_counter() - start, 3)
        figures["crc32c_cached_s"] = round(time_verify(shard_dir, 0), 2)
        if drop_page_cache():
            figures["sha256_from_disk_s"] = round(time_verify(shard_dir, None), 2)
            drop_page_cache()
            figures["crc32c_from_disk_s"] = round(time_verify(shard_dir, 0), 2)
        for key, value in figures.items():
            if key.endswith("_s"):
                print(f"integrity check, {key[:-2]}: {value:.2f} s for {total / 1e9:.2f} GB")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--integrity-images", type=int, default=113_000, help="0 skips the integrity figure")
    parser.add_argument("--tmp", type=Path, default=Path("bench/out"), help="where the big shards go")
    parser.add_argument("--skip-stream", action="store_true", help="only the integrity figure")
    args = parser.parse_args()
    figures: dict = {"cores": os.cpu_count()}
    if args.integrity_images:
        figures["integrity"] = integrity(args.integrity_images, args.tmp)
    if not args.skip_stream:
        figures |= stream_figures(args.passes)
    print(json.dumps(figures))


def stream_figures(passes: int) -> dict:
    """Images/s of the training stream with and without shuffle."""
    with tempfile.TemporaryDirectory() as tmp:
        shard_dir = Path(tmp) / "shards"
        start = time.perf_counter()
        shards.write_shards(
            shard_dir, stl10_like(), image_size=SIZE, num_shards=16, seed=0, data_params={}, progress=False
        )
        write_s = time.perf_counter() - start
        print(f"wrote {UNLABELED + LABELED} images of {SIZE}x{SIZE}x3 in {write_s:.1f} s", file=sys.stderr)
        figures: dict = {"passes": passes, "write_images_per_s": round(6000 / write_s)}
        for name, buffer in (("shuffle", 10000), ("no_shuffle", 1)):
            figures[name] = measure(shard_dir, buffer, passes)
            f = figures[name]
            print(f"{name:>10}: {f['images_per_s']} images/s, {f['images_per_s_per_core']} per core")
    return figures


if __name__ == "__main__":
    main()
