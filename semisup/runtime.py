"""What every command shares (the stages and `semisup`): quiet TensorFlow logs, params loading, user errors
without tracebacks, Ctrl-C and SIGTERM as one line. The commands' process runtime: the library's other
modules never import it."""

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

# First, before anything imports TensorFlow: its native start-up lines stay off the terminal.
from semisup import console  # noqa: F401

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from semisup.config import Params, load_params  # noqa: E402
from semisup.errors import UserError, fault_message  # noqa: E402

params_option = click.option(
    "--params",
    "params_path",
    default="params.yaml",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="The params file.",
)


run_option = click.option(
    "--run",
    "run",
    required=True,
    help="The run: METHOD-BUDGET-SEED as in its stage names (paws-25-0, paws-all-0), or METHOD alone "
    "(every labeled image, params.yaml's seed); METHOD is a method or a configuration (a section of "
    "params.yaml's methods). Reads and writes under this name.",
)


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


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, `timeout`, a job scheduler), raised like Ctrl-C so that it unwinds the same way."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def _redeliver(unraisable: Any) -> None:
    """sys.unraisablehook: an interrupt raised where Python cannot propagate it is delivered again.

    A signal's handler runs wherever the main thread is, finalisers included (TensorFlow's garbage
    collector of traced functions runs `__del__` at any step). Python prints an exception raised there as
    "Exception ignored" and drops it: the Ctrl-C or SIGTERM was lost and the run trained on to the end.
    The signal is sent again, from another thread a moment later (sent from here, its handler would run in
    this hook and be dropped the same way), and lands in the code that runs once the finaliser returns."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
        signum = signal.SIGTERM if isinstance(unraisable.exc_value, Terminated) else signal.SIGINT
        again = threading.Timer(0.05, os.kill, (os.getpid(), signum))
        again.daemon = True
        again.start()
    else:
        sys.__unraisablehook__(unraisable)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a fault of the user or the machine into one line on stderr and exit status 2; Ctrl-C and
    SIGTERM into one line and the shell's status for the signal (128 + 2, 128 + 15)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        status = 2
        if threading.current_thread() is threading.main_thread():
            if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
                signal.signal(signal.SIGTERM, _terminate)
            if sys.unraisablehook is sys.__unraisablehook__:  # a test runner's own stays
                sys.unraisablehook = _redeliver
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt as exc:
            how, status = ("terminated", 143) if isinstance(exc, Terminated) else ("interrupted", 130)
            message = f"{how}: nothing was half-written; run it again (a training resumes)"
        except Exception as exc:
            message = one_line(exc)
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


atexit.register(_release_failed_frames)


def load(params_path: str) -> Params:
    """Load and validate the params file (a UserError on any mistake)."""
    return load_params(params_path)
