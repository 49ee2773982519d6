"""What every stage shares: quiet TensorFlow logs, params loading, user errors without tracebacks."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any

import click

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from semisup.config import Params, load_params  # noqa: E402
from semisup.errors import UserError  # noqa: E402

params_option = click.option(
    "--params",
    "params_path",
    default="params.yaml",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="The params file.",
)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a UserError into a one-line message on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)

    return wrapper


def load(params_path: str) -> Params:
    """Load and validate the params file (a UserError on any mistake)."""
    return load_params(params_path)
