"""Build progress: the reporter interface the scheduler calls, and two reporters.

The scheduler knows what happens (what will be built, what starts, what each
build prints, what ends); the command line decides how to show it.  Between
them sits a :class:`BuildReporter`, as resolvelib's ``BaseReporter`` sits
between its resolver and pip: the scheduler calls its methods, in this
order::

    plan(to_build, to_substitute)          once, before anything starts
    build_started(drv, name)               for each build, when it starts
      build_log_line(drv, line)            for each line it prints
      message(text)                        any note (kept failed build, ...)
    build_finished(drv, ok, duration)      when it ends, in any order
    done()                                 once, at the end, even on failure

Every method of the base class does nothing, so a reporter overrides only
what it shows, and a scheduler may call them from several threads only if
the reporter says it can (both reporters here can).

:class:`PlainReporter` writes one plain line per event, for logs and CI;
:class:`LiveReporter` keeps a live display on a terminal (done/total, which
builds run and for how long) with `rich <https://rich.readthedocs.io>`_,
printing finished builds and log lines above it.  :func:`make_reporter`
picks one for a stream.  Both write to the stream they are given, standard
error in the command line: store paths, the results, go to standard output.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any, TextIO

__all__ = [
    "BuildReporter",
    "LiveReporter",
    "PlainReporter",
    "format_duration",
    "make_reporter",
    "rich_available",
]


def format_duration(seconds: float) -> str:
    """Return ``seconds`` as a short duration: ``0.4s``, ``12.3s``, ``2m05s``,
    ``1h02m``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def _plan_lines(to_build: Sequence[str], to_substitute: Sequence[str]) -> list[str]:
    """Return the announcement of a plan, as Nix prints it before building."""
    lines: list[str] = []
    for paths, one, many in (
        (
            to_build,
            "this derivation will be built:",
            "these {} derivations will be built:",
        ),
        (
            to_substitute,
            "this path will be fetched:",
            "these {} paths will be fetched:",
        ),
    ):
        if paths:
            lines.append(one if len(paths) == 1 else many.format(len(paths)))
            lines.extend(f"  {path}" for path in paths)
    return lines


class BuildReporter:
    """Receive the scheduler's progress events; every method does nothing.

    ``drv`` is always a derivation path, ``name`` the derivation's name.
    """

    def plan(self, to_build: Sequence[str], to_substitute: Sequence[str] = ()) -> None:
        """Announce the derivations to build and the paths to substitute."""

    def build_started(self, drv: str, name: str) -> None:
        """Tell that the build of ``drv`` has started."""

    def build_log_line(self, drv: str, line: str) -> None:
        """Pass one line the build of ``drv`` printed, without its newline."""

    def build_finished(self, drv: str, ok: bool, duration: float) -> None:
        """Tell that the build of ``drv`` ended, successfully if ``ok``, after
        ``duration`` seconds."""

    def message(self, text: str) -> None:
        """Show a note that is not a build event (one line or more)."""

    def done(self) -> None:
        """Tell that the scheduler has finished; release the display."""


