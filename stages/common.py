"""What every stage shares: the commands' options (semisup/options.py) and exit statuses (semisup/runtime.py),
which `semisup` uses too."""

from __future__ import annotations

from semisup.options import load, params_option, run_option  # noqa: F401
from semisup.runtime import Terminated, checkpoint, one_line, user_errors  # noqa: F401
