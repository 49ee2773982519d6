"""A local cluster of pretrain stage processes (tests/test_distributed.py, bench/liveness.py): the tiny
float32 profile whose runs compare across strategies, a stage command, two workers on loopback ports, and
the step log to wait on before killing one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from devtools.support import DATA, ENV, ROOT, write_params
from semisup.training.cluster import free_ports, tf_config

# float32, so that 1, 2 replicas and 2 workers can be compared to 1e-4. Odd or small batches where a
# method never reads that part: CrossEntropy's unlabeled batch and InfoNCE's labeled batch (25) need
# not divide among 2 replicas.
TINY = DATA | {
    "train.epochs": 1,
    "train.shuffle_buffer": 500,
    "train.mixed_precision": False,
    "encoder.filters": 8,
    "encoder.embedding_dim": 32,
    "methods.crossentropy.unlabeled_batch": 99,
    "methods.crossentropy.labeled_batch": 50,
    "methods.infonce.unlabeled_batch": 128,
    "methods.suncet.unlabeled_batch": 128,
    "methods.suncet.labeled_batch": 50,
    "methods.paws.unlabeled_batch": 128,
    "methods.paws.labeled_batch": 50,
}
# CrossEntropy's runs double as the uninterrupted references of the kill-and-resume tests. (PAWS's
# sharpening amplifies float rounding differences between replica counts step by step: over 3 epochs they
# grow to ~1e-3 in the loss, so its runs stay at the one epoch where "equal within 1e-4" is meaningful.)
EPOCHS = {"crossentropy": 3}
KILLED = "crossentropy"


def write_tiny_params(root: Path) -> Path:
    """root/params.yaml (TINY) and root/params-<method>.yaml for each method of EPOCHS; -> the first."""
    for method, epochs in EPOCHS.items():
        write_params(root / f"params-{method}.yaml", TINY | {"train.epochs": epochs})
    return write_params(root / "params.yaml", TINY)


def pretrain_cmd(params: Path, shards: Path, run: str, out: Path, *extra: str) -> list[str]:
    """The pretrain stage's command for `run`, writing under `out` and logging every step to out/steps.tsv."""
    return [
        sys.executable,
        "-m",
        "stages.pretrain",
        "--run",
        run,
        "--params",
        str(params),
        "--shards",
        str(shards),
        "--models",
        str(out / "models"),
        "--metrics",
        str(out / "metrics"),
        "--checkpoints",
        str(out / "ckpt"),
        "--step-log",
        str(out / "steps.tsv"),
        *extra,
    ]


def scratch_env(out: Path) -> dict[str, str]:
    """The tests' environment with a private TMPDIR, to check that no run leaves scratch behind."""
    (out / "tmp").mkdir(parents=True, exist_ok=True)
    return ENV | {"TMPDIR": str(out / "tmp")}


def cluster(
    commands: list[tuple[Path, list[str]]], env: dict[str, str], stdout: int, stderr: int
) -> list[subprocess.Popen]:
    """One worker per (cwd, command) of a cluster on free loopback ports, each in its own process group."""
    addresses = [f"127.0.0.1:{p}" for p in free_ports(len(commands))]
    return [
        subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env | {"TF_CONFIG": tf_config(addresses, i)},
            stdout=stdout,
            stderr=stderr,
            text=True,
            start_new_session=True,
        )
        for i, (cwd, cmd) in enumerate(commands)
    ]


def killed_workers(root: Path, shards: Path, out: Path) -> list[subprocess.Popen]:
    """The two workers of the killed-worker runs (KILLED, params from `write_tiny_params(root)`); their
    stderr is piped."""
    commands = [(ROOT, pretrain_cmd(root / f"params-{KILLED}.yaml", shards, KILLED, out))] * 2
    return cluster(commands, scratch_env(out), subprocess.DEVNULL, subprocess.PIPE)


def wait_for_steps(out: Path, lines: int, procs: list[subprocess.Popen], timeout: float = 300) -> None:
    """Until the step log has `lines` lines (every worker is past them: each step is synchronous)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        path = out / "steps.tsv"
        if path.exists() and path.read_text().count("\n") >= lines:
            return
        assert all(p.poll() is None for p in procs), "the run ended before it could be killed"
        time.sleep(0.02)
    raise AssertionError(f"{out / 'steps.tsv'}: never reached {lines} steps in {timeout:.0f} s")


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL the process group of `proc` (if it still runs) and reap it."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
