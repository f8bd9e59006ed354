"""Process machinery of the init: spawn services, reap children, catch signals.

:mod:`system.init` decides *what* to start and stop; this module does the
system calls, without threads:

- :class:`SignalPipe` turns signals into bytes on a pipe
  (:func:`signal.set_wakeup_fd`), so one ``select`` waits for signals,
  timeouts and other watched descriptors (readiness pipes) alike; the
  Python handlers do nothing.
- :func:`spawn` forks and executes a service in a session (and process
  group) of its own, standard input on ``/dev/null`` and both output streams
  appended to its log file, and any descriptors it must inherit (an s6
  notification pipe) at the numbers it expects them.  A failure between ``fork`` and ``execve``
  (``chdir``, ``setuid``, a missing program) travels back over a
  close-on-exec pipe and is raised in the parent as :class:`SpawnError`,
  as :mod:`subprocess` does, instead of showing up as a bare exit status.
- :func:`reap` collects every child that has exited, service or orphan.
  Outside PID 1, :func:`become_subreaper` makes orphans of the services
  reparent to the init anyway (``PR_SET_CHILD_SUBREAPER``).

Note: :mod:`subprocess` is not used: its ``Popen`` objects expect to wait for
their own child, while the init collects every child with ``waitpid(-1)``.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import pwd
import selectors
import signal
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import FrameType, TracebackType
from typing import NoReturn

from store.errors import PyguixError

__all__ = [
    "Account",
    "Launch",
    "SignalPipe",
    "SpawnError",
    "Wakeup",
    "become_subreaper",
    "describe_status",
    "group_alive",
    "reap",
    "signal_group",
    "spawn",
]

_PR_SET_CHILD_SUBREAPER = 36

# Signals Python sets to SIG_IGN, which would survive execve.
_RESET_SIGNALS = (
    signal.SIGPIPE,
    signal.SIGXFSZ,
    signal.SIGCHLD,
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
)


class SpawnError(PyguixError):
    """Report that a service could not be started.

    :param name: the service.
    :param step: what failed (``log``, ``user``, ``chdir``, ``exec``...).
    :param reason: the system's message.
    """

    def __init__(self, name: str, step: str, reason: str) -> None:
        super().__init__(f"cannot start service '{name}': {step}: {reason}")
        self.name = name
        self.step = step
        self.reason = reason


@dataclass(frozen=True)
class Account:
    """The ids a service runs as, looked up before forking."""

    name: str
    uid: int
    gid: int
    home: str


@dataclass(frozen=True)
class Launch:
    """Everything :func:`spawn` needs to start one service."""

    name: str
    """The service's name (for messages)."""

    argv: tuple[str, ...]
    """The command; ``argv[0]`` is looked up in the ``PATH`` it runs with."""

    base_environment: Mapping[str, str]
    """The inherited environment; with ``user``, the account's ``HOME``,
    ``USER`` and ``LOGNAME`` replace its own."""

    environment: Mapping[str, str]
    """The service's own variables, added last."""

    log_file: str
    """Where standard output and error are appended (directories are created)."""

    directory: str = "/"
    """The working directory."""

    user: str | None = None
    """The account to switch to, or ``None`` to keep the init's ids."""

    pass_fds: Mapping[int, int] = field(default_factory=dict)
    """Descriptors the service inherits: its number for each, mapped to the
    caller's descriptor (which the caller still owns and closes)."""


@dataclass(frozen=True)
class Wakeup:
    """What ended a :meth:`SignalPipe.wait`."""

    signals: tuple[int, ...]
    """The signals received, in order."""

    readable: tuple[int, ...]
    """The watched descriptors that are readable (or at end of file)."""


class SignalPipe:
    """Deliver signals as readable events on a pipe, for ``select``.

    Use as a context manager from the main thread; leaving restores the
    previous handlers and wakeup descriptor.  :meth:`watch` adds other
    descriptors to wait for.
    """

    def __init__(self, signals: Iterable[int]) -> None:
        self._signals = tuple(signals)
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._read, selectors.EVENT_READ)
        self._saved: dict[int, object] = {}
        self._saved_fd = -1

    def __enter__(self) -> SignalPipe:
        self._saved_fd = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        for signum in self._signals:
            self._saved[signum] = signal.signal(signum, _note_signal)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for signum, handler in self._saved.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        signal.set_wakeup_fd(self._saved_fd)
        self._selector.close()
        os.close(self._read)
        os.close(self._write)

    def watch(self, fd: int) -> None:
        """Make :meth:`wait` return when ``fd`` becomes readable."""
        self._selector.register(fd, selectors.EVENT_READ)

    def unwatch(self, fd: int) -> None:
        """Stop watching ``fd`` (before closing it)."""
        self._selector.unregister(fd)

    def wait(self, timeout: float | None) -> Wakeup:
        """Wait up to ``timeout`` seconds (forever if ``None``) for signals
        or a watched descriptor.

        :return: the signals received, in order, and the readable watched
            descriptors (possibly none of either).
        """
        events = self._selector.select(timeout)
        readable = tuple(key.fd for key, _ in events if key.fd != self._read)
        received: list[int] = []
        while True:
            try:
                chunk = os.read(self._read, 512)
            except BlockingIOError:
                break
            if not chunk:
                break
            received.extend(chunk)
        return Wakeup(tuple(received), readable)


def _note_signal(signum: int, frame: FrameType | None) -> None:
    """Do nothing: the C handler has written ``signum`` to the wakeup pipe."""


