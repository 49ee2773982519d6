"""A study in slices (drivers/slices.py, `make study SLICE=K/N`): the assignment of runs to slices and of GPUs
to queue workers, the refusals, and end to end with real git and DVC: a bare git repository, a local DVC
remote, two clones running slices 1/2 and 2/2 at once through the launchers' own command lines, a third
clone that assembles without training, against one clone that ran the whole study."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from drivers import slices
from drivers.study import run_costs
from semisup.errors import UserError
from tests.support import ROOT, copy_repo, run, tiny_sets, tool_env

# The tests' study: 1 method x 1 budget x 2 seeds at the tests' tiny profile, one queue worker per slice (2
# methods took 20 minutes of a shared 2-core machine; one, the cheapest, halves the training).
METHODS = ("crossentropy",)
STUDY_SETS = [
    *tiny_sets(),
    f"-Smethod_names=[{','.join(METHODS)}]",
    "-Sstudy.labeled_per_class=[5]",
    "-Sstudy.seeds=[0,1]",
]
RUNS = {f"{m}-5-{s}" for m in METHODS for s in (0, 1)}


def test_slice_text_is_k_of_n_from_one():
    assert slices.parse_slice("2/5") == (2, 5)
    assert slices.parse_slice(" 1 / 1 ") == (1, 1)
    for bad in ("0/2", "3/2", "2", "a/b", "1/0", "-1/2"):
        with pytest.raises(UserError, match="--slice"):
            slices.parse_slice(bad)


def test_longest_processing_time_by_hand():
    # By cost, ties by name, each to the lightest bin (ties: the lowest index). 2 bins: e -> 0 (7), f -> 1 (7),
    # d -> 0 (12), c -> 1 (11), a -> 1 (13), b -> 0 (14). 3 bins: e, f, d -> 0, 1, 2 (7, 7, 5); c -> 2 (9);
    # a -> 0 (9); b -> 1 (9).
    costs = {"a": 2, "b": 2, "c": 4, "d": 5, "e": 7, "f": 7}
    assert slices.balance(costs, 2) == [["e", "d", "b"], ["f", "c", "a"]]
    assert slices.balance(costs, 3) == [["e", "a"], ["f", "b"], ["d", "c"]]
    # Order of the mapping does not matter: the same slices on every machine.
    assert slices.balance(dict(reversed(list(costs.items()))), 3) == slices.balance(costs, 3)


def test_slices_of_the_study_are_disjoint_cover_it_and_balance_cost():
    costs = run_costs({})  # the reference study: 4 methods x 3 budgets x 3 seeds
    assert len(costs) == 36
    for n in (1, 2, 3, 4, 7, 36):
        parts = [slices.slice_runs(costs, k, n) for k in range(1, n + 1)]
        flat = [r for p in parts for r in p]
        assert sorted(flat) == sorted(costs) and len(flat) == len(set(flat))
        loads = [sum(costs[r] for r in p) for p in parts]
        # LPT's bound: no slice exceeds the lightest by more than the costliest run.
        assert max(loads) - min(loads) <= max(costs.values())
    # By cost, not count: 4 slices of 36 runs are not 9 runs each (the methods' costs differ 10-fold).
    sizes = sorted(len(slices.slice_runs(costs, k, 4)) for k in range(1, 5))
    assert sizes != [9, 9, 9, 9] and sum(sizes) == 36
    with pytest.raises(UserError, match="37 slices: use N <= 36"):
        slices.slice_runs(costs, 1, 37)


def test_targets_are_each_runs_stages():
    assert slices.targets(["paws-5-0"]) == [
        "pretrain@paws-5-0",
        "embed@paws-5-0",
        "knn@paws-5-0",
        "linear@paws-5-0",
    ]


def test_each_queue_worker_gets_its_own_gpu():
    assert slices.gpu_ids({"CUDA_VISIBLE_DEVICES": "2,5"}) == ["2", "5"]
    assert slices.gpu_ids({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert slices.gpu_ids({"CUDA_VISIBLE_DEVICES": "-1"}) == []
    assert slices.worker_envs(2, ["2", "5"]) == [{"CUDA_VISIBLE_DEVICES": "2"}, {"CUDA_VISIBLE_DEVICES": "5"}]
    assert slices.worker_envs(3, ["0", "1"])[2] == {"CUDA_VISIBLE_DEVICES": "0"}  # --jobs wins: round robin
    assert slices.worker_envs(1, ["0", "1", "2"]) == [{"CUDA_VISIBLE_DEVICES": "0"}]
    assert slices.worker_envs(2, []) == [{}, {}]


def test_the_study_starts_one_worker_per_gpu_with_its_env(monkeypatch):
    from drivers import study

    calls = []
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,4")
    real = subprocess.run

    def fake(cmd, **kwargs):  # the workers' `dvc queue start`, recorded; git (identity) as it is
        return calls.append((cmd, kwargs["env"])) if cmd[0] == "dvc" else real(cmd, **kwargs)

    monkeypatch.setattr(subprocess, "run", fake)
    study.start_workers(2)
    assert [c[0] for c in calls] == [
        ["dvc", "queue", "start", "-j", "1"],
        ["dvc", "queue", "start", "-j", "2"],
    ]
    assert [c[1]["CUDA_VISIBLE_DEVICES"] for c in calls] == ["3", "4"]


def slice_run(repo: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python -m drivers.study ARGS` in `repo` (not checked)."""
    return subprocess.run(
        [sys.executable, "-m", "drivers.study", *args],
        cwd=repo,
        env=env or tool_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message",
    [
        (["--slice", "1/2"], "no default DVC remote"),
        (["--slice", "3/2"], "K must be 1 to N"),
        (["--slice", "0/2"], "K must be 1 to N"),
        (["--slice", "1/3"], "the study has 2 runs, fewer than 3 slices"),
    ],
)
def test_a_bad_slice_is_refused_in_one_line_before_training(digits_repo, tmp_path, args, message):
    repo = copy_repo(digits_repo, tmp_path / "repo")
    proc = slice_run(repo, *args, *STUDY_SETS)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --slice") and message in lines[0], proc.stderr
    assert not (repo / ".dvc" / "tmp" / "exps").exists()  # nothing queued


