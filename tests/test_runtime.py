"""The commands' process runtime (semisup/process/runtime.py): an interrupt that a finaliser swallowed is
raised at the next safe point, and the process ends within BOUND_S when none comes. (tests/test_faults.py
holds the stage-level interrupt tests.)"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from semisup.process import runtime
from tests.support import ENV, ROOT

# A stage's shape: a finaliser swallows the signal, then a loop of steps (each a safe point, or none).
SCRIPT = """
import signal, time
from stages.common import checkpoint, user_errors

class Finalised:
    def __del__(self):
        signal.raise_signal({sig})  # its handler runs here, inside the finaliser
        sum(range(100))

@user_errors
def main():
    started = time.monotonic()
    Finalised()
    steps = 0
    try:
        while time.monotonic() < started + 20:
            time.sleep(0.01)  # a step
            steps += 1
            if {safe_points}:
                checkpoint()
    finally:
        print(f"stopped after {{steps}} steps", flush=True)
    print("ran to the end")

main()
"""


def _run(sig: int, safe_points: bool) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(sig=int(sig), safe_points=safe_points)],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as from a terminal
    )
    return proc, time.monotonic() - started


@pytest.mark.parametrize(
    ("sig", "status", "word"), [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]
)
def test_a_swallowed_interrupt_is_raised_at_the_next_safe_point(sig: int, status: int, word: str) -> None:
    proc, _ = _run(sig, safe_points=True)
    assert proc.returncode == status, proc.stderr
    assert proc.stderr == f"error: {word}: nothing was half-written; run it again (a training resumes)\n"
    # Raised by the first step's checkpoint, through the loop's `finally` (the stage unwinds as usual).
    assert proc.stdout == "stopped after 1 steps\n"


def test_without_a_safe_point_the_process_ends_within_the_bound() -> None:
    proc, seconds = _run(signal.SIGTERM, safe_points=False)
    assert proc.returncode == 143, proc.stderr
    assert proc.stderr == "error: terminated: nothing was half-written; run it again (a training resumes)\n"
    assert proc.stdout == ""  # ended from the deadline: no `finally`, no "ran to the end"
    assert runtime.BOUND_S <= seconds < runtime.BOUND_S + 10, seconds


def test_checkpoint_raises_a_recorded_interrupt_once(monkeypatch: pytest.MonkeyPatch) -> None:
    ended = []
    monkeypatch.setattr(runtime, "_end_unchecked", lambda: ended.append(True))
    monkeypatch.setattr(runtime, "BOUND_S", 0.2)
    runtime.checkpoint()  # nothing pending: nothing happens
    runtime._record_dropped(SimpleNamespace(exc_value=runtime.Terminated()))
    runtime._record_dropped(SimpleNamespace(exc_value=KeyboardInterrupt()))  # the first one counts
    with pytest.raises(runtime.Terminated):
        runtime.checkpoint()
    runtime.checkpoint()  # raised once
    time.sleep(0.4)
    assert ended == []  # the deadline was cancelled by the checkpoint


def test_the_deadline_ends_an_unchecked_interrupt(monkeypatch: pytest.MonkeyPatch) -> None:
    ended = []
    monkeypatch.setattr(runtime, "_end_unchecked", lambda: ended.append(runtime._pending))
    monkeypatch.setattr(runtime, "BOUND_S", 0.1)
    runtime._record_dropped(SimpleNamespace(exc_value=KeyboardInterrupt()))
    try:
        deadline = time.monotonic() + 5
        while not ended and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ended == [KeyboardInterrupt]
    finally:
        runtime._take_pending()
    assert runtime.interrupt_line(KeyboardInterrupt()) == (
        "interrupted: nothing was half-written; run it again (a training resumes)",
        130,
    )


def test_other_unraisable_exceptions_are_printed_as_python_does() -> None:
    code = "import stages\nclass B:\n    def __del__(self): raise ValueError('a bug in a finaliser')\nB()\n"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0
    assert re.search(r"Exception ignored .*\n(.*\n)*ValueError: a bug in a finaliser", proc.stderr), (
        proc.stderr
    )
