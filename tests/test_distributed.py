"""Every strategy through the real stage: 2 logical-CPU replicas and 2 worker processes equal one device,
a killed worker stops the run with one line, and a rerun resumes where every worker left off."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from devtools.cluster import (
    EPOCHS,
    KILLED,
    TINY,
    cluster,
    kill,
    killed_workers,
    pretrain_cmd,
    scratch_env,
    wait_for_steps,
    write_tiny_params,
)
from semisup.data import readers
from semisup.methods import METHODS
from semisup.model import augment as aug
from tests.support import ENV, ROOT, copy_repo, tool_env, write_params

# Configurations beside each method's own, compared the same way: name -> (method, settings over TINY).
# PAWS as the paper trains it, every option on at once: class-stratified supports (2 of each of 5 classes
# a step, so the classes take turns), two support views, two 16-pixel crops on a pooled, same-padded encoder.
# And every training option at once, on the method that has them all: a projection head, SGD with Nesterov
# momentum and weight decay, a warmup epoch then a cosine decay, and SuNCEt's supervised term switched off
# after epoch 1. Two epochs, all steps compared: both sides of the switch and both phases of the schedule.
# The head is one Dense layer: with BatchNorm in it (2+ layers) this tiny run is chaotic, and a 1e-7
# relative change of one kernel on ONE device moved its losses by up to 8e-2 within 2 epochs (peak rate
# 0.005), so no curve of it can be compared to 1e-4; tests/test_train.py ("+projection") checks that head's 2-replica loss and
# gradients on one step instead.
OPTIONS = "suncet-options"
CONFIGS = {
    "paws-options": (
        "paws",
        {
            "methods.paws.supports_per_class": 2,
            "methods.paws.classes_per_batch": 5,
            "methods.paws.labeled_batch": 10,
            "methods.paws.support_views": 2,
            "methods.paws.multicrop": 2,
            "methods.paws.multicrop_size": 16,
            "methods.paws.label_smoothing": 0.1,
            "encoder.padding": "same",
            "encoder.pooling": "average",
        },
    ),
    OPTIONS: (
        "suncet",
        {
            "train.epochs": 2,
            "encoder.projection_layers": 1,
            "encoder.projection_dim": 16,
            "train.optimizer": "sgd",
            "train.learning_rate": 0.02,
            "train.weight_decay": 0.05,
            "train.lr_schedule": "cosine",
            "train.warmup_epochs": 1,
            "methods.suncet.supervised_epochs": 1,
        },
    ),
}
STRATEGIES = ("default", "mirrored", "multiworker")
_runs: dict[tuple[str, str], Path] = {}


@pytest.fixture(scope="module")
def digits(tmp_path_factory, digits_shards) -> tuple[Path, Path]:
    """(a folder with TINY's params files, the session's digits shards: TINY's data, tests/conftest.py)."""
    tmp = tmp_path_factory.mktemp("dist")
    write_tiny_params(tmp)
    for name, (_, overrides) in CONFIGS.items():
        write_params(tmp / f"params-{name}.yaml", TINY | overrides)
    return tmp, digits_shards


def _params(root: Path, name: str) -> Path:
    return root / (f"params-{name}.yaml" if name in EPOCHS or name in CONFIGS else "params.yaml")


def _method(name: str) -> str:
    """The method a run name trains: a method's own name, or a configuration of CONFIGS."""
    return CONFIGS[name][0] if name in CONFIGS else name


def _cmd(root: Path, shards: Path, name: str, out: Path, *extra: str) -> list[str]:
    return pretrain_cmd(_params(root, name), shards, _method(name), out, *extra)


STRATEGY_ARGS = {"default": (), "mirrored": ("--cpu-replicas", "2"), "multiworker": ("--local-workers", "2")}


def _run(digits: tuple[Path, Path], name: str, strategy: str) -> Path:
    """One whole stage run of `name` (a method, or a configuration of CONFIGS) under `strategy` (cached
    for the module); -> its output folder."""
    if (name, strategy) not in _runs:
        root, shards = digits
        out = root / f"{name}-{strategy}"
        cmd = _cmd(root, shards, name, out, *STRATEGY_ARGS[strategy])
        proc = subprocess.run(
            cmd, cwd=ROOT, env=scratch_env(out), capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        replicas = "1 replica(s)" if strategy == "default" else "2 replica(s)"
        assert replicas in proc.stderr
        assert not any((out / "ckpt").iterdir()), "a finished run removes every worker's checkpoints"
        assert not list((out / "tmp").glob("semisup-*")), "no worker scratch left behind"
        _runs[name, strategy] = out
    return _runs[name, strategy]


def _losses(out: Path) -> np.ndarray:
    """Per-step losses of the step log, as (step, steps, loss) rows."""
    return np.loadtxt(out / "steps.tsv", ndmin=2)


def _first_epoch(out: Path) -> np.ndarray:
    rows = _losses(out)
    steps = int(rows[0, 1])
    assert rows[:steps, 0].tolist() == list(range(1, steps + 1))
    return rows[:steps, 2]


def _final_knn(out: Path, method: str) -> float:
    return json.loads((out / "metrics" / method / "train" / "metrics.json").read_text())["knn_k20"]


def _weights(out: Path, method: str) -> list[np.ndarray]:
    import keras

    model = keras.models.load_model(out / "models" / method / "encoder.keras")
    return [np.asarray(w) for w in model.weights]


@pytest.mark.slow
@pytest.mark.parametrize("name", [*sorted(METHODS), *sorted(CONFIGS)])
@pytest.mark.parametrize("strategy", ["mirrored", "multiworker"])
def test_two_replicas_and_two_workers_match_one_device(digits, name, strategy):
    one, two = _run(digits, name, "default"), _run(digits, name, strategy)
    if name == OPTIONS:  # every step of every epoch
        first, other = _losses(one)[:, 2], _losses(two)[:, 2]
        assert len(first) == 2 * _losses(one)[0, 1]
    else:
        first, other = _first_epoch(one), _first_epoch(two)
    assert len(first) > 2 and np.isfinite(first).all() and len(set(first.tolist())) > 1
    np.testing.assert_allclose(other, first, rtol=0, atol=1e-4)
    method = _method(name)
    assert abs(_final_knn(two, method) - _final_knn(one, method)) <= 0.02
    for a, b in zip(_weights(one, method), _weights(two, method), strict=True):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-3)
    if name == OPTIONS:
        _check_options_run(two)


def _check_options_run(out: Path) -> None:
    """The saved encoder is the encoder alone (no projection head), and epoch 2 trained without the
    supervised term."""
    import keras

    model = keras.models.load_model(out / "models" / "suncet" / "encoder.keras")
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds[-2:] == ["Flatten", "Dense"] and kinds.count("Dense") == 1
    assert model.outputs[0].shape[-1] == TINY["encoder.embedding_dim"] != 16
    last = json.loads((out / "metrics" / "suncet" / "train" / "metrics.json").read_text())
    assert last["step"] == 2 and last["supervised_loss"] == 0.0 and last["loss"] == last["contrastive_loss"]


def _steps_per_epoch(digits, method: str) -> int:
    return int(_losses(_run(digits, method, "default"))[0, 1])


@pytest.mark.slow
def test_killed_worker_stops_the_run_and_every_worker_resumes(digits):
    root, shards = digits
    straight = _run(digits, KILLED, "multiworker")
    steps = _steps_per_epoch(digits, KILLED)
    out = root / "killed-multiworker"
    procs = killed_workers(root, shards, out)
    try:
        wait_for_steps(out, steps + 2, procs)  # both workers saved epoch 1 and are in epoch 2
        os.killpg(procs[1].pid, signal.SIGKILL)
        # A liveness bound only (a hang fails): seconds to the stop are python bench/liveness.py --worker.
        _, err = procs[0].communicate(timeout=600)
    finally:
        for p in procs:
            kill(p)
    assert procs[0].returncode == 2, err[-3000:]
    assert "Traceback" not in err
    # No native TensorFlow lines about the lost peer above the stage's own line (absl's format).
    assert not re.search(r"^[IWE]\d{4} ", err, re.M), err[-3000:]
    last = err.strip().splitlines()[-1]
    assert re.fullmatch(
        r"error: worker 1 stopped responding during epoch 2 \(\w+\); rerun every worker to resume after epoch 1",
        last,
    ), last
    assert not (out / "models" / KILLED / "encoder.keras").exists()

    procs = killed_workers(root, shards, out)
    try:
        errs = [p.communicate(timeout=600)[1] for p in procs]
    finally:
        for p in procs:
            kill(p)
    assert [p.returncode for p in procs] == [0, 0], errs[0][-3000:] + errs[1][-3000:]
    assert f"resuming {KILLED} after epoch 1" in errs[0]
    for a, b in zip(_weights(straight, KILLED), _weights(out, KILLED), strict=True):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-6)
    assert not any((out / "ckpt").iterdir())
    assert not list((out / "tmp").glob("semisup-*"))


