"""Faults a user or the machine can cause, as a property of every stage.

Each stage runs as a real process on a tiny digits workspace with its outputs on (a) a full file
system, (b) a read-only one (tmpfs mounts: as root, permission bits alone stop nothing), and (c) a
normal folder, killed with SIGKILL at a random moment and run again. (a) and (b) must end with exit
status 2, one `error:` line naming what and what to do, no traceback and nothing left in the output
folder; after (c) the rerun must succeed with outputs equal to an uninterrupted run's and no
temporary folder left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.support import ENV, ROOT, write_params

TINY = {
    "method_names": "[paws]",
    "data.source": "digits",
    "data.image_size": 32,
    "data.labeled_per_class": 25,
    "data.num_shards": 2,
    "train.epochs": 1,
    "train.shuffle_buffer": 500,
    "encoder.filters": 8,
    "encoder.embedding_dim": 16,
    "methods.paws.unlabeled_batch": 128,
    "methods.paws.labeled_batch": 50,
    "knn.k": "[5, 20]",
}

# stage -> its arguments, given where its inputs are (a finished workspace) and where its outputs go.
RUN, SPLIT = "paws-all-0", "all-0.json"  # the one run of TINY: paws, every label of the pool, seed 0

STAGES: dict[str, Callable[[Path, Path], list[str]]] = {
    "code": lambda src, out: ["stages.code", "--out", f"{out}/code"],
    "download": lambda src, out: ["stages.download", "--raw-dir", f"{out}/raw"],
    "shard": lambda src, out: ["stages.shard", "--raw-dir", f"{src}/raw", "--out", f"{out}/shards"],
    "splits": lambda src, out: [
        "stages.splits",
        "--budget=all",
        "--seed=0",
        f"--shards={src}/shards",
        f"--out={out}/splits",
    ],
    "pretrain": lambda src, out: [
        "stages.pretrain",
        f"--run={RUN}",
        f"--split={src}/splits/{SPLIT}",
        f"--shards={src}/shards",
        f"--models={out}/models",
        f"--metrics={out}/metrics/runs",
        f"--checkpoints={out}/ckpt",
    ],
    "embed": lambda src, out: [
        "stages.embed",
        f"--run={RUN}",
        f"--shards={src}/shards",
        f"--models={src}/models",
        f"--out={out}/embeddings",
    ],
    "knn": lambda src, out: [
        "stages.knn",
        f"--run={RUN}",
        f"--split={src}/splits/{SPLIT}",
        f"--embeddings={src}/embeddings",
        f"--shards={src}/shards",
        f"--out={out}/metrics/runs",
    ],
    "linear": lambda src, out: [
        "stages.linear",
        f"--run={RUN}",
        f"--split={src}/splits/{SPLIT}",
        f"--embeddings={src}/embeddings",
        f"--out={out}/metrics/runs",
        f"--models={out}/models",  # the probe's weights, models/<run>/probe.npz
    ],
    "report": lambda src, out: [
        "stages.report",
        f"--runs={src}/metrics/runs",
        f"--splits={src}/splits",
        f"--out={out}/metrics",
    ],
}


def stage_cmd(stage: str, params: Path, src: Path, out: Path) -> list[str]:
    """The stage's command line."""
    return [sys.executable, "-m", *STAGES[stage](src, out), "--params", str(params)]


def run_stage(stage: str, params: Path, src: Path, out: Path) -> subprocess.CompletedProcess:
    cmd = stage_cmd(stage, params, src, out)
    return subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> tuple[Path, Path, dict[str, float]]:
    """(params, a workspace every stage has run in, seconds each stage took)."""
    root = tmp_path_factory.mktemp("faults")
    params = write_params(root / "params.yaml", TINY)
    src = root / "ws"
    seconds = {}
    for stage in STAGES:
        start = time.monotonic()
        proc = run_stage(stage, params, src, src)
        seconds[stage] = time.monotonic() - start
        assert proc.returncode == 0, f"{stage}: {proc.stderr}"
    return params, src, seconds


# CI runs as root and sets this (.ci/run): there a root-only test that cannot mount fails instead of
# skipping, so that a container without mount rights cannot pass CI with these tests silently not run.
REQUIRE_ROOT = "SEMISUP_REQUIRE_ROOT_TESTS"


