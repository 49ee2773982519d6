"""A multi-worker run on one machine: N worker processes with TF_CONFIG on free loopback ports.

Useful on a box with several GPUs (one process per GPU group) and for tests; across machines every
worker is started by hand with its own TF_CONFIG (see docs/scaling.md, 'Launching').
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence

# How long the other workers get, once one has failed, to notice it and stop on their own (they report
# which worker stopped and how to resume) before they are killed.
GRACE_S = 90.0


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """`n` distinct TCP ports free on `host` now (held open together, so none is handed out twice)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def tf_config(addresses: Sequence[str], index: int) -> str:
    """TF_CONFIG of worker `index` of a cluster of `addresses` (host:port; worker 0 is the chief)."""
    return json.dumps({"cluster": {"worker": list(addresses)}, "task": {"type": "worker", "index": index}})


def launch_local(argv: Sequence[str], workers: int, env: Mapping[str, str] | None = None) -> int:
    """Run `argv` as `workers` processes of one cluster on loopback; -> the run's exit status.

    0 when every worker succeeded; otherwise the status of the worker that reported the failure (2 for
    a user-facing error such as a lost peer), else that of the first to fail. Every process started
    here is gone when this returns.
    """
    addresses = [f"127.0.0.1:{p}" for p in free_ports(workers)]
    base = dict(os.environ if env is None else env)
    procs: list[subprocess.Popen] = []
    # Terminated (say, by `dvc queue kill`), this launcher takes its workers with it: they run in their
    # own process groups, which a signal to this one would not reach.
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        for i in range(workers):
            child_env = base | {"TF_CONFIG": tf_config(addresses, i)}
            child_env.pop("SEMISUP_LOCAL_WORKERS", None)
            procs.append(subprocess.Popen(list(argv), env=child_env, start_new_session=True))
        return _wait(procs)
    finally:
        for p in procs:
            _kill(p)
        signal.signal(signal.SIGTERM, previous)


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _wait(procs: list[subprocess.Popen]) -> int:
    """Wait for every process; once one fails, give the others GRACE_S to stop before killing them."""
    failed_at = None
    while None in (codes := [p.poll() for p in procs]):
        if failed_at is None and any(c not in (None, 0) for c in codes):
            failed_at = time.monotonic()
        if failed_at is not None and time.monotonic() - failed_at > GRACE_S:
            break
        time.sleep(0.2)
    if all(c == 0 for c in codes):
        return 0
    if 2 in codes:
        return 2
    return next(c for c in codes if c not in (None, 0)) or 1


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL the process group of `proc` if it is still running, and reap it."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