@pytest.mark.slow
def test_killed_mirrored_run_resumes(digits):
    root, shards = digits
    straight = _run(digits, KILLED, "mirrored")
    steps = _steps_per_epoch(digits, KILLED)
    out = root / "killed-mirrored"
    cmd = _cmd(root, shards, KILLED, out, "--cpu-replicas", "2")
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=scratch_env(out), stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        wait_for_steps(out, steps + 2, [proc])
    finally:
        kill(proc)
    proc = subprocess.run(cmd, cwd=ROOT, env=scratch_env(out), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resuming {KILLED} after epoch 1" in proc.stderr
    for a, b in zip(_weights(straight, KILLED), _weights(out, KILLED), strict=True):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-6)


# One worker of a 2-worker cluster on loopback: saves the epochs argv[2] lists for its index with the real
# Checkpoints(keep=2) (epoch e's weights all equal e), then calls pretrain.resume as a rerun does.
RESUME_WORKER = """
import json, sys
from types import SimpleNamespace
import keras, numpy as np, tensorflow as tf
from semisup.training import distribute
from semisup.training.pretrain import resume
from semisup.training.checkpoints import Checkpoints

root, saves = sys.argv[1], json.loads(sys.argv[2])
strategy = distribute.select_strategy("multiworker")
index, _ = distribute.task(strategy)
with strategy.scope():
    encoder = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    optimizer = keras.optimizers.Adam()
    optimizer.build(encoder.trainable_variables)
checkpoints = Checkpoints(root, "run" + (f"/worker-{index}" if index else ""), keep=2)
history = []
for epoch in saves[index]:
    for w in encoder.weights:
        w.assign(tf.fill(w.shape, float(epoch)))
    history.append({"epoch": epoch})
    checkpoints.save(epoch, history, {"encoder": encoder}, optimizer)
for w in encoder.weights:
    w.assign(tf.zeros(w.shape))
trainer = SimpleNamespace(optimizer=optimizer, variables=encoder.trainable_variables)
run = SimpleNamespace(
    strategy=strategy, name="paws", method=SimpleNamespace(name="paws"), worker=index, workers=2
)
epoch, history = resume(run, {"encoder": encoder}, trainer, checkpoints)
weights = sorted({float(v) for w in encoder.weights for v in np.asarray(w).ravel()})
print(json.dumps({"epoch": epoch, "history": [r["epoch"] for r in history], "weights": weights}))
"""


