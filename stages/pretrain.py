"""pretrain@M: train the encoder of one method, or one configuration of a method, with its params (the
reference recipe by default); resumes after a crash.

One process, on one device or mirrored over several (`--cpu-replicas N` on a machine without GPUs),
a worker of a cluster (TF_CONFIG), or a whole cluster on this machine (`--local-workers N`).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from semisup.config import RunSpec, resolve_run
from semisup.data.subsets import parse_run, read_subset
from stages.common import checkpoint, load, params_option, run_option, user_errors
from stages.console import done


@click.command()
@run_option
@params_option
@click.option(
    "--shards",
    default="data/shards",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Shard directory.",
)
@click.option(
    "--models",
    default="models",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Writes <models>/<run>/encoder.keras.",
)
@click.option(
    "--metrics",
    default="metrics/runs",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Writes <metrics>/<run>/train/.",
)
@click.option(
    "--checkpoints",
    default=".checkpoints",
    show_default=True,
    envvar="SEMISUP_CHECKPOINTS",
    show_envvar=True,
    type=click.Path(file_okay=False),
    help="Per-epoch checkpoints, outside DVC's outputs so a killed run resumes. A study's queue workers "
    "get the clone's own (drivers/study.py): DVC runs them in copies it removes.",
)
@click.option(
    "--live",
    default=None,
    type=click.Path(file_okay=False),
    help="Also write the curves as each epoch ends to <live>/<run>/ (dvclive's files and a dvc.yaml), so "
    "`dvc exp show` and `dvc plots show` see a running experiment; removed when the run ends. "
    "dvc.yaml passes metrics/live. [default: off]",
)
@click.option(
    "--cpu-replicas",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    envvar="SEMISUP_CPU_REPLICAS",
    help="Split the CPU into N logical devices, so train.strategy auto/mirrored has N replicas without "
    "GPUs. Results and checkpoints do not depend on it. [env SEMISUP_CPU_REPLICAS]",
)
@click.option(
    "--local-workers",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    envvar="SEMISUP_LOCAL_WORKERS",
    help="Run as N worker processes of one multiworker cluster on this machine (loopback ports); "
    "the first writes the outputs. [env SEMISUP_LOCAL_WORKERS]",
)
@click.option(
    "--step-log",
    type=click.Path(dir_okay=False),
    default=None,
    help="Append every training step's loss to this file (step, steps per epoch, loss; tab-separated), "
    "e.g. to compare the same run on different hardware. Only the chief writes it.",
)
@click.option(
    "--split", default=None, type=click.Path(dir_okay=False), help="The run's labeled subset (default: all)."
)
@click.option(
    "--code",
    "code_digest",
    default=None,
    type=click.Path(dir_okay=False),
    help="The digest file of this run's code that the code stage wrote (dvc.yaml passes it): refused "
    "unless it is the code this run runs, with the method its params name.",
)
@user_errors
def main(
    run: str,
    params_path: str,
    shards: str,
    models: str,
    metrics: str,
    checkpoints: str,
    live: str | None,
    cpu_replicas: int,
    local_workers: int,
    step_log: str | None,
    split: str | None,
    code_digest: str | None,
) -> None:
    """Pretrain the run's encoder on the shards: its method or configuration, with its seed and its labeled
    subset."""
    spec = _resolve(params_path, run, split, code_digest)
    if local_workers > 1:
        sys.exit(_launch(spec.params.train.strategy, local_workers))
    cluster, worker = _start_worker(cpu_replicas)
    from semisup.training.few_labels import fit_spec, subset_counts
    from semisup.training.preflight import check_pretrain

    # A labeled subset smaller than the recipe's labeled batch (or kNN bank) gets them by one rule.
    spec = fit_spec(spec, subset_counts(shards, spec.labeled_ids))
    logging.getLogger("semisup").info(spec.fitted.describe(run))
    # Everything that can fail before training fails here: manifest, knn.k, writable folders, free disk.
    live_dir = f"{live}/{run}" if live else None
    check_pretrain(spec, shards, f"{models}/{run}", f"{metrics}/{run}", checkpoints, live_dir)
    history = _train(
        spec,
        cluster,
        worker,
        shard_dir=shards,
        model_dir=f"{models}/{run}",
        metrics_dir=f"{metrics}/{run}",
        checkpoint_root=checkpoints,  # the fingerprint holds the run's seed and subset
        live_dir=live_dir,
        step_log=step_log,
    )
    if worker == 0:
        done(f"{run}: trained {len(history)} epochs -> {models}/{run}/encoder.keras")


def _resolve(params_path: str, run: str, split: str | None, code_digest: str | None) -> RunSpec:
    """The run resolved once, at the boundary: its configuration's params and overrides, its seed and its
    labeled subset; an unknown name, a stale code digest or a bad subset fails here, before TensorFlow
    starts."""
    method, budget, seed = parse_run(run)
    spec = resolve_run(load(params_path), method, run=run, seed=seed, budget=budget)
    if code_digest:
        check_code_digest(code_digest, spec.method.name)
    return spec.on_subset(read_subset(split)) if split else spec


def _start_worker(cpu_replicas: int) -> tuple[dict, int]:
    """This process as one worker (of a TF_CONFIG cluster, or alone): its logging and devices; -> (the
    cluster spec, {} alone; this worker's index, 0 for the chief)."""
    from semisup.training.distribute import cluster_spec, configure_devices

    cluster = cluster_spec()
    worker = _worker_index(cluster)
    # A cluster's other workers log warnings only: the chief's progress is the run's.
    logging.basicConfig(level=logging.INFO if worker == 0 else logging.WARNING, format="%(message)s")
    logging.getLogger("tensorflow").setLevel(logging.WARNING)  # its per-collective INFO lines
    configure_devices(cpu_replicas)
    return cluster, worker


def _train(spec: RunSpec, cluster: dict, worker: int, *, step_log: str | None, **outputs: Any) -> list:
    """Train the run (semisup.training.pretrain) with the chief's progress and step log; -> its history. In a
    cluster a lost or failed peer ends the process at once, with one line."""
    from semisup.core.errors import UserError
    from semisup.core.progress import Progress
    from semisup.pipeline.codedeps import pretrain_code
    from semisup.training.distribute import WorkerLost
    from semisup.training.pretrain import pretrain

    log_file = open(step_log, "a", buffering=1) if step_log and worker == 0 else None  # noqa: SIM115
    # Only the chief shows progress; images/s as the bench counts them: unlabeled ones.
    progress = Progress(spec.name, spec.method_params.unlabeled_batch) if worker == 0 else None

    def on_step(step: int, steps: int, loss: float) -> None:
        checkpoint()  # a step boundary: a Ctrl-C or SIGTERM that a finaliser swallowed stops the run here
        if log_file is not None:
            log_file.write(f"{step}\t{steps}\t{loss!r}\n")
        if progress is not None:
            progress(step, steps, loss)

    try:
        return pretrain(
            spec,
            on_step=on_step,
            records={"batches.json": spec.fitted.record()},
            code=pretrain_code(spec.method.name),  # the run's code: changed code never resumes
            **outputs,
        )
    except UserError as exc:
        if not isinstance(exc, WorkerLost) and not cluster:
            raise
        # In a cluster, TensorFlow's runtime may wait for a lost (or failed) peer at interpreter exit:
        # report and leave at once.
        click.echo(f"error: {exc}", err=True)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(2)


def check_code_digest(path: str, method: str) -> None:
    """A UserError unless `path` holds the digest of the code a pretrain stage of `method` runs (the code
    stage wrote it for another method, or before the code changed: data/code/ edited or restored by hand)."""
    from semisup.core.errors import UserError
    from semisup.pipeline.codedeps import closure, digest_text

    try:
        written = Path(path).read_text()
    except OSError as exc:
        raise UserError(f"{path}: cannot read it ({exc.strerror}): run `dvc repro code` first") from None
    if written != digest_text(closure("stages.pretrain", method), method=method):
        raise UserError(
            f"{path}: not the digest of the code this run runs (method {method}): the code or params.yaml's "
            "methods section changed since the code stage wrote it: run `dvc repro -f code`, then this stage "
            "again"
        )


def _launch(strategy: str, workers: int) -> int:
    """Rerun this command as `workers` processes of one cluster; -> the cluster's exit status."""
    from semisup.core.errors import UserError
    from semisup.training.cluster import launch_local

    if strategy not in ("auto", "multiworker"):
        raise UserError(
            f"train.strategy: {strategy} cannot run on --local-workers {workers}: set auto or multiworker"
        )
    if os.environ.get("TF_CONFIG"):
        raise UserError("TF_CONFIG: already set; --local-workers sets its own: unset one of them")
    argv = [sys.executable, "-m", "stages.pretrain", *_without_local_workers(sys.argv[1:])]
    return launch_local(argv, workers)


def _without_local_workers(args: list[str]) -> list[str]:
    """The command-line arguments without --local-workers and its value."""
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--local-workers":
            skip = True
        elif not arg.startswith("--local-workers="):
            out.append(arg)
    return out


def _worker_index(spec: dict) -> int:
    """This process's index in TF_CONFIG's cluster (chief first); 0 without a cluster."""
    if not spec:
        return 0
    import json

    task = json.loads(os.environ["TF_CONFIG"]).get("task", {})
    order = [(job, i) for job in ("chief", "worker") for i in range(len(spec.get(job, [])))]
    try:
        return order.index((task.get("type"), int(task.get("index", 0))))
    except ValueError:
        return 0


if __name__ == "__main__":
    main()
