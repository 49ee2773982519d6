"""Errors that mean "the user asked for something we cannot do", reported without a traceback.

`fault_message` turns what the machine raises when it cannot write (disk full, read-only file system,
no permission), from Python or from TensorFlow's own file system, into one such error.
"""

from __future__ import annotations

import errno
import os


class UserError(Exception):
    """A mistake in params, paths or data that the user can fix; the message names the fix."""


class DataError(UserError):
    """Input data that is missing, truncated or corrupted."""


class FaultError(UserError):
    """The machine refused a write: no space, a read-only file system, no permission."""


_ERRNO_FIX = {
    errno.ENOSPC: ("no space left on device", "free some space (or write elsewhere), then rerun"),
    errno.EDQUOT: ("disk quota exceeded", "free some space (or write elsewhere), then rerun"),
    errno.EROFS: (
        "read-only file system",
        "write to a writable folder (or remount it read-write), then rerun",
    ),
    errno.EACCES: ("permission denied", "give this user access to it (or write elsewhere), then rerun"),
    errno.EPERM: ("operation not permitted", "give this user access to it (or write elsewhere), then rerun"),
}


def fault_errno(exc: BaseException) -> int | None:
    """The errno of a write fault: an OSError's own, or one named in the message of another library's error.

    TensorFlow's C++ file system raises e.g. ResourceExhaustedError("<file>; No space left on device").
    """
    if isinstance(exc, UserError):
        return None
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.errno
    text = str(exc)
    for code in _ERRNO_FIX:
        if os.strerror(code) in text:
            return code
    return None


def fault_path(exc: BaseException) -> str | None:
    """The file a write fault names: an OSError's filename, or the `<file>;` that starts a TensorFlow message."""
    if isinstance(exc, OSError) and exc.filename:
        return str(exc.filename)
    head = str(exc).split(";")[0].strip()
    return head if ";" in str(exc) and head.startswith(("/", ".")) else None


def fault_message(exc: BaseException, where: str | None = None) -> FaultError | None:
    """The one-line error for a machine fault `exc` met while writing `where`; None when it is not one."""
    code = fault_errno(exc)
    if code not in _ERRNO_FIX:
        return None
    what, fix = _ERRNO_FIX[code]
    return FaultError(f"{where or fault_path(exc) or 'output'}: {what}: {fix}")
