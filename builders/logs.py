"""Build logs: one compressed file per derivation in the state directory.

Each build's combined standard output and error is kept, as Nix keeps it in
``/nix/var/log/nix/drvs/XX/REST.bz2`` and Guix in
``/var/log/guix/drvs/XX/REST.gz``, at::

    <state dir>/log/drvs/<first 2 chars of the drv base name>/<the rest>.bz2

for instance ``/var/pyguix/log/drvs/0a/bc…-hello.drv.bz2`` for
``/pyguix/store/0abc…-hello.drv``.  Splitting on two characters keeps each
directory small, as Nix does.

Compression is bzip2 (the stdlib's :mod:`bz2`), as Nix's default
``compress-build-log``: logs of text compress well with it, ``bzcat`` reads
them, and a pyguix state directory laid out as Nix's gives files
``nix-store --read-log`` could read too.  An uncompressed log left at the
same path without ``.bz2`` is read as well, as Nix reads one.

A :class:`BuildLog` is opened per build and fed bytes as the build runs; it
writes them compressed to a temporary file next to the final one and renames
it into place when closed, so a reader never sees half a log, and a log of a
previous build of the same derivation stays until the new one is complete.
It also keeps the last lines in memory for the failure report, and can hand
each complete line to a callback (``-L``, streaming to the terminal).
"""

from __future__ import annotations

import bz2
import collections
import os
import tempfile
from collections.abc import Callable
from types import TracebackType

from store.errors import PyguixError

__all__ = [
    "LOG_SUFFIX",
    "TAIL_LINES",
    "BuildLog",
    "LogNotFoundError",
    "log_path",
    "open_build_log",
    "read_log",
]

LOG_SUFFIX = ".bz2"
"""The suffix of compressed logs, naming their compression."""

TAIL_LINES = 20
"""How many of the last lines a :class:`BuildLog` keeps by default."""

_MAX_LINE = 4096
"""Longest line kept in the tail or passed to the callback; more is cut."""


class LogNotFoundError(PyguixError):
    """Report that no build log is stored for a derivation.

    :param drv_path: the derivation whose log was asked for.
    """

    def __init__(self, drv_path: str, asked: str | None = None) -> None:
        via = f" (the deriver of '{asked}')" if asked and asked != drv_path else ""
        super().__init__(
            f"no build log is stored for '{drv_path}'{via}",
            "build it again to regenerate its log (logs of substituted or "
            "imported items, and of builds before the log was kept, do not exist)",
        )
        self.drv_path = drv_path
        self.asked = asked


def log_path(state_dir: str, drv_path: str) -> str:
    """Return where the log of ``drv_path`` is kept under ``state_dir``.

    :param state_dir: the state directory's physical path.
    :param drv_path: the derivation path (only its base name counts).
    """
    base = os.path.basename(drv_path)
    assert len(base) > 2, drv_path
    return os.path.join(state_dir, "log", "drvs", base[:2], base[2:] + LOG_SUFFIX)


def read_log(state_dir: str, drv_path: str) -> bytes | None:
    """Return the stored log of ``drv_path``, uncompressed, or ``None``.

    :param state_dir: the state directory's physical path.
    """
    compressed = log_path(state_dir, drv_path)
    try:
        with bz2.open(compressed, "rb") as stream:
            return stream.read()
    except FileNotFoundError:
        pass
    try:
        with open(compressed.removesuffix(LOG_SUFFIX), "rb") as plain:
            return plain.read()
    except FileNotFoundError:
        return None


class BuildLog:
    """The log of one build being written; use :func:`open_build_log`.

    Feed it with :meth:`write` as output arrives, in chunks of any size;
    :meth:`close` commits it (also after a failed build, whose log matters
    most), :meth:`discard` drops it.  As a context manager it commits on
    exit, whether or not an exception is passing.

    :param path: the final path, from :func:`log_path`.
    :param tail_lines: how many of the last lines to keep for :meth:`tail`.
    :param on_line: called with each complete line, decoded as UTF-8 (bad
        bytes replaced) and without its newline; the last unterminated line
        is passed on close.
    """

    def __init__(
        self,
        path: str,
        *,
        tail_lines: int = TAIL_LINES,
        on_line: Callable[[str], None] | None = None,
    ) -> None:
        self.path = path
        """The physical path the log will have once committed."""

        self.size = 0
        """Uncompressed bytes written so far."""

        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, self._temp = tempfile.mkstemp(
            prefix=".tmp-", suffix=LOG_SUFFIX, dir=os.path.dirname(path)
        )
        self._file = os.fdopen(fd, "wb")
        self._compressor = bz2.BZ2Compressor()
        self._tail: collections.deque[bytes] = collections.deque(maxlen=tail_lines)
        self._partial = b""
        self._on_line = on_line
        self._closed = False

    def write(self, data: bytes) -> None:
        """Append ``data``, a chunk of the build's output, to the log."""
        assert not self._closed, self.path
        self.size += len(data)
        self._file.write(self._compressor.compress(data))

        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()[-_MAX_LINE:]
        for line in lines:
            self._line(line)

    def _line(self, line: bytes) -> None:
        """Record one complete line in the tail and give it to the callback."""
        line = line[:_MAX_LINE].rstrip(b"\r")
        self._tail.append(line)
        if self._on_line is not None:
            self._on_line(line.decode("utf-8", "replace"))

    def tail(self, count: int | None = None) -> list[str]:
        """Return the last ``count`` lines (all those kept if ``None``),
        decoded as UTF-8 with bad bytes replaced, an unterminated one last."""
        lines = list(self._tail)
        if self._partial:
            lines.append(self._partial)
        limit = (self._tail.maxlen or 0) if count is None else count
        kept = lines[max(0, len(lines) - limit) :]
        return [line.decode("utf-8", "replace") for line in kept]

    def close(self) -> None:
        """Commit the log: flush it and rename it into place.

        Note: no fsync, as Nix does none for logs: a log lost in a crash costs
        a rebuild to see again, while a sync per build would cost every build.
        """
        if self._closed:
            return
        self._closed = True
        if self._partial:
            self._line(self._partial)
            self._partial = b""

        try:
            self._file.write(self._compressor.flush())
        finally:
            self._file.close()
        os.chmod(self._temp, 0o644)
        os.replace(self._temp, self.path)

    def discard(self) -> None:
        """Drop the log being written, leaving any previous one in place."""
        if self._closed:
            return
        self._closed = True
        self._file.close()
        os.unlink(self._temp)

    def __enter__(self) -> BuildLog:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def open_build_log(
    state_dir: str,
    drv_path: str,
    *,
    tail_lines: int = TAIL_LINES,
    on_line: Callable[[str], None] | None = None,
) -> BuildLog:
    """Start the log of a build of ``drv_path``, kept under ``state_dir``.

    :param state_dir: the state directory's physical path.
    :param tail_lines: how many of the last lines to keep in memory.
    :param on_line: called with each complete line (see :class:`BuildLog`).

    Example, in a scheduler::

        with open_build_log(store.real_state_dir, drv.path) as log:
            for chunk in output:
                log.write(chunk)
        if failed:
            report(log.path, log.tail())
    """
    return BuildLog(
        log_path(state_dir, drv_path), tail_lines=tail_lines, on_line=on_line
    )
