"""make study's progress line, from the experiments' dvc.lock files as DVC rewrites them."""

from __future__ import annotations

import os
import subprocess

import pytest
import yaml

from drivers import progress as study_progress
from drivers.dvcexp import Experiment
from drivers.progress import StudyProgress, lock_stages, stage_kind
from tests.support import tool_env

MAIN, PART = "study-k", "study-k-part"
STAGES = [
    "download",
    "shard",
    "splits@5-0",
    "pretrain@a-5-0",
    "pretrain@b-5-0",
    "knn@a-5-0",
    "knn@b-5-0",
    "report",
]


def write_lock(root, entries: dict) -> None:
    """A dvc.lock whose stages hold `entries` (stage -> a stand-in of its lock entry), with a new mtime."""
    path = root / "dvc.lock"
    path.write_text(yaml.safe_dump({"schema": "2.0", "stages": {s: {"cmd": c} for s, c in entries.items()}}))
    stamp = path.stat().st_mtime + 1 + len(entries)
    os.utime(path, (stamp, stamp))


@pytest.fixture
def study(tmp_path, monkeypatch):
    """A repository whose stash commit holds an old dvc.lock, and two experiment copies DVC has started."""
    repo = tmp_path / "repo"
    repo.mkdir()
    old = {"download": "old", "shard": "old", "pretrain@a-all-0": "old"}
    write_lock(repo, old)
    env = tool_env()
    for cmd in (["git", "init", "-q"], ["git", "add", "dvc.lock"], ["git", "commit", "-qm", "stash"]):
        subprocess.run(cmd, cwd=repo, env=env, check=True)
    stash = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True
    ).stdout.strip()
    roots, running = {}, {}
    for i, name in enumerate((PART, MAIN)):
        rev = f"{stash}" if i == 0 else "f" * 40
        roots[name] = tmp_path / name
        roots[name].mkdir()
        write_lock(roots[name], old)
        running[name] = Experiment(name, rev, "running", str(roots[name]))  # as dvc exp show --json has them
    subprocess.run(["git", "tag", "f" * 7], cwd=repo, env=env)  # unused: the main's stash rev is unknown
    monkeypatch.setattr(
        study_progress,
        "stage_names",
        lambda root: [s for s in STAGES if "b-" not in s or root == roots[MAIN]],
    )
    return repo, roots, old, running


def test_counts_finished_stages_once_and_times_what_is_left(study):
    repo, roots, old, running = study
    progress = StudyProgress(repo, (PART, MAIN), main=MAIN)
    progress.poll(running, now=0.0)
    assert (
        progress.line() == f"0 of 8 stages done (0 of 6 in {PART}, 0 of 8 in {MAIN}), time left after a stage"
    )
    # The part experiment finishes download and shard in 20 s, then splits and pretrain@a in 40 s.
    write_lock(roots[PART], old | {"download": "new", "shard": "new"})
    progress.poll(running, now=20.0)
    write_lock(
        roots[PART], old | {"download": "new", "shard": "new", "splits@5-0": "n", "pretrain@a-5-0": "n"}
    )
    progress.poll(running, now=60.0)
    part = progress.experiments[PART]
    assert part.durations == {"download": 10.0, "shard": 10.0, "splits@5-0": 20.0, "pretrain@a-5-0": 20.0}
    # Left: part's knn@a and report (kinds not timed yet: the mean of what ran, 15 s each) = 30 s; the
    # main's 8 stages at their kinds' means (10 + 10 + 20 + 20 + 20 + 15 + 15 + 15) = 125 s, the longer.
    assert progress.time_left() == pytest.approx(125.0)
    assert progress.line() == f"4 of 8 stages done (4 of 6 in {PART}, 0 of 8 in {MAIN}), about 2m05s left"
    # The main finishes pretrain@a too: a stage done by both counts once.
    write_lock(roots[MAIN], old | {"pretrain@a-5-0": "n"})
    progress.poll(running, now=61.0)
    assert progress.line().startswith(f"4 of 8 stages done (4 of 6 in {PART}, 1 of 8 in {MAIN})")


def test_restored_stages_cost_what_restoring_cost(study):
    repo, roots, old, running = study
    progress = StudyProgress(repo, (PART, MAIN), main=MAIN)
    progress.poll(running, now=0.0)
    write_lock(roots[PART], old | {s: "new" for s in STAGES[:4]})
    write_lock(roots[MAIN], old | {"shard": "new"})
    progress.poll(running, now=100.0)  # the part: 4 stages in 100 s (25 s each); the main: shard in 100 s
    write_lock(roots[MAIN], old | {"shard": "new", "splits@5-0": "new", "pretrain@a-5-0": "new"})
    progress.poll(running, now=102.0)  # the main restores two of the part's stages in 2 s: 1 s each
    main = progress.experiments[MAIN]
    assert main.reused == {"splits@5-0", "pretrain@a-5-0"} and main.durations["shard"] == 100.0
    # Stages that ran: 25, 25, 25, 25 (part) and 100 (main's shard): a mean of 40 s; pretrain's is 25 s.
    # The main has left download (the part's: restored, 1 s), pretrain@b (25 s), knn@a, knn@b and report
    # (no kind timed: 40 s each): 146 s. The part has knn@a and report left: 80 s. The longer: 146 s.
    assert progress.time_left() == pytest.approx(146.0)


def test_lock_stages_and_kinds():
    assert lock_stages(None) == {} and lock_stages("stages: [") == {}
    assert lock_stages("schema: '2.0'\nstages:\n  report:\n    cmd: x\n") == {"report": {"cmd": "x"}}
    assert stage_kind("pretrain@paws-5-0") == "pretrain" and stage_kind("report") == "report"
