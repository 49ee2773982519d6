"""pretrain@M on real digits shards: SIGKILL + resume equals an uninterrupted run; stale checkpoints are ignored."""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.support import ENV, ROOT, make_shards, write_params

# Small enough to train in seconds, large enough to have several steps per epoch.
TINY = {
    "data.source": "digits",
    "data.image_size": 32,
    "data.labeled_per_class": 25,
    "data.num_shards": 2,
    "train.epochs": 4,
    "train.shuffle_buffer": 500,
    "encoder.filters": 8,
    "encoder.embedding_dim": 32,
    "methods.paws.unlabeled_batch": 128,
    "methods.paws.labeled_batch": 50,
}


def _write_params(path: Path, **changes) -> Path:
    return write_params(path, TINY | changes)


def _pretrain(params: Path, shard_dir: Path, out: Path) -> subprocess.CompletedProcess:
    cmd = _pretrain_cmd(params, shard_dir, out)
    return subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("digits")
    params = _write_params(tmp / "params.yaml")
    return params, make_shards(tmp, params)


def _pretrain_cmd(params: Path, shard_dir: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "stages.pretrain",
        "--method",
        "paws",
        "--params",
        str(params),
        "--shards",
        str(shard_dir),
        "--models",
        str(out / "models"),
        "--metrics",
        str(out / "metrics"),
        "--checkpoints",
        str(out / "ckpt"),
    ]


def _curve(out: Path, name: str) -> list[tuple[str, str]]:
    """(step, value) rows of a dvclive curve, without its wall-clock timestamps."""
    path = out / "metrics" / "paws" / "train" / "plots" / "metrics" / f"{name}.tsv"
    with path.open() as f:
        return [(row["step"], row[name]) for row in csv.DictReader(f, delimiter="\t")]


def _weights(out: Path) -> list[np.ndarray]:
    import keras

    return [np.asarray(w) for w in keras.models.load_model(out / "models" / "paws" / "encoder.keras").weights]


def _kill_after_epoch(params: Path, shard_dir: Path, out: Path, epoch: int) -> None:
    """Start pretraining, and SIGKILL it as soon as the checkpoint of `epoch` is on disk."""
    proc = subprocess.Popen(
        _pretrain_cmd(params, shard_dir, out), cwd=ROOT, env=ENV, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            states = list((out / "ckpt").glob("*/state.json"))
            if states and yaml.safe_load(states[0].read_text())["epoch"] >= epoch:
                break
            assert proc.poll() is None, "pretraining ended before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("no checkpoint appeared")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "models" / "paws" / "encoder.keras").exists()


@pytest.mark.slow
def test_sigkill_mid_run_resumes_and_matches_uninterrupted(shards, tmp_path):
    params, shard_dir = shards
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    proc = _pretrain(params, shard_dir, straight)
    assert proc.returncode == 0, proc.stderr
    assert "resuming" not in proc.stderr
    assert not any((straight / "ckpt").iterdir()), "a finished run removes its checkpoints"

    _kill_after_epoch(params, shard_dir, resumed, epoch=2)
    proc = _pretrain(params, shard_dir, resumed)
    assert proc.returncode == 0, proc.stderr
    assert "resuming paws after epoch 2" in proc.stderr
    assert "paws epoch 1/4" not in proc.stderr and "paws epoch 3/4" in proc.stderr

    for curve in ("loss", "knn_k20", "knn_k200"):
        rows = _curve(straight, curve)
        assert [step for step, _ in rows] == ["1", "2", "3", "4"]
        assert _curve(resumed, curve) == rows
    for a, b in zip(_weights(straight), _weights(resumed), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not any((resumed / "ckpt").iterdir())


@pytest.mark.slow
def test_changed_param_never_resumes_a_stale_checkpoint(shards, tmp_path):
    params, shard_dir = shards
    out = tmp_path / "out"
    _kill_after_epoch(params, shard_dir, out, epoch=1)
    changed = _write_params(tmp_path / "changed.yaml", **{"train.learning_rate": 2.0e-3})
    proc = _pretrain(changed, shard_dir, out)
    assert proc.returncode == 0, proc.stderr
    assert "resuming" not in proc.stderr
    assert "paws epoch 1/4" in proc.stderr
    assert _curve(out, "loss")[0][0] == "1"


def test_batch_larger_than_split_fails_before_training(shards, tmp_path):
    params, shard_dir = shards
    bad = _write_params(tmp_path / "bad.yaml", **{"methods.paws.labeled_batch": 5000})
    proc = _pretrain(bad, shard_dir, tmp_path)
    assert proc.returncode == 2
    assert (
        proc.stderr.strip().splitlines()[-1].startswith("error: methods.paws.labeled_batch: 5000 is larger")
    )
    assert "Traceback" not in proc.stderr


def test_diverging_run_stops_with_epoch_and_step_and_saves_nothing(shards, tmp_path):
    params, shard_dir = shards
    wild = _write_params(tmp_path / "wild.yaml", **{"train.learning_rate": 1.0e30})
    proc = _pretrain(wild, shard_dir, tmp_path)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: loss is nan at epoch 1, step ") and "nothing saved" in last
    assert "Traceback" not in proc.stderr
    assert not list(tmp_path.rglob("*.keras"))
    assert not list(tmp_path.rglob("state.json"))
