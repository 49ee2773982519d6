"""The one small wrapper around DVC that `make demo` and `make study` drive their experiments through.

Experiments are read from DVC's JSON (`dvc exp show --json`): each one's name, commit, and where the queue
has it (queued, running, success, failed; a running one's temporary copy). Nothing here parses a table
of DVC's or builds a ref path; files of a finished experiment are read from its commit.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import click

EXIT_USER, EXIT_FAILED, EXIT_INTERRUPTED = 2, 1, 130
ACTIVE = ("queued", "running")


def fail(message: str, status: int = EXIT_USER) -> NoReturn:
    """One line on stderr and exit: 2 for the input or the environment, 1 when an experiment failed."""
    click.echo(f"error: {message}", err=True)
    sys.exit(status)


def git(*args: str, check: bool = True) -> str:
    """Output of a git command in the current repository."""
    proc = subprocess.run(["git", *args], capture_output=True, check=False)
    if check and proc.returncode != 0:
        fail(f"git {' '.join(args)}: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout.decode(errors="replace")


def git_identity() -> dict[str, str]:
    """DVC commits each experiment: lend it an identity where git has none, so a fresh machine works."""
    name = git("config", "user.name", check=False).strip()
    email = git("config", "user.email", check=False).strip()
    if name and email:
        return {}
    return {
        f"GIT_{role}_{key}": value
        for role in ("AUTHOR", "COMMITTER")
        for key, value in (("NAME", "semisup demo"), ("EMAIL", "demo@localhost"))
        if f"GIT_{role}_{key}" not in os.environ
    }


def check_repository(command: str) -> None:
    """dvc on PATH, inside a git clone with a commit: experiments need both."""
    if shutil.which("dvc") is None:
        fail(f"dvc: not on PATH: run `{command}`, or activate .venv first")
    if subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], capture_output=True).returncode != 0:
        fail(".git: no commit here: this runs DVC experiments, run it in a git clone of the project")


def keep_checkpoints_here() -> None:
    """The experiments' pretrain stages keep their per-epoch checkpoints in this clone's .checkpoints/
    (SEMISUP_CHECKPOINTS, which the queue workers inherit): DVC runs an experiment in a copy it removes
    when the run ends or dies, and a rerun (a preempted slice's, an interrupted study's) resumes from them.
    A SEMISUP_CHECKPOINTS of the user's own is left alone."""
    os.environ.setdefault("SEMISUP_CHECKPOINTS", str(Path(".checkpoints").resolve()))


@contextlib.contextmanager
def compile_cache() -> Iterator[None]:
    """XLA's persistent compile cache for the stages of this command's experiments, in a folder of its own
    that goes when the command ends: the first pretrain process compiles its augmentation (XLA) and writes
    it; every later one loads it instead (about 7 s of CPU each on digits). The same programs on the same
    machine, so the same numbers, to the byte. A TF_XLA_FLAGS of the user's own is left alone."""
    if "TF_XLA_FLAGS" in os.environ:
        yield
        return
    folder = tempfile.mkdtemp(prefix="semisup-xla-")
    os.environ["TF_XLA_FLAGS"] = f"--tf_xla_persistent_cache_directory={folder}"
    try:
        yield
    finally:
        os.environ.pop("TF_XLA_FLAGS", None)
        shutil.rmtree(folder, ignore_errors=True)


# What DVC writes in a workspace (`dvc repro`): results, not inputs of an experiment.
NOT_INPUTS = (":(exclude)dvc.lock", ":(exclude)metrics", ":(exclude,glob)**/.gitignore")


def code_key(profile: dict[str, object]) -> str:
    """What an experiment runs: the commit, every uncommitted change (untracked files too), the profile."""
    digest = hashlib.sha256(git("rev-parse", "HEAD").encode())
    diff = subprocess.run(["git", "diff", "HEAD", "--binary", "--", ".", *NOT_INPUTS], capture_output=True)
    digest.update(diff.stdout)
    untracked = git("ls-files", "-z", "--others", "--exclude-standard", "--", ".", *NOT_INPUTS)
    for rel in sorted(filter(None, untracked.split("\0"))):
        digest.update(rel.encode() + b"\0")
        path = Path(rel)
        digest.update(path.read_bytes() if path.is_file() else b"")
    digest.update(json.dumps(profile, sort_keys=True).encode())
    return digest.hexdigest()[:8]


def dvc(*args: str, capture: bool = False, check: bool = True) -> subprocess.CompletedProcess:
    """Run a dvc command (echoed unless captured); when it fails and `check`, exit 1 with its output."""
    if not capture:
        click.echo("$ dvc " + " ".join(args), err=True)
    env = {**os.environ, **git_identity()}
    proc = subprocess.run(["dvc", *args], env=env, capture_output=capture, text=True)
    if check and proc.returncode != 0:
        if capture:
            click.echo(proc.stdout + proc.stderr, err=True)
        fail(
            f"dvc {args[0]} {args[1] if len(args) > 1 else ''}: failed (exit {proc.returncode})", EXIT_FAILED
        )
    return proc


@dataclass(frozen=True)
class Experiment:
    """One experiment of the current commit, as `dvc exp show --json` reports it."""

    name: str
    rev: str  # its commit once finished (its queue entry's while queued)
    state: str  # queued, running, success or failed
    root: str | None = None  # the temporary copy it runs in, while running


def parse_experiments(shown: list[dict]) -> dict[str, Experiment]:
    """`dvc exp show --json`'s output -> the experiments of the current commit by name (a name queued
    again after a failure: the queued or running one)."""
    found: dict[str, Experiment] = {}
    for baseline in shown:
        for group in baseline.get("experiments") or []:
            head = group["revs"][0]
            executor = group.get("executor") or {}
            name = group.get("name") or head.get("name")
            if not name:
                continue
            state = executor.get("state", "success")
            local = executor.get("local") or {}
            exp = Experiment(name, head["rev"], state, local.get("root"))
            if name not in found or found[name].state not in ACTIVE:
                found[name] = exp
    return found


def experiments(tries: int = 10, wait_s: float = 2.0) -> dict[str, Experiment]:
    """The current commit's experiments by name (`dvc exp show --json`).

    While the queue sets up an experiment's temporary copy, `dvc exp show` can fail on it for a moment
    ("directory .../.dvc does not exist"): such a failure is tried again, `tries` times in all.
    """
    for attempt in range(tries):
        proc = dvc("exp", "show", "--json", "--hide-workspace", "--no-pager", capture=True, check=False)
        if proc.returncode == 0:
            return parse_experiments(json.loads(proc.stdout or "[]"))
        if attempt + 1 < tries:
            time.sleep(wait_s)
    click.echo(proc.stdout + proc.stderr, err=True)
    fail(f"dvc exp show: failed {tries} times (exit {proc.returncode})", EXIT_FAILED)


def finished(name: str) -> Experiment | None:
    """Experiment `name` of the current commit when it has finished, else None."""
    exp = experiments().get(name)
    return exp if exp is not None and exp.state == "success" else None


def read(exp: Experiment, path: str) -> bytes:
    """A file of a finished experiment, from its commit."""
    return subprocess.run(["git", "show", f"{exp.rev}:{path}"], capture_output=True, check=True).stdout


def files(exp: Experiment, folder: str) -> list[str]:
    """The files under `folder` in a finished experiment's commit."""
    return git("ls-tree", "-r", "--name-only", exp.rev, folder).split()
