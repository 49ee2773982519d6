"""Training throughput per method (or named configuration of params.yaml, e.g. the papers' paws_paper and
suncet_paper) at the reference shapes, and each step's cost over its compute floor.

The floor is a bare reference encoder forward + backward + Adam update over the images the method must
encode at full size (CrossEntropy 250, SuNCEt and PAWS 750, InfoNCE 1,000; a configuration's support views
count too, its small crops do not), fed from memory. A configuration's step is built as pretrain builds it
(semisup.training.pretrain.build: its encoder, projection head, optimizer and schedule). The step is the real
thing: input pipeline (shards on disk, via semisup.data.readers), augmentation, encoder, loss and update.
step/floor is what augmentation, loss and input cost on top of the encoder's own compute.

    python bench/train_throughput.py [--steps 6] [--methods paws,paws_paper] [--jit] [--mixed auto|true|false]
        [--progress]   # each step also reports to semisup.core.progress, as pretrain does (bar or 10% lines)

Last line: one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from semisup.config import load_params, resolve_run  # noqa: E402
from semisup.core.progress import Progress  # noqa: E402
from semisup.data import shards  # noqa: E402
from semisup.data.base import SourceSplits, SplitStream  # noqa: E402
from semisup.methods import METHODS, view_options  # noqa: E402
from semisup.model.encoder import get_encoder  # noqa: E402
from semisup.training import pretrain  # noqa: E402
from semisup.training.precision import resolve_mixed_precision, set_precision
from semisup.training.train import epoch_dataset  # noqa: E402

SHAPE = (96, 96, 3)
PARAMS = load_params("params.yaml")  # the reference recipe and its named configurations
CLASSES = 10


def write_shards(root: str, unlabeled: int, labeled: int) -> str:
    """STL10-shaped random shards through the project's own shard writer."""
    rng = np.random.default_rng(0)

    def stream(n: int, labeled: bool) -> SplitStream:
        def examples():
            for i in range(n):
                yield rng.integers(0, 256, SHAPE, dtype=np.uint8), i % CLASSES if labeled else -1

        return SplitStream(n, examples)

    source = SourceSplits(
        "bench",
        tuple(str(i) for i in range(CLASSES)),
        {"unlabeled": stream(unlabeled, False), "labeled": stream(labeled, True), "test": stream(0, True)},
    )
    out = os.path.join(root, "shards")
    shards.write_shards(
        out, source, image_size=SHAPE[0], num_shards=4, seed=0, data_params={}, progress=False
    )
    return out


def floor_step_seconds(encoder: keras.Model, n_images: int, steps: int, jit: bool) -> list[float]:
    """Median-able timings of a bare forward+backward+Adam step over `n_images` images."""
    opt = keras.optimizers.Adam()
    x = tf.random.uniform((n_images, *SHAPE))

    @tf.function(jit_compile=jit)
    def step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(tf.cast(encoder(x, training=True), tf.float32)))
        grads = tape.gradient(loss, encoder.trainable_variables)
        opt.apply(grads, encoder.trainable_variables)
        return loss

    step(x).numpy()  # trace and warm up
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step(x).numpy()
        times.append(time.perf_counter() - t0)
    return times


def method_step_seconds(
    name: str, shard_dir: str, steps: int, jit: bool, warmup: int = 2, progress: bool = False
) -> tuple[list[float], int]:
    """Per-step timings of the real training step of method or configuration `name`; -> (timings,
    unlabeled batch)."""
    spec = resolve_run(PARAMS, name)
    params = dataclasses.replace(spec.params, train=dataclasses.replace(spec.params.train, jit_compile=jit))
    spec = dataclasses.replace(spec, params=params)
    method, mp = spec.method, spec.method_params
    strategy = tf.distribute.get_strategy()
    run = pretrain.Run(spec, shard_dir, CLASSES, SHAPE, strategy, False, 0, 1)
    _, trainer = pretrain.build(run)
    # Steady state: one epoch's stream, each step timed from asking for its batch (so input the
    # pipeline has not prefetched counts) to its loss on the host; the first `warmup` steps (tracing,
    # filling the shuffle buffer) are not counted.
    dataset, per_epoch = epoch_dataset(
        tf.distribute.get_strategy(),
        method,
        mp,
        shard_dir,
        seed=0,
        epoch=1,
        shuffle_buffer=1000,
        views=spec.views,
    )
    if per_epoch < warmup + steps:
        raise SystemExit(f"{name}: {per_epoch} steps per epoch, need {warmup + steps}: write more shards")
    times = []
    on_step = Progress(name, mp.unlabeled_batch) if progress else None
    batches = iter(dataset)
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        unlabeled, labeled, labels = next(batches)
        loss, _ = trainer.step(unlabeled, labeled, labels, i)
        value = float(loss)
        if on_step is not None:
            on_step(i + 1, warmup + steps, value)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times, mp.unlabeled_batch


def images_encoded(name: str) -> int:
    """Full-size images a step encodes: the unlabeled views and every view of the labeled batch."""
    method, mp = METHODS[PARAMS.method_of(name)], PARAMS.method(name)
    views = view_options(mp).support_views
    return method.unlabeled_views * mp.unlabeled_batch + (
        views * mp.labeled_batch if method.uses_labeled else 0
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps", type=int, default=6, help="timed steps per method (the median is reported)"
    )
    parser.add_argument("--methods", default=",".join([*METHODS, *PARAMS.configurations]))
    parser.add_argument("--progress", action="store_true", help="report every step to semisup.core.progress")
    parser.add_argument("--jit", action="store_true", help="jit_compile=True for step and floor")
    parser.add_argument(
        "--mixed",
        choices=["auto", "true", "false"],
        default="auto",
        help="mixed_bfloat16 for step and floor (auto: as train.mixed_precision's default resolves here)",
    )
    args = parser.parse_args()
    mixed = resolve_mixed_precision(args.mixed if args.mixed == "auto" else args.mixed == "true")
    set_precision(mixed)
    keras.utils.set_random_seed(0)
    figures: dict = {"cpu_count": os.cpu_count(), "jit_compile": args.jit, "mixed_precision": mixed}
    figures["progress"] = args.progress
    with tempfile.TemporaryDirectory() as tmp:
        shard_dir = write_shards(tmp, unlabeled=500 * (args.steps + 3), labeled=500)
        for name in args.methods.split(","):
            step_times, unlabeled = method_step_seconds(
                name, shard_dir, args.steps, args.jit, progress=args.progress
            )
            floor_times = floor_step_seconds(get_encoder(SHAPE), images_encoded(name), args.steps, args.jit)
            step, floor = statistics.median(step_times), statistics.median(floor_times)
            figures[name] = {
                "unlabeled_images_per_s": round(unlabeled / step, 1),
                "images_encoded_per_step": images_encoded(name),
                "step_s": round(step, 4),
                "floor_s": round(floor, 4),
                "step_over_floor": round(step / floor, 3),
                "floor_images_per_s": round(images_encoded(name) / floor, 1),
            }
            f = figures[name]
            print(
                f"{name:>12}: {f['unlabeled_images_per_s']:7.1f} unlabeled img/s  step {step:.3f}s  "
                f"floor {floor:.3f}s ({f['images_encoded_per_step']} images)  step/floor {f['step_over_floor']:.3f}",
                flush=True,
            )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
