"""Cost of the SimCLR augmentation next to one training step of the encoder it feeds.

Augments a batch of 750 random uint8 96x96x3 images (default strengths) with TF's kernels in a
tf.function (jit_compile=False) and as its own XLA function (jit_compile=True, the default), and
times one forward + backward + Adam update of the reference encoder on 750 images (loss: mean
square of the embeddings, a negligible stand-in). Prints medians of wall-clock and process-CPU ms and
the ratio augment / encoder step; the last line is one JSON object of the figures.

    .venv/bin/python bench/augment.py [--batch 750] [--runs 7] [--encoder-runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from semisup.model.augment import augment  # noqa: E402
from semisup.model.encoder import get_encoder  # noqa: E402


def median_ms(fn: Callable[[int], tf.Tensor], runs: int) -> tuple[float, float]:
    """Median wall-clock and process-CPU milliseconds of fn(i).numpy() over `runs` calls, after a warm-up."""
    fn(-1).numpy()  # trace / compile
    wall, cpu = [], []
    for i in range(runs):
        w, c = time.perf_counter(), time.process_time()
        fn(i).numpy()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return 1000 * statistics.median(wall), 1000 * statistics.median(cpu)


def encoder_step(batch: int, size: int) -> Callable[[int], tf.Tensor]:
    """One Adam step of the reference encoder on a fixed float batch."""
    encoder = get_encoder((size, size, 3))
    optimizer = keras.optimizers.Adam()
    images = tf.random.uniform((batch, size, size, 3), seed=0)

    @tf.function
    def step(x: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(encoder(x, training=True)))
        grads = tape.gradient(loss, encoder.trainable_variables)
        optimizer.apply(grads, encoder.trainable_variables)
        return loss

    return lambda i: step(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=750)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--encoder-runs", type=int, default=3)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    images = tf.constant(rng.integers(0, 256, (args.batch, args.size, args.size, 3), dtype=np.uint8))
    seed = lambda i: tf.constant([0, i], tf.int64)  # noqa: E731
    graph = tf.function(lambda x, s: augment(x, s, jit_compile=False))
    figures = {"batch": args.batch, "image_size": args.size, "cpus": os.cpu_count()}
    figures["augment_graph_ms"], figures["augment_graph_cpu_ms"] = median_ms(
        lambda i: graph(images, seed(i)), args.runs
    )
    figures["augment_xla_ms"], figures["augment_xla_cpu_ms"] = median_ms(
        lambda i: augment(images, seed(i), jit_compile=True), args.runs
    )
    figures["encoder_step_ms"], figures["encoder_step_cpu_ms"] = median_ms(
        encoder_step(args.batch, args.size), args.encoder_runs
    )
    for mode in ("graph", "xla"):
        figures[f"ratio_{mode}"] = figures[f"augment_{mode}_ms"] / figures["encoder_step_ms"]
        figures[f"ratio_{mode}_cpu"] = figures[f"augment_{mode}_cpu_ms"] / figures["encoder_step_cpu_ms"]
    figures = {k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}

    print(f"augment {args.batch} x {args.size}x{args.size}x3, medians (wall / process CPU):")
    for mode in ("graph", "xla"):
        print(
            f"  {mode:5s}  {figures[f'augment_{mode}_ms']:8.1f} ms / {figures[f'augment_{mode}_cpu_ms']:8.1f} ms"
            f"   = {100 * figures[f'ratio_{mode}']:.1f}% / {100 * figures[f'ratio_{mode}_cpu']:.1f}% of a step"
        )
    print(
        f"encoder fwd+bwd+Adam step: {figures['encoder_step_ms']:.1f} ms / {figures['encoder_step_cpu_ms']:.1f} ms"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
