"""tf.distribute for every strategy: devices, the strategy, who is chief, cluster-wide agreement, lost workers.

One device: the default strategy. Several GPUs (or logical CPU devices): MirroredStrategy over all of
them. Several processes or machines: MultiWorkerMirroredStrategy from TF_CONFIG. A worker whose peer
died stops (the coordination service aborts the collectives) instead of waiting forever.
"""

from __future__ import annotations

import json
import os
import re

import tensorflow as tf

from semisup.core.errors import UserError

# A dead peer is noticed by the cluster's coordination service (missed heartbeats: seconds) or by a broken
# connection, which aborts every pending collective. This timeout is only the backstop for a peer that is
# alive but stuck: a collective may wait this long for the slowest worker (its first step compiles, every
# epoch ends with the kNN monitor), so it must stay far above the slowest honest wait on a loaded machine.
COLLECTIVE_TIMEOUT_S = 600.0
STRATEGIES = ("auto", "default", "mirrored", "multiworker")


class WorkerLost(UserError):
    """A peer of a multi-worker run stopped responding: the run stops; rerun every worker to resume."""


def configure_devices(cpu_replicas: int = 1, memory_growth: bool = True) -> None:
    """Before TensorFlow starts: GPU memory growth, and `cpu_replicas` logical CPU devices for mirrored.

    Memory growth lets several queued experiments share a GPU. cpu_replicas > 1 splits the CPU into that
    many logical devices, so MirroredStrategy has N replicas on a machine without GPUs; results do not
    depend on it (the global batch and its views are the same on any number of replicas).
    """
    if cpu_replicas < 1:
        raise UserError(f"--cpu-replicas: {cpu_replicas} must be at least 1")
    try:
        if memory_growth:
            for gpu in tf.config.list_physical_devices("GPU"):
                tf.config.experimental.set_memory_growth(gpu, True)
        if cpu_replicas > 1:
            cpu = tf.config.list_physical_devices("CPU")[0]
            config = [tf.config.LogicalDeviceConfiguration() for _ in range(cpu_replicas)]
            tf.config.set_logical_device_configuration(cpu, config)
            if not tf.config.list_physical_devices("GPU"):
                # The replicas run their ops at the same time on the same cores: each op gets its share
                # of the cores, not all of them (which oversubscribes the cores N times).
                share = max(1, (os.cpu_count() or 1) // cpu_replicas)
                tf.config.threading.set_intra_op_parallelism_threads(share)
    except RuntimeError:
        # TensorFlow already started in this process (a caller configured it): keep its devices.
        pass


# Where the manual shows a cluster's TF_CONFIG and how to launch one.
SCALING_DOC = "docs/scaling.md, 'Launching'"


def cluster_spec() -> dict:
    """TF_CONFIG's cluster ({} when unset); UserError when it is not valid JSON."""
    raw = os.environ.get("TF_CONFIG", "")
    if not raw.strip():
        return {}
    try:
        return dict(json.loads(raw).get("cluster", {}))
    except (ValueError, AttributeError):
        raise UserError(
            f"TF_CONFIG: not valid JSON with a cluster: see {SCALING_DOC} for the format"
        ) from None


def mirrored_devices() -> list[str]:
    """The devices MirroredStrategy spans: every GPU, else every logical CPU device."""
    gpus = tf.config.list_logical_devices("GPU")
    return [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]


def select_strategy(name: str, timeout_s: float = COLLECTIVE_TIMEOUT_S) -> tf.distribute.Strategy:
    """The tf.distribute strategy for `train.strategy`.

    auto: multiworker when TF_CONFIG names more than one task, else mirrored when there are several
    GPUs (or logical CPU devices), else the default strategy.
    """
    if name not in STRATEGIES:
        raise UserError(f"train.strategy: {name!r} is not one of {', '.join(STRATEGIES)}")
    if name == "auto":
        tasks = sum(len(v) for v in cluster_spec().values())
        name = "multiworker" if tasks > 1 else "mirrored" if len(mirrored_devices()) > 1 else "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(mirrored_devices())
    if not cluster_spec():
        raise UserError(
            f"train.strategy: multiworker needs TF_CONFIG (or --local-workers N): see {SCALING_DOC}"
        )
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout_s)
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def task(strategy: tf.distribute.Strategy) -> tuple[int, int]:
    """(this worker's index, number of workers); (0, 1) outside a cluster. Index 0 is the chief."""
    resolver = getattr(strategy, "cluster_resolver", None)
    spec = resolver.cluster_spec().as_dict() if resolver is not None else {}
    if not spec:
        return 0, 1
    order = [(job, i) for job in ("chief", "worker") for i in range(len(spec.get(job, [])))]
    return order.index((resolver.task_type, resolver.task_id)), len(order)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the outputs: always, except on the non-chief workers of a cluster."""
    return task(strategy)[0] == 0


def gather_ints(strategy: tf.distribute.Strategy, value: int) -> list[int]:
    """Every worker's `value` (one per replica, in replica order): a collective all workers must call."""

    def replica() -> tf.Tensor:
        return tf.distribute.get_replica_context().all_gather(tf.constant([value], tf.int64), axis=0)

    gathered = strategy.run(tf.function(replica))
    first = strategy.experimental_local_results(gathered)[0]
    return [int(v) for v in first.numpy()]


def agree_min(strategy: tf.distribute.Strategy, value: int) -> int:
    """The smallest `value` over every worker; a barrier too. No collective in a single process."""
    if task(strategy)[1] == 1:
        return value
    return min(gather_ints(strategy, value))


_TASK = re.compile(r"task:(\d+)")


def lost_worker(exc: Exception, me: int, workers: int) -> str:
    """Which peer an error of a collective names ('worker K'), else 'a worker'."""
    others = {int(t) for t in _TASK.findall(str(exc))} - {me}
    if len(others) == 1:
        return f"worker {others.pop()}"
    if workers == 2:
        return f"worker {1 - me}"
    return "a worker"


# The errors a collective raises when a peer died, timed out or aborted the group.
PEER_ERRORS = (
    tf.errors.UnavailableError,
    tf.errors.DeadlineExceededError,
    tf.errors.CancelledError,
    tf.errors.AbortedError,
    tf.errors.InternalError,
    tf.errors.UnknownError,
    tf.errors.FailedPreconditionError,
)


def strategy_name(strategy: tf.distribute.Strategy) -> str:
    """The strategy as params.yaml's train.strategy names it: default, mirrored or multiworker."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "multiworker"
    if isinstance(strategy, tf.distribute.MirroredStrategy):
        return "mirrored"
    return "default"


def describe_devices(strategy: tf.distribute.Strategy) -> str:
    """Where `strategy`'s replicas run on this worker, for the stage's one start line.

    `CPU:0`, `GPU:0 (NVIDIA H200)`, `GPU:0, GPU:1 (NVIDIA H200)`.
    """
    try:
        devices = [d.rsplit("device:", 1)[-1] for d in strategy.extended.worker_devices]
    except (RuntimeError, AttributeError):  # the default strategy: TensorFlow places ops on GPU:0 if any
        devices = ["GPU:0" if tf.config.list_logical_devices("GPU") else "CPU:0"]
    models = []
    if any(d.startswith("GPU") for d in devices):
        for gpu in tf.config.list_physical_devices("GPU"):
            name = tf.config.experimental.get_device_details(gpu).get("device_name", "GPU")
            models += [name] if name not in models else []
    return ", ".join(devices) + (f" ({', '.join(models)})" if models else "")
