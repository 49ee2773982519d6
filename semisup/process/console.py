"""What a command prints (a stage, `semisup`): a quiet TensorFlow start, and a stage's one summary line at the
end (what it wrote, how long). Process runtime: the commands use it (semisup/process/runtime.py's `install()`
turns the quiet start on), the library's other modules never do.

`install()` (nothing happens on import) puts a one-shot import hook in place: when TensorFlow is first
imported, its native start-up lines (absl's "All log messages before absl::InitializeLog()", oneDNN,
CUDA stub and cuInit lines, written to fd 2 before Python logging applies and regardless of
TF_CPP_MIN_LOG_LEVEL) are filtered out of the process's stderr; every other line passes through. The
numerics are untouched (no TF_ENABLE_ONEDNN_OPTS). A worker of a cluster (TF_CONFIG) also leaves out
TensorFlow's native error lines (TF_CPP_MIN_LOG_LEVEL=3 where it is 2, the project's default): a lost peer
is reported by the stage's one line. So does a process with XLA's persistent compile cache on (TF_XLA_FLAGS
names --tf_xla_persistent_cache_directory, as `make test` sets it): every load of a cached program writes
E lines ("Error parsing text-format", "Target machine feature") that are not errors. SEMISUP_VERBOSE=1
turns all this off and shows TensorFlow's logs again (TF_CPP_MIN_LOG_LEVEL=0 unless set).
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

STARTED = time.monotonic()
VERBOSE = os.environ.get("SEMISUP_VERBOSE", "").strip().lower() not in ("", "0", "false", "no")

# TensorFlow's native start-up noise: absl's pre-initialisation banner, INFO/WARNING lines in absl's format
# (`I0000 00:00:1795985488.991594    4132 port.cc:153] ...`), the cuInit failure of a machine without a GPU
# (an E line that is not an error there), and the CPU-features line's continuation.
_BANNER = re.compile(r"^WARNING: All log messages before absl::InitializeLog\(\) is called")
_ABSL = re.compile(r"^([IWE])\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] (.*)")
_NOT_AN_ERROR = re.compile(
    r"cuInit|Unable to register cu(DNN|FFT|BLAS) factory|could not find cuda drivers", re.I
)
_CONTINUATION = re.compile(r"^To enable the following instructions:.*rebuild TensorFlow")


def is_noise(line: str) -> bool:
    """Whether `line` is one of TensorFlow's native start-up lines that a stage does not show."""
    if _BANNER.match(line) or _CONTINUATION.match(line):
        return True
    m = _ABSL.match(line)
    return m is not None and (m.group(1) in "IW" or bool(_NOT_AN_ERROR.search(m.group(2))))


def filter_noise(text: str) -> str:
    """`text` without its start-up noise lines (line endings kept)."""
    return "".join(line for line in text.splitlines(keepends=True) if not is_noise(line))


@contextlib.contextmanager
def quiet_fd2() -> Iterator[None]:
    """Send fd 2 to a temporary file for the block, then write back what is not noise.

    A file, not a pipe: nothing has to read while TensorFlow writes, so a chatty import cannot block.
    """
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 (a daemon): nothing to keep quiet
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = filter_noise(tmp.read().decode("utf-8", errors="replace"))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


class _QuietTensorFlow(importlib.abc.MetaPathFinder):
    """Wraps the first `import tensorflow` (and its device discovery) in `quiet_fd2`."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != "tensorflow":
            return None
        sys.meta_path.remove(self)  # one shot: the real finders locate TensorFlow
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader, exec_module = spec.loader, spec.loader.exec_module

        def quiet_exec(module: Any) -> None:
            try:
                with quiet_fd2():
                    exec_module(module)
                    # The cuInit line comes when devices are first listed: list them inside the filter.
                    module.config.list_physical_devices()
            finally:
                del loader.exec_module  # back to the class's method

        loader.exec_module = quiet_exec
        return spec


# Keras imports these on its own import to offer integrations no command uses (its scikit-learn wrappers, its
# image-gallery plots): about a quarter of the CPU of every `import tensorflow` (bench/startup.py). Refused
# to Keras's modules alone; the commands that use them (the linear probe, the figures) import them as usual.
_KERAS_EXTRAS = ("matplotlib", "sklearn")
_KERAS_EXTRA_IMPORTERS = ("keras.src.visualization", "keras.src.wrappers")


class _LeanKeras(importlib.abc.MetaPathFinder):
    """Refuses `matplotlib` and `sklearn` to Keras's optional integrations (Keras then leaves them out, as
    on a machine without them); every other importer gets them."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname.partition(".")[0] not in _KERAS_EXTRAS:
            return None
        frame = sys._getframe(1)
        while frame is not None:
            if frame.f_globals.get("__name__", "").startswith(_KERAS_EXTRA_IMPORTERS):
                raise ModuleNotFoundError(f"{fullname} is not offered to Keras's optional integrations")
            frame = frame.f_back
        return None


def xla_cache_on() -> bool:
    """Whether TF_XLA_FLAGS turns on XLA's persistent compile cache (a directory of compiled programs that
    later processes load instead of compiling again: the same programs, so the same numbers)."""
    return "--tf_xla_persistent_cache_directory=" in os.environ.get("TF_XLA_FLAGS", "")


def install() -> None:
    """Quiet TensorFlow's start unless SEMISUP_VERBOSE is set, and keep Keras's optional integrations out of
    it (idempotent; no-op once TF is imported)."""
    if not any(isinstance(f, _LeanKeras) for f in sys.meta_path):
        sys.meta_path.insert(0, _LeanKeras())
    if VERBOSE:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if os.environ["TF_CPP_MIN_LOG_LEVEL"] == "2" and (os.environ.get("TF_CONFIG") or xla_cache_on()):
        # A worker of a cluster: when a peer dies, TensorFlow's runtime writes its own error lines about
        # it (heartbeats, aborted collectives) before the stage's one line says the same; keep them out.
        # XLA's persistent cache: its loads write E lines about a working cache; keep them out too.
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    if "tensorflow" in sys.modules or any(isinstance(f, _QuietTensorFlow) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietTensorFlow())


def elapsed(seconds: float) -> str:
    """A duration for people: 8.2 s, 2 min 05 s, 1 h 03 min."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def done(what: str) -> None:
    """The stage's last line on stdout: what it wrote, and how long the process took (TF start included)."""
    print(f"{what} [{elapsed(time.monotonic() - STARTED)}]", flush=True)
