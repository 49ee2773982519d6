"""Scaling overhead: images/s per method at the reference shapes on 1 replica, 2 replicas and 2 workers.

The global batch is the same in every run (the recipe's), so 2 replicas or 2 workers do the same work as
one device, split in two. On a CPU-only machine the 2 replicas are logical CPU devices and the 2 workers
processes on loopback, all sharing the same cores: the point is the overhead of distributing (the
step-time ratio to 1 replica; no speed-up is possible), not speed-up. With --gpu, the 2 replicas are 2
logical GPUs on GPU 0 (MirroredStrategy's NCCL all-reduce) and the workers one process each on it.
Per-replica efficiency = (images/s on N) / (N x images/s on 1): 1.0 is perfect scaling on N real devices.

    python bench/scaling.py [--steps 4] [--methods suncet,paws] [--gpu] [--mixed auto|true|false]

Last line: one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODES = ("1-replica", "2-replicas", "2-workers")


def _devices(mode: str, gpu: bool) -> None:
    """This process's devices for `mode`, before TensorFlow starts them."""
    import tensorflow as tf

    from semisup.training.distribute import configure_devices

    if not gpu:
        tf.config.set_visible_devices([], "GPU")
    if mode == "2-replicas":
        if gpu:
            first = tf.config.list_physical_devices("GPU")[0]
            half = tf.config.LogicalDeviceConfiguration(memory_limit=30_000)
            tf.config.set_logical_device_configuration(first, [half, half])
        else:
            configure_devices(2)
    elif gpu:
        configure_devices(1)


def child(mode: str, method_name: str, shard_dir: str, steps: int, gpu: bool, mixed: str) -> None:
    """One timed run in this process (one worker of it for 2-workers); prints {"step_s": ...} on the chief."""
    _devices(mode, gpu)
    import keras

    from semisup.config import AugmentParams, Params
    from semisup.methods import METHODS
    from semisup.model import augment as aug
    from semisup.model.encoder import get_encoder, get_head
    from semisup.training import distribute
    from semisup.training.precision import resolve_mixed_precision, set_precision
    from semisup.training.train import Trainer, epoch_dataset

    set_precision(resolve_mixed_precision(mixed if mixed == "auto" else mixed == "true"))
    keras.utils.set_random_seed(0)
    strategy = distribute.select_strategy(
        {"1-replica": "default", "2-replicas": "mirrored"}.get(mode, "multiworker")
    )
    method, mp = METHODS[method_name], Params().method(method_name)
    with strategy.scope():
        encoder = get_encoder((96, 96, 3))
        head = get_head(10, input_dim=encoder.output_shape[-1]) if method.has_head else None
        optimizer = keras.optimizers.Adam()
    trainer = Trainer(
        method,
        mp,
        encoder=encoder,
        head=head,
        optimizer=optimizer,
        augment_kwargs=aug.from_params(AugmentParams()),
        num_classes=10,
        seed=0,
        strategy=strategy,
    )
    dataset, per_epoch = epoch_dataset(strategy, method, mp, shard_dir, seed=0, epoch=1, shuffle_buffer=1000)
    warmup = 2
    if per_epoch < warmup + steps:
        raise SystemExit(f"{method_name}: {per_epoch} steps per epoch, need {warmup + steps}")
    times = []
    batches = iter(dataset)
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        unlabeled, labeled, labels = next(batches)
        loss, _ = trainer.step(unlabeled, labeled, labels, i)
        float(loss)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    if distribute.is_chief(strategy):
        print(json.dumps({"step_s": statistics.median(times), "replicas": strategy.num_replicas_in_sync}))
    sys.stdout.flush()
    # The cluster runtime may wait for its peers at exit; every worker is done here.
    os._exit(0)


def run_mode(mode: str, method: str, shard_dir: str, args: argparse.Namespace) -> dict:
    """Median step seconds of `method` in `mode`, from child processes."""
    from semisup.training.cluster import free_ports, tf_config

    cmd = [sys.executable, __file__, "--child", mode, "--methods", method, "--shards", shard_dir]
    cmd += ["--steps", str(args.steps), "--mixed", args.mixed] + (["--gpu"] if args.gpu else [])
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("TF_CONFIG", None)
    workers = 2 if mode == "2-workers" else 1
    addresses = [f"127.0.0.1:{p}" for p in free_ports(workers)]
    procs = []
    try:
        for i in range(workers):
            worker_env = env | ({"TF_CONFIG": tf_config(addresses, i)} if workers > 1 else {})
            procs.append(subprocess.Popen(cmd, env=worker_env, stdout=subprocess.PIPE, text=True))
        outputs = [p.communicate(timeout=3600)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    if any(p.returncode for p in procs):
        raise SystemExit(f"{method} {mode}: a child failed (exit {[p.returncode for p in procs]})")
    return json.loads(outputs[0].strip().splitlines()[-1])


def main() -> None:
    from semisup.methods import METHODS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="timed steps per run (the median is reported)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--gpu", action="store_true", help="replicas and workers on GPU 0 (logical GPUs)")
    parser.add_argument("--mixed", choices=["auto", "true", "false"], default="auto")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--shards", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.methods, args.shards, args.steps, args.gpu, args.mixed)
        return

    from bench.train_throughput import write_shards
    from semisup.config import Params

    figures: dict = {"cpu_count": os.cpu_count(), "gpu": args.gpu, "steps": args.steps}
    with tempfile.TemporaryDirectory() as tmp:
        shard_dir = write_shards(tmp, unlabeled=500 * (args.steps + 3), labeled=500)
        for name in args.methods.split(","):
            batch = Params().method(name).unlabeled_batch
            runs = {mode: run_mode(mode, name, shard_dir, args) for mode in MODES}
            one = runs["1-replica"]["step_s"]
            row = {"unlabeled_batch": batch}
            for mode, out in runs.items():
                n = int(mode[0])
                row[mode] = {
                    "step_s": round(out["step_s"], 4),
                    "unlabeled_images_per_s": round(batch / out["step_s"], 1),
                    "step_ratio_to_1": round(out["step_s"] / one, 3),
                    "per_replica_efficiency": round(one / (n * out["step_s"]), 3),
                }
            figures[name] = row
            print(
                f"{name:>12}: "
                + "  ".join(
                    f"{m} {row[m]['unlabeled_images_per_s']:6.1f} img/s (x{row[m]['step_ratio_to_1']:.2f} step, "
                    f"eff {row[m]['per_replica_efficiency']:.2f})"
                    for m in MODES
                ),
                flush=True,
            )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
