"""semisup/process/console.py under its old name: `stages.console` is that very module (one VERBOSE, one hook)."""

import sys

from semisup.process import console

sys.modules[__name__] = console
