"""The base error of pyguix and the store's own errors.

Every error that pyguix raises on bad input derives from :class:`PyguixError`,
so the command line can turn any of them into one ``error:`` line and a hint.
Errors carry data (the store path, the offset) as attributes, not only text.
"""

from __future__ import annotations

__all__ = ["PyguixError", "StoreError", "InvalidPathError", "describe_exception"]


class PyguixError(Exception):
    """Report a failure caused by input or environment, not by a pyguix bug.

    :param message: one sentence naming the thing in quotes and what was
        expected.
    :param hint: an optional sentence telling the user how to fix it.
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class StoreError(PyguixError):
    """Report a failure of a store operation."""


class InvalidPathError(StoreError):
    """Report that a path is not a valid store path, or not a valid one here.

    :param path: the offending path, as given.
    """

    def __init__(self, path: str, reason: str, hint: str | None = None) -> None:
        super().__init__(f"'{path}' is not a valid store path: {reason}", hint)
        self.path = path
        self.reason = reason


def describe_exception(error: BaseException) -> str:
    """Return ``TYPE: MESSAGE`` of an exception raised by the user's code;
    ``SystemExit: CODE`` for ``sys.exit(CODE)`` (``None`` for ``exit()``)."""
    if isinstance(error, SystemExit):
        return f"SystemExit: {error.code}"
    return f"{type(error).__name__}: {error}"
