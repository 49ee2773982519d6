"""The commands' process runtime (every stage and `semisup`), switched on by each command's entry with
`install()`: TensorFlow's quiet start (semisup/process/console.py), SIGTERM unwound like Ctrl-C, an interrupt
that a finaliser swallowed raised again at the next safe point (`checkpoint()`, within BOUND_S), and the exit
statuses: 2 and one line for a fault of the user or the machine, 130 / 143 and one line for Ctrl-C / SIGTERM.

Nothing here happens on import. The library's modules never import it: their loops take callbacks (on_step,
on_batch), and the commands pass `checkpoint` into them.
"""

from __future__ import annotations

import atexit
import functools
import gc
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

import click

from semisup.core.errors import UserError, fault_message
from semisup.process import console

USER_FAULT = 2  # a fault of the user or the machine: one line `error: ...`
INTERRUPTED = 130  # Ctrl-C: the shell's status for SIGINT (128 + 2)
TERMINATED = 143  # SIGTERM (`kill`, `timeout`, a job scheduler): 128 + 15
BOUND_S = 5.0  # an interrupt a finaliser swallowed ends the process this long after, safe point or not


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, `timeout`, a job scheduler), raised like Ctrl-C so that it unwinds the same way."""


_installed = False
_lock = threading.Lock()
_pending: type[KeyboardInterrupt] | None = None  # an interrupt a finaliser swallowed, not raised again yet
_deadline: threading.Timer | None = None


def install() -> None:
    """Switch the runtime on for this process (idempotent): the quiet TensorFlow start, SIGTERM raised as
    `Terminated`, interrupts swallowed by finalisers recorded for `checkpoint()`, failed frames freed at exit.

    Signals belong to the main thread: called from another, it installs the quiet start only. A handler or
    an unraisable hook installed before (a test runner's, a launcher's) stays.
    """
    global _installed
    console.install()
    if _installed or threading.current_thread() is not threading.main_thread():
        return
    _installed = True
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate)
    if sys.unraisablehook is sys.__unraisablehook__:
        sys.unraisablehook = _record_dropped
    atexit.register(_release_failed_frames)


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def _record_dropped(unraisable: Any) -> None:
    """sys.unraisablehook: an interrupt raised where Python cannot propagate it is recorded, not lost.

    A signal's handler runs wherever the main thread is, finalisers included (TensorFlow's garbage
    collector of traced functions runs `__del__` at any step). Python hands an exception raised there to
    this hook and drops it: the Ctrl-C or SIGTERM would be lost and the run would train on to its end. It
    is recorded instead; the next `checkpoint()` (a step or batch boundary) raises it, and if none comes
    within BOUND_S the process ends with the interrupt's line and status all the same.
    """
    global _pending, _deadline
    if not isinstance(unraisable.exc_value, KeyboardInterrupt):
        sys.__unraisablehook__(unraisable)
        return
    with _lock:
        if _pending is not None:  # the first one counts; its deadline runs
            return
        _pending = type(unraisable.exc_value)
        _deadline = threading.Timer(BOUND_S, _end_unchecked)
        _deadline.daemon = True
        _deadline.start()


def _take_pending() -> type[KeyboardInterrupt] | None:
    """The recorded interrupt (cleared, its deadline cancelled), or None."""
    global _pending, _deadline
    with _lock:
        pending, _pending = _pending, None
        if _deadline is not None:
            _deadline.cancel()
            _deadline = None
    return pending


def checkpoint() -> None:
    """A safe point (a training step or an embedding batch done): raise the interrupt that a finaliser
    swallowed since, as if it had landed here. Cheap; does nothing when none is pending."""
    if _pending is not None:
        pending = _take_pending()
        if pending is not None:
            raise pending


def _end_unchecked() -> None:
    """The deadline of a recorded interrupt: no safe point came within BOUND_S, so the process ends here,
    with the interrupt's line and status. Outputs are written as one set (semisup/core/io.py): none is
    half-written, and the next run removes the temporary folder."""
    with _lock:  # held to the end: a checkpoint that comes now waits, so the line is written once
        if _pending is None:
            return
        message, status = interrupt_line(_pending())
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os.write(2, f"error: {message}\n".encode())
        os._exit(status)


def interrupt_line(exc: KeyboardInterrupt) -> tuple[str, int]:
    """The one line (without `error: `) and the exit status of Ctrl-C or SIGTERM."""
    how, status = ("terminated", TERMINATED) if isinstance(exc, Terminated) else ("interrupted", INTERRUPTED)
    return f"{how}: nothing was half-written; run it again (a training resumes)", status


def one_line(exc: BaseException) -> str | None:
    """The one-line message of a fault the user or the machine caused; None for a bug of ours."""
    if isinstance(exc, UserError):
        return str(exc)
    fault = fault_message(exc)
    if fault is not None:
        return str(fault)
    if type(exc).__name__ == "DataLossError":  # TensorFlow read a record whose CRC does not match
        return (
            f"{str(exc).splitlines()[0]}: a shard changed after it was verified (corrupted disk or a "
            "concurrent write): run the shard stage again (dvc repro -f shard)"
        )
    return None


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A command's exit statuses: a fault of the user or the machine becomes one line on stderr and status
    2; Ctrl-C and SIGTERM one line and 130 / 143 (the shell's 128 + signal); a bug of ours its traceback.
    It installs nothing: the command's entry calls `install()`."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt as exc:
            _take_pending()  # this one is the interrupt: no deadline may print it again
            message, status = interrupt_line(exc)
        except Exception as exc:
            message, status = one_line(exc), USER_FAULT
            if message is None:
                raise
        # Exit outside the except block: the exception's traceback keeps the failed stage's frames alive,
        # and with them objects (dvclive's dulwich repo, TF resources) that would otherwise be finalised
        # at interpreter shutdown, once imports no longer work (`ImportError: sys.meta_path is None`).
        gc.collect()
        click.echo(f"error: {message}", err=True)
        sys.exit(status)

    return wrapper


def _release_failed_frames() -> None:
    """At exit after a traceback, free the failed frames while imports still work.

    Python keeps the uncaught exception in sys.last_* until the modules are torn down; the frames hold
    dvclive's dulwich repository, whose finalisers then print `ImportError: sys.meta_path is None`.
    """
    for name in ("last_exc", "last_traceback", "last_value", "last_type"):
        if hasattr(sys, name):
            setattr(sys, name, None)
    gc.collect()