@pytest.mark.slow
def test_workers_that_saved_different_last_epochs_resume_from_the_last_common_one(tmp_path):
    # Worker 0 saved epochs 1 and 2, worker 1 died before saving epoch 2: both resume after epoch 1,
    # worker 0 from the epoch-1 weights it still keeps beside its last.
    argv = [sys.executable, "-c", RESUME_WORKER, str(tmp_path), "[[1, 2], [1]]"]
    procs = cluster([(ROOT, argv)] * 2, ENV, subprocess.PIPE, subprocess.PIPE)
    try:
        outputs = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:
            kill(p)
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
        assert json.loads(out.strip().splitlines()[-1]) == {"epoch": 1, "history": [1], "weights": [1.0]}
        assert "resuming paws after epoch 1" in err
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "state.json",
        "weights-00001.npz",
        "weights-00002.npz",
        "worker-1",
    ]


def test_views_do_not_depend_on_the_replica_count():
    rng = np.random.default_rng(0)
    images = tf.constant(rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8))
    seed = tf.constant([3, 4], tf.int64)
    # Without XLA (the same views, see augment's docstring): compiling each batch shape takes seconds.
    whole = aug.augment(images, seed, jit_compile=False).numpy()
    for count in (2, 3, 4):
        size = 12 // count
        parts = [
            aug.augment(images[i * size : (i + 1) * size], seed, part=(i, count), jit_compile=False)
            for i in range(count)
        ]
        np.testing.assert_array_equal(np.concatenate(parts), whole)


