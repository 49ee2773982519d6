"""A study in slices (drivers/slices.py, `make study SLICE=K/N`): the assignment of runs to slices and of GPUs
to queue workers, the refusals, and end to end with real git, DVC and processes: a bare git repository, a
local DVC remote, three clones running slices 1/2, 2/2 and 2/2 again at once through the launchers' own
command lines, a clone that runs the whole study alone and is preempted and rerun meanwhile, and a fifth that
assembles without training."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from drivers import slices
from drivers.study import run_costs
from semisup.core.errors import UserError
from tests.support import ROOT, copy_repo, run, tiny_sets, tool_env

# The tests' study: 1 method x 1 budget x 2 seeds at the tests' tiny profile, one queue worker per slice (2
# methods took 20 minutes of a shared 2-core machine; one, the cheapest, halves the training). Three epochs:
# a preempted run has saved one before it stops, and its rerun resumes after it.
METHODS = ("crossentropy",)
STUDY_SETS = [
    *tiny_sets(),
    "-Strain.epochs=3",
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


def test_queue_workers_keep_checkpoints_in_the_clone(tmp_path, monkeypatch):
    # DVC runs a queued experiment in a copy it removes: the stages' checkpoints go to the clone's own
    # .checkpoints/ (the stage's --checkpoints reads SEMISUP_CHECKPOINTS), where a rerun finds them.
    from click.testing import CliRunner

    from drivers import dvcexp
    from stages import pretrain

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SEMISUP_CHECKPOINTS", raising=False)
    dvcexp.keep_checkpoints_here()
    assert os.environ["SEMISUP_CHECKPOINTS"] == str(tmp_path.resolve() / ".checkpoints")
    monkeypatch.setenv("SEMISUP_CHECKPOINTS", "/elsewhere")  # the user's own stays
    dvcexp.keep_checkpoints_here()
    assert os.environ["SEMISUP_CHECKPOINTS"] == "/elsewhere"
    shown = CliRunner().invoke(pretrain.main, ["--help"], terminal_width=200).output
    assert "env var: SEMISUP_CHECKPOINTS" in shown


def test_a_bad_slice_is_refused_in_one_line_before_training(digits_repo, tmp_path, monkeypatch, capsys):
    # In this process (the driver's own command, as `python -m drivers.study` runs it): a refusal happens
    # before anything starts, so a process of its own per case proved nothing more and cost a start each.
    from drivers import study

    monkeypatch.chdir(copy_repo(digits_repo, tmp_path / "repo"))  # a project without a default remote
    monkeypatch.setenv("PATH", tool_env()["PATH"])
    for args, message in (
        (["--slice", "1/2"], "no default DVC remote"),
        (["--slice", "3/2"], "K must be 1 to N"),
        (["--slice", "0/2"], "K must be 1 to N"),
        (["--slice", "1/3"], "the study has 2 runs, fewer than 3 slices"),
    ):
        with pytest.raises(SystemExit) as exit_:
            study.main.main([*args, *STUDY_SETS], standalone_mode=False)
        lines = capsys.readouterr().err.strip().splitlines()
        assert exit_.value.code == 2 and len(lines) == 1, (args, lines)
        assert lines[0].startswith("error: --slice") and message in lines[0], lines
    assert not Path(".dvc/tmp/exps").exists()  # nothing queued


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


# The job environments of the launchers (tests/test_slices.py runs each file's slice command as written).
ARGS = {"STUDY_ARGS": " ".join(["--jobs", "1", *STUDY_SETS])}


def slurm(k: int, n: int) -> tuple[str, dict[str, str]]:
    """(launcher file, environment) of task K of an `sbatch --array=1-N` job."""
    return "slurm_study.sh", {"SLURM_ARRAY_TASK_ID": str(k), "SLURM_ARRAY_TASK_MIN": "1"} | {
        "SLURM_ARRAY_TASK_COUNT": str(n)
    }


def k8s(k: int, n: int) -> tuple[str, dict[str, str]]:
    """(launcher file, environment) of pod K (from 1) of an Indexed Job of N completions."""
    return "k8s_study.yaml", {"JOB_COMPLETION_INDEX": str(k - 1), "SLICES": str(n)}


class Job:
    """One machine's slice: a launcher's slice command in a clone, in a session of its own (the job, as a
    SLURM job step's or a pod's processes), its output in files."""

    def __init__(self, launcher: tuple[str, dict[str, str]], repo: Path, name: str) -> None:
        self.repo, self.out, self.err = repo, repo.parent / f"{name}.out", repo.parent / f"{name}.err"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.proc = subprocess.Popen(
                ["bash", "-c", launcher_script(launcher[0])],
                cwd=repo,
                env=tool_env() | ARGS | launcher[1],
                stdout=out,
                stderr=err,
                start_new_session=True,
            )

    def wait(self) -> tuple[str, str]:
        """Wait for it (exit 0 expected); -> (stdout, stderr)."""
        self.proc.wait(timeout=900)
        out, err = self.out.read_text(), self.err.read_text()
        assert self.proc.returncode == 0, err[-3000:]
        return out, err

    def processes(self) -> list[int]:
        """The job's live processes: its session's (DVC's queue worker and its stages included; a worker
        is forked in a process group of its own, in the same session)."""
        pids = []
        for entry in os.listdir("/proc"):
            try:
                if entry.isdigit() and os.getsid(int(entry)) == self.proc.pid:
                    if Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                        pids.append(int(entry))
            except OSError:  # gone meanwhile
                continue
        return pids

    def preempt(self, grace_s: float = 10.0) -> None:
        """What a scheduler does to a preempted job: SIGTERM to every process of the job, SIGKILL to what is
        left after a grace period (SLURM's KillWait, a pod's terminationGracePeriodSeconds: 30 s each). Both,
        as there: SIGTERM is what the code must handle (pretrain exits 143, DVC's queue worker shuts down
        warm, the driver dies), SIGKILL ends whatever outlives the grace; a lost node is SIGKILL alone."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.processes():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + grace_s
            while self.processes() and time.monotonic() < deadline:
                time.sleep(0.2)
        self.proc.wait(timeout=60)
        assert not self.processes()


