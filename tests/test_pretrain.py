"""pretrain@M on real digits shards: SIGKILL + resume equals an uninterrupted run; stale checkpoints are ignored."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.support import ENV, RESUME_TINY, ROOT, write_params

# Small enough to train in seconds, large enough to have several steps per epoch: 4 epochs of an 8-filter
# encoder (devtools/support.py; bench/compile_cache.py runs it too).
TINY = RESUME_TINY


def _write_params(path: Path, **changes) -> Path:
    return write_params(path, TINY | changes)


def _pretrain(params: Path, shard_dir: Path, out: Path, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    cmd = _pretrain_cmd(params, shard_dir, out)
    return subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True)


@pytest.fixture(scope="module")
def shards(tmp_path_factory, digits_shards) -> tuple[Path, Path]:
    """(TINY's params file, the session's digits shards: TINY's data, tests/conftest.py)."""
    return _write_params(tmp_path_factory.mktemp("digits") / "params.yaml"), digits_shards


def _pretrain_cmd(params: Path, shard_dir: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "stages.pretrain",
        "--run",
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


def _kill_after_epoch(params: Path, shard_dir: Path, out: Path, epoch: int, cwd: Path = ROOT) -> None:
    """Start pretraining (the code in `cwd`), and SIGKILL it as soon as a new checkpoint folder (not one of an
    earlier run) holds epoch `epoch`."""
    before = set((out / "ckpt").glob("*/state.json"))
    proc = subprocess.Popen(
        _pretrain_cmd(params, shard_dir, out), cwd=cwd, env=ENV, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            states = sorted(set((out / "ckpt").glob("*/state.json")) - before)
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
    # Nothing half-written: the model and the curves appear together at the end, or not at all.
    assert not (out / "models" / "paws").exists() and not (out / "metrics" / "paws").exists()


@pytest.mark.slow
def test_sigkill_mid_run_resumes_and_matches_uninterrupted(shards, tmp_path):
    params, shard_dir = shards
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    proc = _pretrain(params, shard_dir, straight)
    assert proc.returncode == 0, proc.stderr
    assert "resuming" not in proc.stderr
    assert not any((straight / "ckpt").iterdir()), "a finished run removes its checkpoints"
    # The suite's XLA cache (tests/conftest.py) holds the compiled augmentation now: the runs below load
    # it instead of compiling, and still equal the straight run bit for bit.
    cache = re.search(r"--tf_xla_persistent_cache_directory=(\S+)", os.environ.get("TF_XLA_FLAGS", ""))
    if cache:
        assert list(Path(cache.group(1)).glob("xla_compile_cache__*")), "no compiled program was cached"

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
def test_a_changed_param_or_one_byte_of_code_never_resumes_a_stale_checkpoint(shards, tmp_path):
    params, shard_dir = shards
    code, out = tmp_path / "code", tmp_path / "out"
    for package in ("semisup", "stages"):  # a copy of the project's code, run from its own folder
        shutil.copytree(ROOT / package, code / package, ignore=shutil.ignore_patterns("__pycache__"))
    _kill_after_epoch(params, shard_dir, out, epoch=1, cwd=code)
    with (code / "semisup" / "data" / "readers.py").open("a") as f:  # not a params file: the code
        f.write("#")
    # Killed again after its first epoch of the new code: that checkpoint is the new code's, not the old.
    _kill_after_epoch(params, shard_dir, out, epoch=1, cwd=code)
    assert len(list((out / "ckpt").iterdir())) == 2, "one checkpoint folder per code version"
    changed = _write_params(tmp_path / "changed.yaml", **{"train.learning_rate": 2.0e-3})
    proc = _pretrain(changed, shard_dir, out, cwd=code)
    assert proc.returncode == 0, proc.stderr
    assert "resuming" not in proc.stderr and "paws epoch 1/4" in proc.stderr
    assert _curve(out, "loss")[0][0] == "1"


def _key_with(params_path: Path, shard_dir: Path, monkeypatch, tmp_path: Path, part: str) -> str:
    """run_key("paws", ...) of the test's params with one of its parts changed; part "" changes nothing."""
    import dataclasses

    from semisup.config import parse_params, with_overrides
    from semisup.training import checkpoints as pt

    raw = yaml.safe_load(params_path.read_text())
    if part.startswith("-S "):
        raw = with_overrides(raw, dict([part[3:].split("=")]))
    params = parse_params(raw)
    method, mixed, ids = "paws", False, [1, 2, 3]
    if part == "method":
        method = "suncet"
    elif part == "seed":
        params = dataclasses.replace(params, seed=params.seed + 1)
    elif part == "precision":
        mixed = True
    elif part == "subset":
        ids = [1, 2, 4]
    elif part == "data":  # another manifest (it holds every shard's sha256)
        shard_dir = tmp_path / "other"
        shard_dir.mkdir(exist_ok=True)
        (shard_dir / "manifest.json").write_bytes((shard_dir.parent / "manifest").read_bytes())
    elif part and part != "code" and not part.startswith("-S "):
        raise ValueError(part)
    code = "another digest" if part == "code" else "the code's digest"  # what the stage passes
    return pt.run_key(method, params, shard_dir, mixed, ids, code=code)


RUN_KEY_PARTS = [
    "method",
    "seed",
    "precision",
    "subset",
    "data",
    "code",
    "-S methods.paws.temperature=0.2",
    "-S train.learning_rate=2.0e-3",
    "-S train.epochs=5",
    "-S augment.hue=0.1",
    "-S encoder.filters=16",
    "-S knn.k=[5]",
    "-S knn.monitor_every=2",
    "-S train.warmup_epochs=1",
    "-S train.optimizer=sgd",
    "-S encoder.projection_layers=2",
]
# What pretrain@M does not depend on (dvc.yaml): no reason to train again.
NOT_RUN_KEY_PARTS = [
    "-S methods.infonce.temperature=0.2",
    "-S knn.temperature=0.1",
    "-S knn.query_chunk=64",
    "-S linear.max_iter=50",
    "-S embed.batch_size=64",
    "-S study.seeds=[0,1]",
    "-S methods.suncet.supervised_epochs=3",
]


@pytest.mark.parametrize("part", RUN_KEY_PARTS + NOT_RUN_KEY_PARTS)
def test_run_key_changes_with_each_of_its_parts_and_nothing_else(shards, monkeypatch, tmp_path, part):
    params_path, shard_dir = shards
    manifest = json.loads((shard_dir / "manifest.json").read_text())
    (tmp_path / "manifest").write_text(json.dumps(manifest | {"num_classes": 11}))
    base = _key_with(params_path, shard_dir, monkeypatch, tmp_path, "")
    changed = _key_with(params_path, shard_dir, monkeypatch, tmp_path, part)
    assert (changed != base) == (part in RUN_KEY_PARTS), part


def test_batch_larger_than_split_fails_before_training(shards, tmp_path):
    # An unlabeled batch stays as set (a labeled one is fitted to the subset: tests/test_few_labels.py).
    params, shard_dir = shards
    bad = _write_params(tmp_path / "bad.yaml", **{"methods.paws.unlabeled_batch": 5000})
    proc = _pretrain(bad, shard_dir, tmp_path)
    assert proc.returncode == 2
    assert (
        proc.stderr.strip().splitlines()[-1].startswith("error: methods.paws.unlabeled_batch: 5000 is larger")
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


def test_two_saves_of_the_same_weights_are_byte_identical(tmp_path):
    import time
    import zipfile

    import keras

    from semisup.model.encoder import get_encoder, save_encoder

    model = get_encoder((32, 32, 3), filters=8, embedding_dim=16)
    save_encoder(model, tmp_path / "a" / "encoder.keras")
    time.sleep(1.1)  # Keras stamps the second in metadata.json, the zip every entry's write time
    save_encoder(model, tmp_path / "b" / "encoder.keras")
    first = (tmp_path / "a" / "encoder.keras").read_bytes()
    assert first == (tmp_path / "b" / "encoder.keras").read_bytes()
    with zipfile.ZipFile(tmp_path / "a" / "encoder.keras") as z:
        assert {i.date_time for i in z.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    loaded = keras.models.load_model(tmp_path / "a" / "encoder.keras")
    for a, b in zip(model.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    model.weights[0].assign(model.weights[0] + 1.0)
    save_encoder(model, tmp_path / "c" / "encoder.keras")
    assert (tmp_path / "c" / "encoder.keras").read_bytes() != first


def test_labeled_ids_pick_the_labeled_images_trained_on(shards):
    from semisup.data import readers

    _, shard_dir = shards
    images, labels = readers.load_split(shard_dir, "labeled")
    ids = [7, 3, 100, 42, 0]
    ds, _ = readers.train_dataset(
        shard_dir,
        unlabeled_batch=128,
        labeled_batch=10,
        seed=0,
        epoch=1,
        shuffle_buffer=500,
        read_unlabeled=False,
        labeled_ids=ids,
    )
    wanted = {images[i].tobytes(): int(labels[i]) for i in ids}
    for k, (_, x, y) in enumerate(ds.as_numpy_iterator()):
        keys = [img.tobytes() for img in x]
        assert [wanted[key] for key in keys] == y.tolist()  # only those images, with their labels
        assert sorted(keys) == sorted(list(wanted) * 2)  # a batch of 10 is two whole passes over 5
        if k == 0:
            assert keys[:5] != [images[i].tobytes() for i in ids]  # shuffled


@pytest.mark.parametrize(
    ("ids", "message"),
    [([], "empty"), ([0, 250], "position 250 is outside the labeled split"), ([1, 1], "appears twice")],
)
def test_bad_labeled_ids_name_the_problem(shards, ids, message):
    from semisup.core.errors import UserError
    from semisup.data import readers

    with pytest.raises(UserError, match=rf"^labeled_ids: .*{message}"):
        readers.labeled_subset(shards[1], ids)


def test_labeled_ids_reach_the_checkpoint_key_batches_and_monitor(shards, monkeypatch):
    from semisup.config import load_params
    from semisup.core.errors import DataError
    from semisup.training import checkpoints, preflight
    from semisup.training import monitor as pt

    params_path, shard_dir = shards
    params = load_params(params_path)
    keys = {
        checkpoints.run_key("paws", params, shard_dir, False, ids, code="c")
        for ids in (None, [1, 2, 3], [1, 2, 4])
    }
    assert len(keys) == 3
    assert checkpoints.run_key("paws", params, shard_dir, False, [1, 2, 3], code="c") in keys
    manifest = json.loads((shard_dir / "manifest.json").read_text())
    with pytest.raises(DataError, match=r"labeled_batch: 50 is larger than the labeled subset \(3 images\)"):
        preflight.check_batches(manifest, "paws", params.methods.paws, labeled=3)
    preflight.check_batches(
        manifest, "infonce", params.methods.infonce, labeled=3
    )  # InfoNCE reads no labeled image

    seen = {}

    def spy(bank, bank_labels, *a, ks, **k):
        seen.update(n=len(bank), ks=tuple(ks))
        return {f"k{k}": {"accuracy": 0.0, "weighted_accuracy": 0.0} for k in ks}

    monkeypatch.setattr(pt, "knn_accuracy", spy)
    from semisup.model.encoder import get_encoder

    pt.monitor(get_encoder((32, 32, 3), filters=8, embedding_dim=8), shard_dir, params, 10, [5, 6, 7, 8])
    assert seen == {"n": 4, "ks": (1, 1)}  # a bank of 4: k fitted to its smallest class, 1


@pytest.mark.slow
def test_pretrain_trains_on_labeled_ids_and_reports_every_step(shards, tmp_path):
    import keras

    from semisup.config import load_params, resolve_run
    from semisup.data import readers
    from semisup.training.pretrain import pretrain

    _, shard_dir = shards
    params = load_params(
        _write_params(
            tmp_path / "p.yaml", **{"train.epochs": 1, "train.mixed_precision": False, "knn.k": [20]}
        )
    )
    ids = list(range(0, 250, 5))  # 50 of the 250 labeled images: exactly one labeled batch
    calls, subsets = [], []
    original = readers.labeled_subset
    readers.labeled_subset = lambda shard_dir, labeled_ids=None: (
        subsets.append(labeled_ids) or original(shard_dir, labeled_ids)
    )
    try:
        history = pretrain(
            resolve_run(params, "paws", labeled_ids=ids),
            shard_dir=shard_dir,
            model_dir=tmp_path / "model",
            metrics_dir=tmp_path / "metrics",
            checkpoint_root=tmp_path / "ckpt",
            code="the code's digest",
            on_step=lambda step, steps, loss: calls.append((step, steps, loss)),
        )
    finally:
        readers.labeled_subset = original
        keras.mixed_precision.set_global_policy("float32")
    steps = 1188 // 128
    assert [(s, n) for s, n, _ in calls] == [(s, steps) for s in range(1, steps + 1)]
    assert all(isinstance(loss, float) and np.isfinite(loss) for *_, loss in calls)
    assert np.isclose(history[0]["loss"], np.mean([loss for *_, loss in calls]), rtol=1e-5)
    assert subsets and all(list(s) == ids for s in subsets)  # the stream and the kNN bank: only these images
    assert (tmp_path / "model" / "encoder.keras").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "status", "word"), [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]
)
def test_ctrl_c_is_one_line_and_the_run_resumes(shards, tmp_path, sig, status, word):
    params, shard_dir = shards
    proc = subprocess.Popen(
        _pretrain_cmd(params, shard_dir, tmp_path),
        cwd=ROOT,
        env=ENV,
        stderr=subprocess.PIPE,
        text=True,
        # As from a terminal: a suite started in the background (CI) passes SIGINT on ignored, and Python
        # then installs no Ctrl-C handler at all.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 300
    while not list((tmp_path / "ckpt").glob("*/state.json")):  # the first epoch's checkpoint is on disk
        assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    proc.send_signal(sig)
    stderr = proc.communicate(timeout=120)[1]
    assert proc.returncode == status, stderr
    assert stderr.strip().splitlines()[-1].startswith(f"error: {word}: nothing was half-written")
    assert stderr.count("error:") == 1 and "Traceback" not in stderr and "Aborted!" not in stderr
    assert not (tmp_path / "models" / "paws").exists() and not (tmp_path / "metrics" / "paws").exists()
    resumed = _pretrain(params, shard_dir, tmp_path)
    assert resumed.returncode == 0 and "resuming paws after epoch" in resumed.stderr, resumed.stderr
    assert [step for step, _ in _curve(tmp_path, "loss")] == ["1", "2", "3", "4"]


def test_preflight_and_training_take_the_resolved_run_and_never_its_name(shards, monkeypatch, tmp_path):
    """The stage resolves the run once (resolve_run); preflight, set-up, the models, the checkpoint key and
    an epoch's stream read the record, and none of them asks params.yaml's Params for the name again."""
    import keras

    from semisup.config import Params, load_params, resolve_run
    from semisup.training import pretrain as pt
    from semisup.training.preflight import check_pretrain

    params_path, shard_dir = shards
    spec = resolve_run(load_params(params_path), "paws", run="paws-all-3", seed=3, budget=None)
    for name in ("for_run", "method", "method_of"):
        monkeypatch.setattr(Params, name, lambda *a, name=name: pytest.fail(f"Params.{name}{a[1:]} called"))
    try:
        check_pretrain(spec, shard_dir, tmp_path / "model", tmp_path / "metrics", tmp_path / "ckpt")
        run = pt.set_up(spec, shard_dir)
        models, trainer = pt.build(run)
        checkpoints = pt.open_checkpoints(run, tmp_path / "ckpt", "the code's digest")
        pt.epoch_dataset(
            run.strategy,
            run.method,
            spec.method_params,
            shard_dir,
            seed=3,
            epoch=1,
            shuffle_buffer=10,
            views=spec.views,
        )
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert run.spec is spec and run.params.seed == 3 and trainer.views is spec.views
    assert checkpoints.dir.name.startswith("paws-")