def become_subreaper() -> bool:
    """Make orphaned descendants reparent to this process (Linux ≥ 3.4).

    :return: whether the kernel accepted.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


def reap() -> list[tuple[int, int]]:
    """Collect every child that has exited, without blocking.

    :return: ``(pid, wait status)`` pairs, in the order collected.
    """
    reaped: list[tuple[int, int]] = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid == 0:
            return reaped
        reaped.append((pid, status))


def describe_status(status: int) -> str:
    """Return a phrase for a wait status: ``exited with code 3``, ``killed by SIGKILL``."""
    if os.WIFSIGNALED(status):
        return f"killed by {signal_name(os.WTERMSIG(status))}"
    return f"exited with code {os.waitstatus_to_exitcode(status)}"


def signal_name(signum: int) -> str:
    """Return the name of a signal, as ``SIGTERM``, or its number."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)


def group_alive(pgid: int) -> bool:
    """Tell whether any process (zombies included) is left in a process group."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def signal_group(pgid: int, leader: int | None, signum: int) -> None:
    """Send ``signum`` to a service's process group, or to its leader alone.

    The leader is signalled directly only when the group is gone (it may
    have moved to a group of its own), so that no process gets it twice.
    """
    try:
        os.killpg(pgid, signum)
        return
    except ProcessLookupError:
        pass
    if leader is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(leader, signum)


# ---------------------------------------------------------------------------
# Spawning


def spawn(launch: Launch) -> int:
    """Start ``launch`` in a new session and return its PID.

    The caller must reap the child (with :func:`reap`).

    :raises SpawnError: the log file, the account, a descriptor to pass,
        the directory or the program was not usable; the child, if any, has
        then been collected.
    """
    account = _account(launch)
    environment = dict(launch.base_environment)
    if account is not None:
        environment.update(HOME=account.home, USER=account.name, LOGNAME=account.name)
    environment.update(launch.environment)
    passed = _copies_above_targets(launch)
    try:
        log_fd = _open_log(launch)
    except SpawnError:
        for fd in passed.values():
            os.close(fd)
        raise
    report_read, report_write = os.pipe()
    report_write = _move_above(report_write, max([3, *passed]) + 1)

    pid = os.fork()
    if pid == 0:
        os.close(report_read)
        _exec_child(launch, environment, account, log_fd, report_write, passed)
    os.close(report_write)
    os.close(log_fd)
    for fd in passed.values():
        os.close(fd)

    report = _read_report(report_read)
    if report is not None:
        os.waitpid(pid, 0)
        raise SpawnError(launch.name, report.get("step", "?"), report.get("error", "?"))
    return pid


def _account(launch: Launch) -> Account | None:
    if launch.user is None:
        return None
    try:
        entry = pwd.getpwnam(launch.user)
    except KeyError:
        raise SpawnError(
            launch.name, "user", f"no account '{launch.user}' in the user database"
        ) from None
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)


def _open_log(launch: Launch) -> int:
    try:
        os.makedirs(os.path.dirname(launch.log_file) or ".", exist_ok=True)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        return os.open(launch.log_file, flags, 0o640)
    except OSError as error:
        raise SpawnError(
            launch.name, "log", f"'{launch.log_file}': {error.strerror}"
        ) from error


def _copies_above_targets(launch: Launch) -> dict[int, int]:
    """Return close-on-exec copies of ``launch.pass_fds``, numbered above every
    descriptor the service inherits, so that the child's ``dup2`` calls
    overwrite none of them nor the report pipe (numbered above them too).

    :raises SpawnError: a number beyond the descriptor limit.
    """
    floor = max([3, *(target + 1 for target in launch.pass_fds)])
    copies: dict[int, int] = {}
    try:
        for target, source in launch.pass_fds.items():
            copies[target] = fcntl.fcntl(source, fcntl.F_DUPFD_CLOEXEC, floor)
    except OSError as error:
        for fd in copies.values():
            os.close(fd)
        targets = ", ".join(map(str, launch.pass_fds))
        raise SpawnError(
            launch.name, "descriptors", f"cannot pass fd {targets}: {error.strerror}"
        ) from error
    return copies


def _move_above(fd: int, floor: int) -> int:
    """Return a close-on-exec copy of ``fd`` numbered ``floor`` or more; close ``fd``."""
    copy = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, floor)
    os.close(fd)
    return copy


def _read_report(fd: int) -> dict[str, str] | None:
    with os.fdopen(fd, "rb") as stream:
        data = stream.read()
    if not data:
        return None
    try:
        report: dict[str, str] = json.loads(data)
    except ValueError:
        return {"step": "exec", "error": data.decode(errors="replace")}
    return report


def _exec_child(
    launch: Launch,
    environment: Mapping[str, str],
    account: Account | None,
    log_fd: int,
    report: int,
    passed: Mapping[int, int],
) -> NoReturn:
    """Become the service; on failure write what failed to ``report`` and exit 127.

    Note: runs between ``fork`` and ``execve``; nothing here may log or
    touch the parent's Python objects beyond reading them.
    """
    step = "setsid"
    try:
        os.setsid()
        step = "signals"
        signal.set_wakeup_fd(-1)
        for signum in _RESET_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())

        step = "redirect"
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        for target, source in passed.items():
            os.dup2(source, target)

        step = "chdir"
        os.chdir(launch.directory)
        if account is not None:
            step = "user"
            os.initgroups(account.name, account.gid)
            os.setgid(account.gid)
            os.setuid(account.uid)

        step = "exec"
        os.execvpe(launch.argv[0], list(launch.argv), dict(environment))
    except BaseException as error:
        reason = getattr(error, "strerror", None) or str(error)
        if step == "chdir":
            reason = f"'{launch.directory}': {reason}"
        elif step == "exec":
            reason = f"'{launch.argv[0]}': {reason}"
        with contextlib.suppress(BaseException):
            os.write(report, json.dumps({"step": step, "error": reason}).encode())
    os._exit(127)
