"""Errors that mean "the user asked for something we cannot do", reported without a traceback."""


class UserError(Exception):
    """A mistake in params, paths or data that the user can fix; the message names the fix."""


class DataError(UserError):
    """Input data that is missing, truncated or corrupted."""
