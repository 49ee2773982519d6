"""What every stage shares: the commands' options (semisup/process/options.py) and exit statuses
(semisup/process/runtime.py), which `semisup` uses too."""

from __future__ import annotations

from semisup.process.options import load, params_option, run_option  # noqa: F401
from semisup.process.runtime import Terminated, checkpoint, one_line, user_errors  # noqa: F401