# The reference's random labeled batches, and class-stratified ones (2 images of each of the 10 classes).
@pytest.mark.parametrize("stratified", [{}, {"supports_per_class": 2}], ids=["random", "stratified"])
def test_global_batches_do_not_depend_on_pipelines_or_replicas(digits, stratified):
    from semisup.methods import ViewOptions

    _, shards = digits
    args = {"unlabeled_batch": 64, "labeled_batch": 20, "seed": 0, "epoch": 2, "shuffle_buffer": 300}
    args["views"] = ViewOptions(**stratified)
    whole, steps = readers.train_dataset(shards, **args)
    whole = list(whole.as_numpy_iterator())
    for pipelines, replicas in ((1, 2), (2, 2), (1, 4), (2, 4)):
        parts = []
        for p in range(pipelines):
            ctx = tf.distribute.InputContext(pipelines, p, replicas)
            ds, n = readers.train_dataset(shards, input_context=ctx, **args)
            assert n == steps
            parts.append(list(ds.as_numpy_iterator()))
        local = replicas // pipelines
        for k, element in enumerate(whole):
            rows = [parts[p][k * local + r] for p in range(pipelines) for r in range(local)]
            for i in range(3):
                np.testing.assert_array_equal(np.concatenate([row[i] for row in rows]), element[i])


def test_batch_divisibility_is_checked_only_for_what_is_read(digits):
    from semisup.core.errors import UserError

    _, shards = digits
    ctx = tf.distribute.InputContext(2, 0, 2)
    args = {"seed": 0, "epoch": 1, "shuffle_buffer": 10, "input_context": ctx, "method": "infonce"}
    readers.train_dataset(shards, unlabeled_batch=64, labeled_batch=25, read_labeled=False, **args)
    with pytest.raises(UserError, match=r"methods\.infonce\.labeled_batch: 25 does not divide among 2"):
        readers.train_dataset(shards, unlabeled_batch=64, labeled_batch=25, **args)


def _project_repo(repo: Path, digits_repo: Path) -> None:
    """A git + DVC repository holding this project's code, dvc.yaml and the TINY params, committed: a copy
    of the session's `digits_repo` (tests/conftest.py), whose download, shard and splits@all-0 are
    reproduced on TINY's data."""
    copy_repo(digits_repo, repo)
    write_params(repo / "params.yaml", TINY)
    _git(repo, "commit", "-qam", "project")


def _tool_env(tmp_path: Path) -> dict[str, str]:
    """support.tool_env() (dvc on PATH, a git identity) with _env's private TMPDIR."""
    return tool_env() | {"TMPDIR": scratch_env(tmp_path)["TMPDIR"]}


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, env=_tool_env(repo.parent), check=True, capture_output=True)


def _ok(cwd: Path, env: dict, *cmd: str) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (cmd, (proc.stdout + proc.stderr)[-3000:])
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_local_workers_through_dvc_repro(tmp_path, digits_repo):
    repo = tmp_path / "repo"
    _project_repo(repo, digits_repo)
    output = _ok(
        repo, _tool_env(tmp_path) | {"SEMISUP_LOCAL_WORKERS": "2"}, "dvc", "repro", "pretrain@infonce-all-0"
    )
    assert "worker 0 of 2" in output and "infonce-all-0: trained 1 epochs" in output
    assert "pretrain@infonce-all-0" in (repo / "dvc.lock").read_text()
    assert (repo / "models" / "infonce-all-0" / "encoder.keras").exists()
    assert not any((repo / ".checkpoints").iterdir())
    assert not list((tmp_path / "tmp").glob("semisup-*"))


