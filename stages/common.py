"""What every stage shares: the commands' process runtime, semisup/runtime.py (which `semisup` uses too)."""

from __future__ import annotations

from semisup.runtime import (  # noqa: F401
    Terminated,
    load,
    one_line,
    params_option,
    run_option,
    user_errors,
)