def _cannot_mount(why: str) -> None:
    """Skip the test, or fail it where REQUIRE_ROOT=1 says that these tests must run."""
    if os.environ.get(REQUIRE_ROOT) == "1":
        pytest.fail(f"root-only fault test did not run: {why} ({REQUIRE_ROOT}=1: CI must run it)")
    pytest.skip(why)


def _mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if proc.returncode != 0:
        _cannot_mount(f"cannot mount a tmpfs here ({proc.stderr.decode().strip()}): needs root")


@contextlib.contextmanager
def tmpfs(path: Path, *, full: bool = False, read_only: bool = False) -> Iterator[Path]:
    """A small tmpfs at `path`, filled to the last byte or remounted read-only; unmounted afterwards."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        _cannot_mount("mounting a tmpfs needs root")
    _mount_tmpfs(path, "1m")
    try:
        if full:
            with contextlib.suppress(OSError), open(path / "filler", "wb", buffering=0) as f:
                while True:
                    f.write(b"\0" * 4096)
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def assert_one_line_error(proc: subprocess.CompletedProcess, *patterns: str) -> str:
    """Exit 2, no traceback, and the last line of stderr is the only `error:` line. -> that line."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "Error:" not in proc.stderr.replace("error:", ""), proc.stderr
    lines = proc.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors == [lines[-1]], proc.stderr
    for pattern in patterns:
        assert pattern in lines[-1], lines[-1]
    return lines[-1]


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(STAGES))
def test_full_disk_is_one_line_and_leaves_nothing(workspace, tmp_path: Path, stage: str) -> None:
    params, src, _ = workspace
    with tmpfs(tmp_path / "out", full=True) as out:
        line = assert_one_line_error(run_stage(stage, params, src, out), str(out))
        assert "no space left on device" in line or " free, " in line, line
        assert sorted(p.name for p in out.iterdir()) == ["filler"]


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(STAGES))
def test_read_only_output_is_one_line_and_leaves_nothing(workspace, tmp_path: Path, stage: str) -> None:
    params, src, _ = workspace
    with tmpfs(tmp_path / "out", read_only=True) as out:
        line = assert_one_line_error(run_stage(stage, params, src, out), str(out), "read-only file system")
        assert list(out.iterdir()) == []
        if stage == "pretrain":  # the run's own folder (models/paws-all-0), not the method's
            assert f"{out}/models/{RUN}:" in line, line


def _kill_at(cmd: list[str], delay: float) -> None:
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        pass
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL)
        proc.wait()


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _weights(path: Path) -> list[np.ndarray]:
    import keras

    return [np.asarray(w) for w in keras.models.load_model(path, compile=False).weights]


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(STAGES))
def test_sigkill_at_a_random_moment_then_rerun_gives_the_same_outputs(workspace, tmp_path, stage) -> None:
    params, src, seconds = workspace
    delay = random.Random().uniform(0.2, seconds[stage])
    out = tmp_path / "out"
    cmd = stage_cmd(stage, params, src, out)
    _kill_at(cmd, delay)
    proc = run_stage(stage, params, src, out)
    assert proc.returncode == 0, f"killed after {delay:.2f} s; rerun: {proc.stderr}"
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")], f"killed after {delay:.2f} s"
    got = _files(out)
    if stage == "pretrain":
        # A .keras zip carries write times: compare the weights, and the curves without their timestamps.
        got_w, want_w = (
            _weights(out / f"models/{RUN}/encoder.keras"),
            _weights(src / f"models/{RUN}/encoder.keras"),
        )
        assert len(got_w) == len(want_w)
        for a, b in zip(got_w, want_w, strict=True):
            np.testing.assert_array_equal(a, b)
        assert not list((out / "ckpt").rglob("*.npz")), "a finished run removes its checkpoints"
        return
    want = _files(src)
    runs = f"metrics/runs/{RUN}"
    names = {
        "code": [n for n in want if n.startswith("code/")],
        "download": ["raw/digits.npz"],
        "shard": [n for n in want if n.startswith("shards/")],
        "splits": [f"splits/{SPLIT}"],
        "embed": [f"embeddings/{RUN}/labeled.npz", f"embeddings/{RUN}/test.npz"],
        "knn": [f"{runs}/{n}" for n in ("knn.json", "per_class.json", "confusion.csv")],
        "linear": [f"{runs}/linear.json", f"models/{RUN}/probe.npz"],
        "report": [n for n in want if n.startswith("metrics/") and not n.startswith("metrics/runs/")],
    }[stage]
    assert sorted(got) == sorted(names), f"killed after {delay:.2f} s"
    for name in names:
        if name.endswith(".png"):
            assert got[name][:8] == b"\x89PNG\r\n\x1a\n"
        else:
            assert got[name] == want[name], f"{name} differs after a kill at {delay:.2f} s and a rerun"


