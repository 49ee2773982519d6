"""A quiet start: a stage prints its own lines (and progress), not TensorFlow's native start-up lines."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stages import console
from stages.console import done, elapsed, filter_noise, is_noise
from tests.support import DATA, ROOT, write_params

NOISE = re.compile(r"^[IWE]0000 |absl::InitializeLog", re.M)

# Verbatim from a CPU machine (TF 2.21): what every stage used to print, twice.
STARTUP = """\
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1795985488.991594    4132 port.cc:153] oneDNN custom operations are on. You may see slightly \
different numerical results due to floating-point round-off errors from different computation orders.
I0000 00:00:1795985488.992110    4132 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU \
will not be used.
I0000 00:00:1795985489.040057    4132 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use \
available CPU instructions in performance-critical operations.
To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow with the \
appropriate compiler flags.
E0000 00:00:1795985492.580348    4132 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: \
Failed call to cuInit: UNKNOWN ERROR (303)
"""


def _env(**extra: str) -> dict[str, str]:
    """A user's environment: without the suite's log level and XLA cache (tests/conftest.py)."""
    unset = ("TF_CPP_MIN_LOG_LEVEL", "SEMISUP_VERBOSE", "TF_XLA_FLAGS")
    return {k: v for k, v in os.environ.items() if k not in unset} | extra


@pytest.mark.parametrize(
    ("env", "level"),
    [
        ({}, "2"),
        ({"TF_XLA_FLAGS": "--tf_xla_persistent_cache_directory=/c"}, "3"),  # its load lines are not errors
        ({"TF_XLA_FLAGS": "--tf_xla_persistent_cache_directory=/c", "TF_CPP_MIN_LOG_LEVEL": "0"}, "0"),
        ({"TF_XLA_FLAGS": "--tf_xla_auto_jit=2"}, "2"),
        ({"TF_CONFIG": "{}"}, "3"),  # a cluster's worker: a lost peer is the stage's one line
    ],
)
def test_native_error_lines_are_left_out_where_they_are_not_errors(monkeypatch, env, level):
    for key in ("TF_XLA_FLAGS", "TF_CPP_MIN_LOG_LEVEL", "TF_CONFIG"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(console, "VERBOSE", False)
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))  # the import hook, if installed, goes too
    console.install()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == level


def test_startup_lines_are_noise_and_other_lines_are_kept():
    kept = "error: params.yaml: data.source: 'stl11' is not one of stl10, digits, folder\n"
    real = "E0000 00:00:1795985492.580348    4132 cuda_executor.cc:12] out of memory allocating 80 GiB\n"
    warning = "/x.py:3: UserWarning: something a user should see\n"
    assert filter_noise(STARTUP) == ""
    assert filter_noise(STARTUP + kept + real + warning) == kept + real + warning
    assert not is_noise("WARNING: the stage's own warning")


def test_summary_line_says_how_long(capsys, monkeypatch):
    monkeypatch.setattr(console, "STARTED", time.monotonic() - 8.24)  # this process started 8.24 s ago
    done("paws: trained 25 epochs -> models/paws/encoder.keras")
    assert re.fullmatch(
        r"paws: trained 25 epochs -> models/paws/encoder\.keras \[8\.[23] s\]\n", capsys.readouterr().out
    )
    assert (elapsed(8.24), elapsed(125), elapsed(3780)) == ("8.2 s", "2 min 05 s", "1 h 03 min")


@pytest.mark.slow
def test_tensorflow_import_is_quiet_unless_verbose():
    code = "import stages, tensorflow as tf; print(float(tf.reduce_sum(tf.ones(3))))"
    quiet = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(), capture_output=True, text=True)
    assert quiet.returncode == 0 and quiet.stdout == "3.0\n", quiet.stderr
    assert not NOISE.search(quiet.stderr), quiet.stderr
    loud = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=_env(SEMISUP_VERBOSE="1"), capture_output=True, text=True
    )
    assert loud.returncode == 0 and NOISE.search(loud.stderr), loud.stderr  # TF's lines are there again


def _marks(steps: int) -> list[int]:
    """The steps that end a tenth of an epoch: ceil(k * steps / 10), k = 1..10, without repeats."""
    return sorted({math.ceil(k * steps / 10) for k in range(1, 11)})


@pytest.mark.slow
def test_pretrain_stage_without_terminal_prints_progress_every_tenth_and_no_startup_lines(
    tmp_path, digits_shards
):
    params = write_params(
        tmp_path / "params.yaml",
        DATA
        | {
            "train.epochs": 2,
            "train.shuffle_buffer": 500,
            "encoder.filters": 8,
            "knn.monitor_every": 0,
            "methods.paws.unlabeled_batch": 64,
            "methods.paws.labeled_batch": 50,
        },
    )
    shards = digits_shards  # DATA's (tests/conftest.py)
    cmd = [sys.executable, "-m", "stages.pretrain", "--run", "paws", "--params", str(params)]
    cmd += ["--shards", str(shards), "--models", str(tmp_path / "m"), "--metrics", str(tmp_path / "x")]
    cmd += ["--checkpoints", str(tmp_path / "ck")]
    # Epochs of a second: lift the 5 s spacing of lines (for people) to see the 10% cadence itself.
    env = _env(SEMISUP_PROGRESS_MIN_SECONDS="0")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert not NOISE.search(proc.stderr + proc.stdout), proc.stderr
    steps = __import__("json").loads((shards / "manifest.json").read_text())["counts"]["unlabeled"] // 64
    lines = re.findall(r"^paws: step (\d+)/(\d+) \(\d+%\), loss \d+\.\d{4}", proc.stderr, re.M)
    assert {int(total) for _, total in lines} == {steps}
    # Every tenth of each of the 2 epochs (a minute never passes here), then the epoch's own line.
    assert [int(step) for step, _ in lines] == _marks(steps) * 2, proc.stderr
    assert len(re.findall(r"^paws epoch [12]/2: loss=", proc.stderr, re.M)) == 2
    # One start line: precision and devices.
    assert len(re.findall(r"^paws: \w+ precision, .* replica\(s\) on [CG]PU:0", proc.stderr, re.M)) == 1
    assert re.search(r"img/s, \d+s left$", proc.stderr, re.M)
    out = proc.stdout.strip().splitlines()
    assert re.fullmatch(rf"paws: trained 2 epochs -> {tmp_path}/m/paws/encoder\.keras \[[^\]]+\]", out[-1])
    assert Path(tmp_path / "m" / "paws" / "encoder.keras").exists()


@pytest.mark.slow  # two processes that start TensorFlow
def test_keras_optional_integrations_stay_out_of_a_commands_tensorflow_start():
    # Keras imports scikit-learn and matplotlib on its own import, for wrappers and plots no command uses:
    # a command's start leaves them out (about a quarter of the import's CPU, bench/startup.py), and the
    # commands that use them (the linear probe, the figures) still import them.
    code = (
        "import sys, stages, tensorflow, keras\n"
        "print(sorted(m for m in ('sklearn', 'matplotlib') if m in sys.modules))\n"
        "from keras.src.wrappers import fixes\n"
        "from keras.src.visualization import plot_image_gallery as gallery\n"
        "print(fixes.sklearn is None, gallery.plt is None)\n"
        "import sklearn.linear_model, matplotlib.pyplot\n"
        "print(sklearn.linear_model.LogisticRegression.__name__, matplotlib.pyplot.__name__)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["[]", "True True", "LogisticRegression matplotlib.pyplot"]
    # Without the commands' runtime, Keras imports them as usual: the hook is what leaves them out.
    plain = subprocess.run(
        [sys.executable, "-c", "import sys, tensorflow; print('sklearn' in sys.modules)"],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert plain.stdout.strip() == "True", plain.stderr
