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
    # report reads method_names: each experiment has its own (a study-wide stage).
    (repo / "dvc.yaml").write_text("stages:\n  report:\n    cmd: x\n    params: [method_names]\n")
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
    # (Each copy's start is dated by its info file's age: a few milliseconds here.)
    expected = {"download": 10.0, "shard": 10.0, "splits@5-0": 20.0, "pretrain@a-5-0": 20.0}
    assert part.durations == pytest.approx(expected, abs=0.5)
    # Left: part's knn@a and report (kinds not timed yet: the mean of what ran, 15 s each) = 30 s. The
    # main restores the part's stages (no restore timed yet: nothing) and runs pretrain@b (20 s), knn@b
    # and its own report (15 s each) = 50 s, the longer.
    assert progress.time_left() == pytest.approx(50.0, abs=0.5)
    assert progress.line() == f"4 of 8 stages done (4 of 6 in {PART}, 0 of 8 in {MAIN}), about 50s left"
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
    assert main.reused == {"splits@5-0", "pretrain@a-5-0"} and main.durations["shard"] == pytest.approx(
        100, abs=0.5
    )
    # Stages that ran: 25, 25, 25, 25 (part) and 100 (main's shard): a mean of 40 s; pretrain's is 25 s.
    # The main has left download and knn@a (the part's: restored, 1 s each), pretrain@b (25 s), knn@b and
    # its report (no kind timed: 40 s each): 107 s. The part has knn@a and report left: 80 s.
    assert progress.time_left() == pytest.approx(107.0, abs=0.5)
    # The part's report is not the main's: it does not count as done for the study.
    write_lock(roots[PART], old | {s: "new" for s in STAGES if "b-" not in s})
    progress.poll(running, now=150.0)
    assert progress.line().startswith(f"5 of 8 stages done (6 of 6 in {PART}, 3 of 8 in {MAIN})")


def test_lock_stages_and_kinds():
    assert lock_stages(None) == {} and lock_stages("stages: [") == {}
    assert lock_stages("schema: '2.0'\nstages:\n  report:\n    cmd: x\n") == {"report": {"cmd": "x"}}
    assert stage_kind("pretrain@paws-5-0") == "pretrain" and stage_kind("report") == "report"


def test_a_stash_commit_without_dvc_lock_starts_from_no_stage(tmp_path, monkeypatch):
    # A repository that never committed a dvc.lock: every stage the copy has locked is this study's.
    repo, root = tmp_path / "repo", tmp_path / "copy"
    repo.mkdir()
    root.mkdir()
    (repo / "README").write_text("x")
    env = tool_env()
    for cmd in (["git", "init", "-q"], ["git", "add", "README"], ["git", "commit", "-qm", "stash"]):
        subprocess.run(cmd, cwd=repo, env=env, check=True)
    stash = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True
    ).stdout.strip()
    write_lock(root, {"download": "new", "shard": "new"})
    monkeypatch.setattr(study_progress, "stage_names", lambda root: STAGES)
    progress = StudyProgress(repo, (MAIN,), main=MAIN)
    progress.poll({MAIN: Experiment(MAIN, stash, "running", str(root))}, now=10.0)
    assert set(progress.experiments[MAIN].finished) == {"download", "shard"}
    assert progress.line().startswith(f"2 of 8 stages done (2 of 8 in {MAIN})")


def test_a_copy_removed_between_polls_is_no_error(tmp_path):
    # DVC removes a finished experiment's copy at any moment: seen running by `dvc exp show`, gone when read
    # (the study's wait now polls as a task ends, exactly when that happens).
    gone = tmp_path / "tmpabc"
    exp = study_progress.Experiment("study-x", gone, {}, started=0.0)
    exp.update(10.0, {})
    assert exp.finished == {} and exp.lock_mtime == -1.0
    assert study_progress.stage_names(gone) == []