class _Tally:
    """What the reporters count: planned, started, finished, running."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.total = 0
        self.started = 0
        self.built = 0
        self.failed = 0
        self.running: dict[str, tuple[str, float]] = {}
        self.names: dict[str, str] = {}
        self.start = time.monotonic()

    def plan(self, to_build: Sequence[str]) -> None:
        with self.lock:
            self.total += len(to_build)

    def begin(self, drv: str, name: str) -> int:
        """Record a started build; return its number, from 1."""
        with self.lock:
            self.started += 1
            self.total = max(self.total, self.started)
            self.running[drv] = (name, time.monotonic())
            self.names[drv] = name
            return self.started

    def end(self, drv: str, ok: bool) -> str:
        """Record a finished build; return its name."""
        with self.lock:
            self.running.pop(drv, None)
            if ok:
                self.built += 1
            else:
                self.failed += 1
            return self.names.get(drv, drv)

    def name(self, drv: str) -> str:
        with self.lock:
            return self.names.get(drv, drv)

    def summary(self) -> str | None:
        """Return the closing line, or ``None`` if nothing was built."""
        with self.lock:
            if not self.started:
                return None
            took = format_duration(time.monotonic() - self.start)
            count = f"{self.built} derivation{'' if self.built == 1 else 's'}"
            if not self.failed:
                return f"built {count} in {took}"
            return f"built {count}, {self.failed} failed, in {took}"


class PlainReporter(BuildReporter):
    """Write one plain line per event to ``stream``, for non-terminals and CI.

    Lines look like::

        these 10 derivations will be built:
          /pyguix/store/…-foo.drv
        [3/10] building foo...
        built foo in 1.2s
        build of '/pyguix/store/…-bar.drv' failed after 0.3s
        built 9 derivations, 1 failed, in 4.0s

    :param stream: where to write (standard error in the command line).
    :param print_logs: also write each build log line, as ``NAME> LINE``
        (Nix's ``-L``).

    Safe to call from several threads: each line is written whole.
    """

    def __init__(
        self, stream: TextIO | None = None, *, print_logs: bool = False
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.print_logs = print_logs
        self._tally = _Tally()
        self._write_lock = threading.Lock()

    def _write(self, *lines: str) -> None:
        with self._write_lock:
            self.stream.write("".join(line + "\n" for line in lines))
            self.stream.flush()

    def plan(self, to_build: Sequence[str], to_substitute: Sequence[str] = ()) -> None:
        self._tally.plan(to_build)
        lines = _plan_lines(to_build, to_substitute)
        if lines:
            self._write(*lines)

    def build_started(self, drv: str, name: str) -> None:
        number = self._tally.begin(drv, name)
        self._write(f"[{number}/{self._tally.total}] building {name}...")

    def build_log_line(self, drv: str, line: str) -> None:
        if self.print_logs:
            self._write(f"{self._tally.name(drv)}> {line}")

    def build_finished(self, drv: str, ok: bool, duration: float) -> None:
        name = self._tally.end(drv, ok)
        took = format_duration(duration)
        self._write(
            f"built {name} in {took}" if ok else f"build of '{drv}' failed after {took}"
        )

    def message(self, text: str) -> None:
        self._write(text)

    def done(self) -> None:
        summary = self._tally.summary()
        if summary:
            self._write(summary)


def rich_available() -> bool:
    """Tell whether rich, which :class:`LiveReporter` needs, can be imported."""
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


class LiveReporter(BuildReporter):
    """Keep a live display of the builds on a terminal, with rich.

    The display, redrawn a few times a second, reads::

        [3/10 built, 2 running, 1 failed]
          building foo  12.3s
          building bar   0.4s

    Finished builds, failures, messages and (with ``print_logs``) log lines
    scroll above it; it disappears on :meth:`done`, leaving the summary.

    :param stream: the terminal to draw on (standard error).
    :param print_logs: also print each build log line, as ``NAME> LINE``.
    :param console: a ``rich.console.Console`` to use instead of one on
        ``stream`` (tests pass one writing to a string).
    :param max_rows: how many running builds to list; more are counted.
    :raises ImportError: if rich is not installed (see :func:`make_reporter`).

    Note: the display never starts rich's refresh thread: the scheduler
    forks its build workers, and a fork taken while another thread holds a
    lock (rich's, or the stream's) can deadlock the child.  The scheduler
    calls :meth:`refresh` from its own loop instead.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        print_logs: bool = False,
        console: Any = None,
        max_rows: int = 8,
    ) -> None:
        from rich.console import Console

        self.console = (
            console
            if console is not None
            else Console(file=stream if stream is not None else sys.stderr)
        )
        self.print_logs = print_logs
        self.max_rows = max_rows
        self._tally = _Tally()
        self._live: Any = None

    def _print(self, text: str, style: str | None = None) -> None:
        from rich.text import Text

        self.console.print(
            Text(text, style=style or ""), highlight=False, soft_wrap=True
        )

    def _ensure_live(self) -> None:
        """Start the display on the first event that needs it."""
        if self._live is not None:
            return
        from rich.live import Live

        self._live = Live(
            self,
            console=self.console,
            auto_refresh=False,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._live.start()

    def __rich__(self) -> Any:
        """Render the current state (called by rich on each redraw)."""
        from rich.console import Group
        from rich.text import Text

        tally = self._tally
        now = time.monotonic()
        with tally.lock:
            header = f"[{tally.built}/{tally.total} built, {len(tally.running)} running"
            header += f", {tally.failed} failed]" if tally.failed else "]"
            running = sorted(tally.running.values(), key=lambda entry: entry[1])
        rows = [Text(header, style="bold")]
        width = max((len(name) for name, _ in running[: self.max_rows]), default=0)
        for name, start in running[: self.max_rows]:
            rows.append(
                Text(f"  building {name:<{width}}  {format_duration(now - start):>6}")
            )
        if len(running) > self.max_rows:
            rows.append(Text(f"  and {len(running) - self.max_rows} more"))
        return Group(*rows)

    def refresh(self) -> None:
        """Redraw the display, if it is shown (the scheduler calls this)."""
        if self._live is not None:
            self._live.refresh()

    def plan(self, to_build: Sequence[str], to_substitute: Sequence[str] = ()) -> None:
        self._tally.plan(to_build)
        for line in _plan_lines(to_build, to_substitute):
            self._print(line)
        self._ensure_live()

    def build_started(self, drv: str, name: str) -> None:
        self._tally.begin(drv, name)
        self._ensure_live()
        self._live.refresh()

    def build_log_line(self, drv: str, line: str) -> None:
        if self.print_logs:
            self._print(f"{self._tally.name(drv)}> {line}", "dim")

    def build_finished(self, drv: str, ok: bool, duration: float) -> None:
        name = self._tally.end(drv, ok)
        took = format_duration(duration)
        if ok:
            self._print(f"built {name} in {took}", "green")
        else:
            self._print(f"build of '{drv}' failed after {took}", "bold red")
        if self._live is not None:
            self._live.refresh()

    def message(self, text: str) -> None:
        self._print(text)

    def done(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        summary = self._tally.summary()
        if summary:
            self._print(summary, "bold")


def make_reporter(stream: TextIO | None = None, verbose: bool = False) -> BuildReporter:
    """Return the reporter for ``stream``: live on a terminal when rich is
    installed, plain lines otherwise (pipes, files, CI, ``TERM=dumb``).

    :param stream: where progress goes; standard error by default.
    :param verbose: also show every build log line (``-v``/``-L``).
    """
    stream = stream if stream is not None else sys.stderr
    terminal = stream.isatty() and os.environ.get("TERM") != "dumb"
    if terminal and rich_available():
        return LiveReporter(stream, print_logs=verbose)
    return PlainReporter(stream, print_logs=verbose)
