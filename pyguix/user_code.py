"""Report failures of the user's own Python code as theirs, with the line.

A build file (``pyguix build -f``) or an OS file runs the user's code: an exception it
raises, or a call to ``sys.exit()``, is an error in that code, not a bug in
pyguix.  It is reported on one line naming the file, the line of the file
where it happened and the exception, with a hint to see the whole trace.
"""

from __future__ import annotations

import os
import traceback

from store.errors import describe_exception

__all__ = ["describe_failure"]


def describe_failure(file: str, error: BaseException) -> str:
    """Return `` at line N: TYPE: MESSAGE`` for ``error`` raised by ``file``.

    The line is that of the last frame in ``file`` (left out when no frame
    is); ``sys.exit(N)`` reads ``SystemExit: N``.
    """
    real = os.path.realpath(file)
    lines = [
        frame.lineno
        for frame in traceback.extract_tb(error.__traceback__)
        if os.path.realpath(frame.filename) == real
    ]
    where = f" at line {lines[-1]}" if lines else ""
    return f"{where}: {describe_exception(error)}"