def launcher_script(name: str) -> str:
    """The slice command a launcher file runs: the SLURM script's marked lines, the Job's container script."""
    text = (ROOT / "examples" / name).read_text()
    if name.endswith(".sh"):
        return re.search(r"# --- slice command.*?---\n(.*?)# --- end ---", text, re.S)[1]
    job = yaml.safe_load(text)
    return job["spec"]["template"]["spec"]["containers"][0]["command"][-1]


def table(stdout: str) -> str:
    """The study's table from the driver's output (the lines after its title, up to the first blank one)."""
    return re.search(r"\(experiment study-\w+\):\n(.*?)\n\n", stdout, re.S)[1]


@pytest.fixture
def shared(digits_repo, tmp_path) -> tuple[Path, Path]:
    """(a bare git repository of the project with a default DVC remote, that remote) with its data pushed."""
    seed = copy_repo(digits_repo, tmp_path / "seed")
    remote = tmp_path / "remote"
    run(seed, "dvc", "remote", "add", "-d", "shared", str(remote))
    run(seed, "git", "commit", "-qam", "a shared remote")
    run(seed, "dvc", "push", "-q")
    run(tmp_path, "git", "init", "-q", "--bare", "origin.git")
    run(seed, "git", "push", "-q", str(tmp_path / "origin.git"), "HEAD:refs/heads/main")
    return tmp_path / "origin.git", remote


def clone(origin: Path, dest: Path) -> Path:
    run(origin.parent, "git", "clone", "-q", "-b", "main", str(origin), str(dest))
    return dest


@pytest.mark.slow
def test_two_slices_at_once_then_an_assembler_that_trains_nothing(shared, tmp_path):
    origin, remote = shared
    # One machine, the whole study: the remote holds no run yet, so it trains both.
    one = slice_run(clone(origin, tmp_path / "one"), "--jobs", "1", *STUDY_SETS)
    assert one.returncode == 0, one.stderr[-3000:]
    assert one.stdout.strip().splitlines()[-1] == (
        "study: 0 runs restored from the run cache (0 brought from remote shared), 2 trained here"
    )
    # Two machines at once, each its slice, through the launchers' command lines.
    args = " ".join(["--jobs", "1", *STUDY_SETS])
    env = tool_env() | {"STUDY_ARGS": args}
    slurm = env | {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "2"}
    k8s = env | {"JOB_COMPLETION_INDEX": "1", "SLICES": "2"}
    procs = [
        subprocess.Popen(
            ["bash", "-c", launcher_script(name)],
            cwd=clone(origin, tmp_path / f"slice{i}"),
            env=e,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, (name, e) in enumerate((("slurm_study.sh", slurm), ("k8s_study.yaml", k8s)), start=1)
    ]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    for k, (out, _) in enumerate(outs, start=1):
        assert (
            f"study slice {k}/2: 0 runs restored from the run cache (0 brought from remote shared), 1 trained here"
            in out
        )
    trained = [set(re.search(r"study slice \d/2: 1 runs: (.*)", err)[1].split()) for _, err in outs]
    assert not trained[0] & trained[1] and trained[0] | trained[1] == RUNS
    assert (remote / "runs").is_dir()
    # A third machine assembles: every run restored from the remote, none trained, the same table.
    third = slice_run(clone(origin, tmp_path / "third"), "--jobs", "1", *STUDY_SETS)
    assert third.returncode == 0, third.stderr[-3000:]
    assert third.stdout.strip().splitlines()[-1] == (
        "study: 2 runs restored from the run cache (2 brought from remote shared), 0 trained here"
    )
    assert table(third.stdout) == table(one.stdout)
    # The same slice again on a fourth machine: restored from the remote, trains nothing, pushes the same.
    again = subprocess.run(
        ["bash", "-c", launcher_script("k8s_study.yaml")],
        cwd=clone(origin, tmp_path / "again"),
        env=k8s,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert (
        "study slice 2/2: 1 runs restored from the run cache (1 brought from remote shared), 0 trained here"
        in (again.stdout)
    )
    assert os.listdir(remote)  # (the remote is a folder of content-addressed files)
