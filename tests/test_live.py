"""Training you can watch: a running pretrain's curves reach dvclive's files and DVC (`dvc exp show`,
`dvc plots show`) as each epoch ends; a killed run leaves no output; a resumed run's curves hold each epoch
once."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from semisup.training.live import DVCYAML, LiveCurves, remove_stale
from tests.support import DATA, copy_repo, run, tool_env, write_params

RUN = "paws-all-0"
# Three short epochs of a tiny encoder on the session's digits data; every epoch runs the kNN monitor.
PARAMS = DATA | {
    "train.epochs": 3,
    "train.shuffle_buffer": 500,
    "encoder.filters": 8,
    "encoder.embedding_dim": 32,
    "methods.paws.unlabeled_batch": 128,
    "methods.paws.labeled_batch": 50,
}
CMD = [
    sys.executable,
    "-m",
    "stages.pretrain",
    "--run",
    RUN,
    "--split",
    "data/splits/all-0.json",
    "--metrics",
    "metrics/runs",
    "--live",
    "metrics/live",
]


def _curve(folder: Path, name: str) -> list[tuple[int, float]]:
    """(step, value) rows of a dvclive curve in `folder`, without its timestamps."""
    with (folder / "plots" / "metrics" / f"{name}.tsv").open() as f:
        return [(int(row["step"]), float(row[name])) for row in csv.DictReader(f, delimiter="\t")]


def _summary(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError):  # not written yet, or being written
        return None


def _stop_after(proc: subprocess.Popen, live: Path, epoch: int) -> dict:
    """SIGSTOP `proc` as soon as its live summary shows `epoch`; -> that summary."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        summary = _summary(live)
        if summary and summary["step"] >= epoch and (live / "dvc.yaml").exists():
            proc.send_signal(signal.SIGSTOP)
            return summary
        assert proc.poll() is None, "pretraining ended before its epoch could be seen"
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"epoch {epoch} never reached {live}")


@pytest.fixture
def repo(tmp_path, digits_repo) -> Path:
    """A git + DVC copy of digits_repo (shards and splits@all-0 reproduced) with three-epoch PAWS params."""
    repo = copy_repo(digits_repo, tmp_path / "r")
    write_params(repo / "params.yaml", PARAMS)
    run(repo, "git", "commit", "-qam", "three epochs")
    return repo


@pytest.mark.slow
def test_a_running_pretrain_shows_each_epoch_and_a_resumed_one_continues(repo):
    live, outs = repo / "metrics" / "live" / RUN, [repo / "models" / RUN, repo / "metrics" / "runs" / RUN]
    env = tool_env()
    proc = subprocess.Popen(CMD, cwd=repo, env=env, stderr=subprocess.DEVNULL)
    try:
        summary = _stop_after(proc, live, 1)
        # dvclive's files after epoch 1 of 3: the summary, one row per curve, the run's name and epochs.
        state = next((repo / ".checkpoints").glob("paws-*/state.json"))
        first = json.loads(state.read_text())["history"][0]  # what the checkpoint of epoch 1 recorded
        assert summary["step"] == 1
        assert summary["loss"] == pytest.approx(first["loss"]) and summary["knn_k20"] == first["knn_k20"]
        loss = _curve(live, "loss")
        assert loss == [(1, pytest.approx(first["loss"]))] and _curve(live, "knn_k20") == [
            (1, first["knn_k20"])
        ]
        assert yaml.safe_load((live / "params.yaml").read_text()) == {"run": RUN, "epochs": 3}
        assert yaml.safe_load((live / "dvc.yaml").read_text()) == DVCYAML
        # What DVC reads of the running workspace: the live summary as metrics, the run as params, the curves.
        shown = json.loads(run(repo, "dvc", "exp", "show", "--json").stdout)
        workspace = next(row for row in shown if row["rev"] == "workspace")["data"]
        assert workspace["metrics"][f"metrics/live/{RUN}/metrics.json"]["data"] == summary
        assert workspace["params"][f"metrics/live/{RUN}/params.yaml"]["data"] == {"run": RUN, "epochs": 3}
        plots = json.loads(run(repo, "dvc", "plots", "show", "--json").stdout)
        # (The report's plots are missing here: no report has run in this repository.)
        assert not [e for e in plots.get("errors", []) if "metrics/live" in e["source"]], plots["errors"]
        assert f"metrics/live/{RUN}/plots/metrics/loss.tsv" in plots["data"]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # Killed: no output of the stage exists, so DVC has nothing to commit; the live folder shows where it
    # died.
    assert not any(out.exists() for out in outs)
    assert _curve(live, "loss") == loss
    untracked = run(repo, "git", "status", "--porcelain", "--untracked-files=all").stdout
    assert f"metrics/live/{RUN}/dvc.yaml" in untracked  # not ignored: DVC reads no dvc.yaml git ignores

    # The rerun resumes after epoch 1: its live curves are written again from the checkpoint, epoch 1 once.
    proc = subprocess.Popen(CMD, cwd=repo, env=env, stderr=subprocess.PIPE, text=True)
    try:
        _stop_after(proc, live, 2)
        resumed = _curve(live, "loss")
        assert [step for step, _ in resumed] == [1, 2] and resumed[0] == loss[0]
    finally:
        proc.send_signal(signal.SIGCONT)
    stderr = proc.communicate(timeout=300)[1]
    assert proc.returncode == 0, stderr
    assert "resuming paws after epoch 1" in stderr
    # The finished run: its outputs hold every epoch once, and the live folder is gone.
    final = _curve(repo / "metrics" / "runs" / RUN / "train", "loss")
    assert [step for step, _ in final] == [1, 2, 3] and final[:2] == resumed
    assert not (repo / "metrics" / "live").exists()
    assert "metrics/live" not in run(repo, "git", "status", "--porcelain", "--untracked-files=all").stdout


def test_live_folders_of_killed_runs_go_and_a_living_ones_stays(tmp_path):
    root = tmp_path / "live"
    killed = root / "infonce-all-0"
    killed.mkdir(parents=True)
    (killed / "metrics.json").write_text("{}")
    history = [{"epoch": 1, "loss": 2.5, "knn_k20": 0.25}, {"epoch": 2, "loss": 2.0, "knn_k20": 0.5}]
    curves = LiveCurves(root / "paws-all-0", epochs=3, history=history)
    assert not killed.exists()  # no process held it
    assert _curve(curves.dir, "loss") == [(1, 2.5), (2, 2.0)]
    assert json.loads((curves.dir / "metrics.json").read_text()) == {"loss": 2.0, "knn_k20": 0.5, "step": 2}
    # Another process's remove_stale leaves a living run's folder alone; a second writer of it is refused.
    code = (
        "import sys; from pathlib import Path; from semisup.training.live import remove_stale; "
        "print(remove_stale(Path(sys.argv[1])))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(root)], capture_output=True, text=True, env=dict(os.environ)
    )
    assert out.stdout.strip() == "[]", out.stderr
    from semisup.core.errors import UserError

    with pytest.raises(UserError, match=r"paws-all-0: another pretrain of paws-all-0 is writing here"):
        LiveCurves(root / "paws-all-0", epochs=3, history=[])
    curves.log({"epoch": 3, "loss": 1.5, "knn_k20": 0.75})
    assert _curve(curves.dir, "knn_k20") == [(1, 0.25), (2, 0.5), (3, 0.75)]
    curves.close(finished=False)  # a failed run keeps its folder, unlocked: the next start removes it
    assert remove_stale(root) == [curves.dir] and not root.joinpath("paws-all-0").exists()