# --- outputs as one set -------------------------------------------------------------------------------


def test_output_set_moves_all_or_nothing_and_keeps_old_outputs_on_failure(tmp_path: Path) -> None:
    from semisup.core.io import output_set

    a, b = tmp_path / "m" / "a.json", tmp_path / "m" / "b.csv"
    with output_set(a, b) as (ta, tb):
        ta.write_text("1")
        tb.write_text("2")
    assert (a.read_text(), b.read_text()) == ("1", "2")
    with pytest.raises(ZeroDivisionError), output_set(a, b) as (ta, tb):
        ta.write_text("new")
        1 / 0  # noqa: B018
    assert (a.read_text(), b.read_text()) == ("1", "2")  # the old set, whole
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["a.json", "b.csv"]  # no temporaries


def test_stale_temporaries_of_dead_writers_are_removed_live_ones_kept(tmp_path: Path) -> None:
    from semisup.core.io import output_set

    # A writer killed with SIGKILL mid-write: its temporary folder stays, unlocked.
    code = (
        "import os, sys; from semisup.core.io import output_set\n"
        f"with output_set({str(tmp_path / 'emb')!r}) as (t,):\n"
        "    t.mkdir(); (t / 'half.npz').write_bytes(b'x'); print('ready', flush=True); os.kill(os.getpid(), 9)\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True)
    stale = list(tmp_path.glob(".emb.*.tmp"))
    assert len(stale) == 1
    # A living writer of the same output (another experiment of the queue, say) holds its folder locked.
    live = subprocess.Popen(
        [sys.executable, "-c", code.replace("os.kill(os.getpid(), 9)", "sys.stdin.read()")],
        cwd=ROOT,
        env=ENV,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert live.stdout.readline().strip() == "ready"
        with output_set(tmp_path / "emb") as (t,):
            t.mkdir()
            (t / "labeled.npz").write_bytes(b"ok")
        left = sorted(p.name for p in tmp_path.glob(".emb.*.tmp"))
        assert stale[0].name not in left and len(left) == 1  # the dead one removed, the live one kept
    finally:
        live.kill()
        live.wait()
    assert (tmp_path / "emb" / "labeled.npz").read_bytes() == b"ok"


def test_full_disk_mid_write_is_one_line_and_the_old_output_stays(tmp_path: Path) -> None:
    from semisup.core.errors import FaultError
    from semisup.core.io import output_set

    with tmpfs(tmp_path / "small") as out:
        (out / "x").mkdir()
        (out / "x" / "old.bin").write_bytes(b"old")
        with (
            pytest.raises(FaultError, match=r"x: no space left on device: free some space"),
            output_set(out / "x") as (t,),
        ):
            t.mkdir()
            (t / "big.bin").write_bytes(b"\0" * 2 * 2**20)  # 2 MiB on a 1 MiB file system
        assert _files(out) == {"x/old.bin": b"old"}


@pytest.mark.parametrize("required", ["", "1"])
def test_a_root_test_that_cannot_mount_skips_or_fails_under_ci(tmp_path: Path, required: str) -> None:
    # A `mount` that refuses, first on PATH, as in a container without CAP_SYS_ADMIN.
    (tmp_path / "bin").mkdir()
    fake = tmp_path / "bin" / "mount"
    fake.write_text("#!/bin/sh\necho 'mount: permission denied' >&2\nexit 32\n")
    fake.chmod(0o755)
    test = "tests/test_faults.py::test_full_disk_mid_write_is_one_line_and_the_old_output_stays"
    env = ENV | {"PATH": f"{tmp_path / 'bin'}{os.pathsep}{ENV['PATH']}", REQUIRE_ROOT: required}
    cmd = [sys.executable, "-m", "pytest", "-q", "-rsf", "-p", "no:cacheprovider", test]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    last = proc.stdout.strip().splitlines()[-1]
    if not required:
        assert proc.returncode == 0 and "1 skipped" in last, proc.stdout[-2000:]
    else:
        assert proc.returncode == 1 and "1 failed" in last, proc.stdout[-2000:]
        # As root the refused mount is named; elsewhere, root itself is missing.
        why = (
            "cannot mount a tmpfs here (mount: permission denied): "
            if os.geteuid() == 0
            else "mounting a tmpfs "
        )
        assert re.search(
            f"root-only fault test did not run: {re.escape(why)}.*needs root "
            r"\(SEMISUP_REQUIRE_ROOT_TESTS=1: CI must run it\)",
            proc.stdout,
        ), proc.stdout[-2000:]


def test_scratch_file_takes_its_space_up_front_and_leftovers_go(tmp_path: Path) -> None:
    """The shard stage's decoded-pixel file: a full disk is one line before decoding, never a SIGBUS
    of a memory map; a killed run's file is removed by the next run."""
    from semisup.core.errors import FaultError
    from semisup.core.io import scratch_file

    with tmpfs(tmp_path / "small") as fs:
        with (
            pytest.raises(
                FaultError, match=r"small \(the decoded images, 2\.0 MiB\): no space left on device"
            ),
            scratch_file(fs, "shards-pixels", 2 * 2**20, "the decoded images"),
        ):
            pytest.fail("2 MiB allocated on a 1 MiB file system")
        assert list(fs.iterdir()) == []
    code = (
        "import os; from semisup.core.io import scratch_file\n"
        f"with scratch_file({str(tmp_path)!r}, 'shards-pixels', 4096, 'x') as f:\n"
        "    os.kill(os.getpid(), 9)\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True)
    stale = list(tmp_path.glob(".shards-pixels.*.tmp"))
    assert len(stale) == 1 and stale[0].stat().st_size == 4096
    with scratch_file(tmp_path, "shards-pixels", 10, "x") as path:
        assert list(tmp_path.glob(".shards-pixels.*.tmp")) == [path]  # the killed run's file removed
    assert not list(tmp_path.glob(".shards-pixels.*"))


def test_tensorflow_write_faults_are_one_line() -> None:
    from semisup.core.errors import fault_message

    class ResourceExhaustedError(Exception):  # what TF's C++ file system raises, by name and message
        pass

    msg = fault_message(ResourceExhaustedError("/data/shards/x.tfrecord; No space left on device"))
    assert (
        str(msg)
        == "/data/shards/x.tfrecord: no space left on device: free some space (or write elsewhere), then rerun"
    )
    assert fault_message(ResourceExhaustedError("OOM when allocating tensor")) is None  # memory: a real error


# --- fail before compute -------------------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "ok"), [(-1, False), (0, True), (2**32 - 1, True), (2**32, False)])
def test_seed_range(seed: int, ok: bool) -> None:
    from semisup.config import parse_params
    from semisup.core.errors import UserError

    if ok:
        assert parse_params({"seed": seed}).seed == seed
    else:
        with pytest.raises(UserError, match=rf"seed: {seed} is out of range"):
            parse_params({"seed": seed})


def test_encoder_weights_match_keras() -> None:
    from semisup.config import EncoderParams
    from semisup.model.encoder import get_encoder
    from semisup.training.preflight import encoder_weights

    for shape, enc in [
        ((32, 32, 3), EncoderParams(filters=8, embedding_dim=16)),
        ((96, 96, 3), EncoderParams()),
    ]:
        model = get_encoder(shape, filters=enc.filters, embedding_dim=enc.embedding_dim)
        assert encoder_weights(shape, enc) == model.count_params()


@pytest.mark.slow
def test_pretrain_refuses_a_batch_over_the_split_and_a_stale_manifest_before_training(workspace, tmp_path):
    params, src, _ = workspace
    # A labeled batch or k over the labeled subset is fitted to it (tests/test_few_labels.py); an
    # unlabeled batch stays the recipe's, and one over the unlabeled split is refused.
    big = write_params(tmp_path / "k.yaml", TINY | {"methods.paws.unlabeled_batch": 5000})
    proc = run_stage("pretrain", big, src, tmp_path)
    line = assert_one_line_error(
        proc, "methods.paws.unlabeled_batch: 5000 is larger than the unlabeled split"
    )
    assert "epoch" not in proc.stderr, line  # no training step ran
    other = write_params(tmp_path / "s.yaml", TINY | {"data.image_size": 40})
    assert_one_line_error(
        run_stage("pretrain", other, src, tmp_path), "asks for [40, 40, 3]", "dvc repro shard"
    )
    assert not list(tmp_path.rglob("*.keras")) and not (tmp_path / "metrics").exists()


# --- integrity and foreign artefacts -------------------------------------------------------------------


def _flip_inside_a_record(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[12 + 100] ^= (
        0x01  # inside the first record's payload: same size and headers, a content check sees it
    )
    path.write_bytes(bytes(data))


@pytest.mark.slow
@pytest.mark.parametrize("limit", [None, 1024])
def test_flipped_byte_is_named_by_file_at_any_size(workspace, tmp_path: Path, limit) -> None:
    """None: sha256 (the default at every size); 1024: a set over a hash limit is checked by its CRCs."""
    from semisup.core.errors import DataError
    from semisup.data import readers

    params, src, _ = workspace
    shards = shutil.copytree(src / "shards", tmp_path / "shards")
    manifest = json.loads((shards / "manifest.json").read_text())
    assert sum(s["bytes"] for s in manifest["shards"]) > 1024 * 100  # far above the test's limit
    victim = shards / manifest["shards"][-1]["file"]
    _flip_inside_a_record(victim)
    what = "sha256 differs" if limit is None else "record 0 fails its CRC32C check"
    with pytest.raises(DataError, match=rf"{victim}: .*{what}.*dvc repro -f shard"):
        readers.verify_shards(shards, hash_limit_bytes=limit)


def test_a_passed_check_is_remembered_across_processes_until_a_file_changes(tmp_path, monkeypatch) -> None:
    from semisup.core.errors import DataError
    from semisup.data import readers
    from semisup.data.base import SourceSplits, SplitStream
    from semisup.data.shards import write_shards

    monkeypatch.setenv("SEMISUP_CACHE_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    images = [(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), i % 2) for i in range(40)]

    def stream(labeled: bool) -> SplitStream:
        return SplitStream(40, lambda: iter([(x, y if labeled else -1) for x, y in images]))

    source = SourceSplits(
        "t", ("a", "b"), {"unlabeled": stream(False), "labeled": stream(True), "test": stream(True)}
    )
    shards = tmp_path / "shards"
    write_shards(shards, source, image_size=32, num_shards=2, seed=0, data_params={}, progress=False)
    readers.verify_shards(shards)
    readers._verified.clear()  # a new process: only the stamp under SEMISUP_CACHE_DIR remembers

    def no_hashing(path):
        raise AssertionError("a remembered, untouched shard set is not hashed again")

    monkeypatch.setattr(readers, "sha256_file", no_hashing)
    readers.verify_shards(shards)
    monkeypatch.undo()
    monkeypatch.setenv("SEMISUP_CACHE_DIR", str(tmp_path / "cache"))
    readers._verified.clear()
    victim = shards / "test-00000-of-00001.tfrecord"
    _flip_inside_a_record(victim)  # a write: its ctime changes, so the stamp no longer matches
    with pytest.raises(DataError, match=rf"{victim}: sha256 differs"):
        readers.verify_shards(shards)


@pytest.mark.slow
def test_embed_names_a_corrupt_shard_and_writes_nothing(workspace, tmp_path: Path) -> None:
    params, src, _ = workspace
    for part in ("shards", "models"):
        shutil.copytree(src / part, tmp_path / part)
    manifest = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    victim = tmp_path / "shards" / next(s["file"] for s in manifest["shards"] if s["split"] == "test")
    _flip_inside_a_record(victim)
    proc = run_stage("embed", params, tmp_path, tmp_path)
    assert_one_line_error(proc, str(victim), "sha256 differs")
    assert not (tmp_path / "embeddings").exists()


def _foreign_models(tmp_path: Path, good: Path) -> dict[str, tuple[Path, str]]:
    import keras

    made = {}
    (tmp_path / "empty.keras").write_bytes(b"")
    made["empty"] = (tmp_path / "empty.keras", "not a .keras model file")
    data = good.read_bytes()
    (tmp_path / "cut.keras").write_bytes(data[: len(data) // 2])
    made["truncated"] = (tmp_path / "cut.keras", "not a .keras model file")
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Flatten()(keras.layers.Lambda(lambda t: t * 2)(inputs))
    keras.Model(inputs, keras.layers.Dense(4)(x)).save(tmp_path / "lambda.keras")
    made["lambda"] = (tmp_path / "lambda.keras", "Lambda layer")
    from semisup.model.encoder import get_encoder

    get_encoder((40, 40, 3), filters=8, embedding_dim=16).save(tmp_path / "shape.keras")
    made["input shape"] = (
        tmp_path / "shape.keras",
        "takes images of shape (40, 40, 3), the shards hold (32, 32, 3)",
    )
    x = keras.layers.Conv2D(8, 3)(inputs)
    x = keras.layers.Dropout(0.1)(keras.layers.Flatten()(x))
    keras.Model(inputs, keras.layers.Dense(16)(x)).save(tmp_path / "extra.keras")
    made["extra layer"] = (tmp_path / "extra.keras", "Dropout")
    return made


@pytest.mark.slow
def test_foreign_models_are_refused_with_one_line(workspace, tmp_path: Path) -> None:
    from semisup.core.errors import DataError
    from semisup.model.encoder import load_encoder

    _, src, _ = workspace
    good = src / "models" / RUN / "encoder.keras"
    assert load_encoder(good, image_shape=(32, 32, 3), rerun="rerun").output_shape == (None, 16)
    for name, (path, what) in _foreign_models(tmp_path, good).items():
        with pytest.raises(DataError) as info:
            load_encoder(path, image_shape=(32, 32, 3), rerun="rerun `dvc repro -f pretrain@paws`")
        message = str(info.value)
        assert message.startswith(f"{path}: ") and what in message, (name, message)
        assert "\n" not in message and message.endswith("rerun `dvc repro -f pretrain@paws`"), name


@pytest.mark.slow
def test_embed_stage_refuses_a_truncated_model(workspace, tmp_path: Path) -> None:
    params, src, _ = workspace
    shutil.copytree(src / "shards", tmp_path / "shards")
    model = tmp_path / "models" / RUN / "encoder.keras"
    model.parent.mkdir(parents=True)
    model.write_bytes((src / "models" / RUN / "encoder.keras").read_bytes()[:1000])
    proc = run_stage("embed", params, tmp_path, tmp_path)
    assert_one_line_error(proc, str(model), "not a .keras model file", f"dvc repro -f pretrain@{RUN}")
    assert not (tmp_path / "embeddings").exists()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["fault", "bug"])
def test_no_shutdown_noise_after_a_failure_with_dvclive_open(tmp_path: Path, kind: str) -> None:
    """dvclive's dulwich objects, finalised at shutdown, printed `ImportError: sys.meta_path is None`."""
    code = f"""
import errno, sys
from stages.common import user_errors

@user_errors
def main():
    from dvclive import Live
    live = Live({str(tmp_path / "train")!r}, dvcyaml=False, save_dvc_exp=False)
    live.log_metric("x", 1.0)
    if {kind!r} == "fault":
        raise OSError(errno.EROFS, "Read-only file system", {str(tmp_path / "models")!r})
    raise RuntimeError("a bug of ours")

main()
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert "meta_path" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr
    if kind == "fault":
        assert_one_line_error(proc, f"{tmp_path / 'models'}: read-only file system")
    else:
        assert proc.returncode == 1 and proc.stderr.rstrip().endswith("RuntimeError: a bug of ours")


@pytest.mark.parametrize(
    ("sig", "status", "word"), [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]
)
def test_a_signal_that_lands_in_a_finaliser_still_stops_the_stage(sig: int, status: int, word: str) -> None:
    """Its handler ran inside a `__del__` (TensorFlow's garbage collector of traced functions runs them at
    any step): Python printed "Exception ignored", dropped the interrupt, and the run trained to its end."""
    code = f"""
import signal, time
from stages.common import user_errors

class Finalised:
    def __del__(self):
        signal.raise_signal({int(sig)})  # its handler runs here, inside the finaliser
        sum(range(100))

@user_errors
def main():
    Finalised()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        pass
    print("ran to the end")

main()
"""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
        # As from a terminal (a suite started in the background passes SIGINT on ignored).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert "ran to the end" not in proc.stdout
    assert proc.returncode == status, proc.stderr
    assert proc.stderr == f"error: {word}: nothing was half-written; run it again (a training resumes)\n"