def run_cache(folder: Path) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    """The study's run-cache entries under `folder` (a clone's `.dvc/cache/runs`, a remote's `runs`): each
    stage result of a run as (its command, each output's path and md5)."""
    found = set()
    for path in slices.entries(folder):
        entry = yaml.safe_load(path.read_text())
        if any(f"--run {r}" in entry["cmd"] for r in RUNS):
            found.add((entry["cmd"], tuple(sorted((o["path"], o["md5"]) for o in entry["outs"]))))
    return found


def counts(text: str, k: int, n: int) -> tuple[int, int, str, int]:
    """A slice's last line -> (runs restored, brought from the remote, the remote's name, trained here)."""
    match = re.search(
        rf"study slice {k}/{n}: (\d+) runs restored from the run cache \((\d+) brought from remote (\w+)\), "
        r"(\d+) trained here, in \d+ s; pushed to remote \3",
        text,
    )
    assert match, text[-2000:]
    return int(match[1]), int(match[2]), match[3], int(match[4])


@pytest.fixture
def machines() -> Iterator[list[Job]]:
    """The test's jobs, each preempted at the end if it still runs (a failed assertion leaves none behind)."""
    started: list[Job] = []
    yield started
    for job in started:
        if job.processes():
            job.preempt(grace_s=2.0)