@pytest.mark.slow
def test_two_machine_recipe_chief_through_dvc_worker_from_the_remote(tmp_path, digits_repo):
    # docs/scaling.md's recipe on one machine: the chief runs `dvc repro pretrain@M`; the other worker, a
    # clone at the same commit, pulls the shards from the DVC remote and runs the stage; TF_CONFIG names both.
    chief, worker, env = tmp_path / "chief", tmp_path / "worker", _tool_env(tmp_path)
    _project_repo(chief, digits_repo)
    _ok(chief, env, "dvc", "remote", "add", "-d", "store", str(tmp_path / "remote"))
    _ok(chief, env, "dvc", "repro", "splits")
    _ok(chief, env, "dvc", "push")
    _git(chief, "add", "-A")
    _git(chief, "commit", "-qm", "shards")
    _ok(tmp_path, env, "git", "clone", "-q", str(chief), str(worker))
    _ok(worker, env, "dvc", "pull", "data/shards", "data/splits/all-0.json")

    # The run's command as dvc.yaml writes it (`dvc stage list --name-only` / dvc.yaml's cmd).
    worker_cmd = [sys.executable, "-m", "stages.pretrain", "--run", "infonce-all-0"]
    worker_cmd += ["--split", "data/splits/all-0.json", "--metrics", "metrics/runs"]
    commands = [(chief, ["dvc", "repro", "pretrain@infonce-all-0"]), (worker, worker_cmd)]
    procs = cluster(commands, env, subprocess.PIPE, subprocess.STDOUT)
    try:
        outputs = [p.communicate(timeout=900)[0] for p in procs]
    finally:
        for p in procs:
            kill(p)
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert "pretrain@infonce-all-0" in (chief / "dvc.lock").read_text()
    assert (chief / "models" / "infonce-all-0" / "encoder.keras").exists()
    assert not (worker / "models").exists() and not (worker / "metrics").exists()
    assert not any((chief / ".checkpoints").iterdir()) and not any((worker / ".checkpoints").iterdir())


@pytest.mark.parametrize("replicas", [1, 2, 3])
def test_logical_cpu_replicas_share_the_cores(replicas):
    """N logical CPU replicas run their ops at once on the same cores: each gets cores // N threads."""
    code = (
        "import tensorflow as tf\n"
        "from semisup.training.distribute import configure_devices\n"
        f"configure_devices({replicas})\n"
        "print(len(tf.config.list_logical_devices('CPU')), tf.config.threading.get_intra_op_parallelism_threads())"
    )
    env = dict(ENV, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    devices, threads = map(int, proc.stdout.split())
    assert devices == replicas
    # 0 is TensorFlow's default: every core (one replica keeps it).
    assert threads == (0 if replicas == 1 else max(1, (os.cpu_count() or 1) // replicas))


def test_cluster_messages_cite_the_manual_section_that_shows_tf_config(monkeypatch):
    from semisup.core.errors import UserError
    from semisup.training import distribute

    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(UserError) as info:
        distribute.cluster_spec()
    assert str(info.value) == (
        "TF_CONFIG: not valid JSON with a cluster: see docs/scaling.md, 'Launching' for the format"
    )
    monkeypatch.delenv("TF_CONFIG")
    with pytest.raises(UserError) as info:
        distribute.select_strategy("multiworker")
    assert str(info.value) == (
        "train.strategy: multiworker needs TF_CONFIG (or --local-workers N): see docs/scaling.md, 'Launching'"
    )
    manual = (ROOT / "docs" / "scaling.md").read_text()
    assert (
        "\n## Launching\n" in manual and "TF_CONFIG=" in manual.split("\n## Launching\n")[1].split("\n## ")[0]
    )