@pytest.mark.slow
def test_slices_at_once_a_killed_slice_rerun_and_an_assembler_that_trains_nothing(shared, machines, tmp_path):
    """The study (2 runs) over five clones of a bare repository, each slice through a launcher's command line.

    1. At once: slice 1/2 (SLURM) and slice 2/2 (Kubernetes) on the shared remote, and slice 2/2 again on a
       third machine (a scheduler's retry, the same index twice); and a machine of its own (its own default
       remote: it sees none of the others' runs) running the whole study as slice 1/1, preempted once its
       first run has trained, then rerun.
    2. The preempted slice pushed nothing; its rerun kept the run that had trained (restored from its own
       run cache, not trained again) and trained only the other.
    3. The slices 1/2 and 2/2 trained disjoint runs that cover the study; the same slice twice at once
       corrupts nothing: both trained (or the second restored) and the remote holds, for every stage of
       every run, exactly the outputs the machine of its own computed alone: the same results to the bit.
    4. A fifth machine assembles: every run restored from the remote, none trained. Its table is made of
       those outputs, so it is the table of the machine that ran the study alone, to the last digit.
    Slices and the assembly use one queue worker each (`--jobs 1`), as on a machine with one GPU.
    """
    origin, remote = shared
    own = clone(origin, tmp_path / "own")
    run(own, "dvc", "remote", "add", "--local", "-d", "own", str(tmp_path / "own-remote"))
    jobs = {
        "own": Job(slurm(1, 1), own, "own"),
        "1/2": Job(slurm(1, 2), clone(origin, tmp_path / "a"), "a"),
        "2/2": Job(k8s(2, 2), clone(origin, tmp_path / "b"), "b"),
        "2/2 again": Job(k8s(2, 2), clone(origin, tmp_path / "c"), "c"),
    }
    machines.extend(jobs.values())
    # Preempted as soon as one of its runs has trained (its pretrain stage's result in the run cache) and the
    # other has saved an epoch: in the clone's .checkpoints/, outside the copy DVC runs the experiment in.
    own_cache, saved = own / ".dvc" / "cache" / "runs", own / ".checkpoints"
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and not (
        slices.pretrained_runs(slices.entries(own_cache)) and list(saved.glob("*/state.json"))
    ):
        assert jobs["own"].proc.poll() is None, jobs["own"].err.read_text()[-3000:]
        time.sleep(0.2)
    jobs["own"].preempt()
    kept, at_kill = slices.pretrained_runs(slices.entries(own_cache)), slices.entries(own_cache)
    assert 0 < len(kept) < len(RUNS) and not (tmp_path / "own-remote").exists()  # it pushed nothing
    (state,) = saved.glob("*/state.json")  # the interrupted run's (a finished run removes its own)
    epoch = yaml.safe_load(state.read_text())["epoch"]
    machines.append(Job(slurm(1, 1), own, "own-rerun"))
    rerun = machines[-1].wait()[0]
    assert counts(rerun, 1, 1) == (len(kept), 0, "own", len(RUNS) - len(kept))
    assert slices.pretrained_runs(slices.entries(own_cache) - at_kill) == RUNS - kept
    # The rerun resumed the interrupted run after its saved epoch (the stage's line, in DVC's log of the
    # queued experiment), then removed its checkpoints; its outputs equal the other machines' (below).
    logs = "".join(p.read_text() for p in (own / ".dvc" / "tmp" / "exps" / "run").glob("*/*.out"))
    assert f"resuming {METHODS[0]} after epoch {epoch} from {state.parent}" in logs, logs[-3000:]
    assert not state.parent.exists()
    outs = {name: job.wait() for name, job in jobs.items() if name != "own"}
    assert counts(outs["1/2"][0], 1, 2) == (0, 0, "shared", 1)
    assert counts(outs["2/2"][0], 2, 2) in ((0, 0, "shared", 1), (1, 1, "shared", 0))
    assert counts(outs["2/2 again"][0], 2, 2) in ((0, 0, "shared", 1), (1, 1, "shared", 0))
    given = {
        name: set(re.search(r"study slice \d/2: 1 runs: (.*)", err)[1].split())
        for name, (_, err) in outs.items()
    }
    assert not given["1/2"] & given["2/2"] and given["1/2"] | given["2/2"] == RUNS
    assert given["2/2 again"] == given["2/2"]
    assert run_cache(remote / "runs") == run_cache(own_cache) and len(run_cache(own_cache)) == 4 * len(RUNS)
    # A fifth machine assembles: every run restored from the remote, none trained.
    assembler = subprocess.run(
        [sys.executable, "-m", "drivers.study", "--jobs", "1", *STUDY_SETS],
        cwd=clone(origin, tmp_path / "assembler"),
        env=tool_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert assembler.returncode == 0, assembler.stderr[-3000:]
    assert assembler.stdout.strip().splitlines()[-1] == (
        "study: 2 runs restored from the run cache (2 brought from remote shared), 0 trained here"
    )
    assert {row.split()[0] for row in table(assembler.stdout).splitlines()[1:]} >= set(METHODS)
