"""The init of pyguix systems: a Shepherd-like service supervisor run as PID 1.

Spec: issue 6, item 2.  A system's ``boot`` execs ``python -m system.init
--spec FILE`` as PID 1 of its container; the spec (:mod:`system.init_spec`)
lists the services.  The init then:

1. starts the services in dependency order (networkx, through
   :func:`~system.init_spec.start_order`): a service starts once every
   requirement is provided by a service that is up: a one-shot once it has
   exited 0, a daemon once it is ready by its ``readiness`` (below).  When
   a requirement's provider failed, was skipped, or exited before its
   dependent could start, the dependent is *skipped* (logged, never
   started), and so on down the graph;
2. waits, without blocking its event loop, for each daemon to be ready:
   at once when spawned (the default); when its pid file exists and names
   a live process (Shepherd's ``#:pid-file``), which becomes the process
   supervised and stopped, so that a daemon may fork and its parent exit 0;
   or when it writes a newline to the notification pipe it inherits at
   the descriptor it chose (s6's ``notification-fd``).  A stale pid file
   is removed before each start.  A daemon not ready within its timeout,
   or that exits first (but for a pid-file launcher exiting 0), or that
   closes its notification pipe without a newline, has *failed*: it gets
   its stop signal and its dependents are skipped;
3. runs each service in a session of its own (:func:`~system.supervise.spawn`)
   with standard input on ``/dev/null``, in its directory, with the init's
   environment plus its own variables (as ``user``, that account's ``HOME``,
   ``USER`` and ``LOGNAME`` come between), both output streams appended to
   its log file (default ``LOG_DIR/NAME.log``); the init logs its own
   milestones, with timestamps, to ``LOG_DIR/init.log`` and standard error;
4. respawns a daemon marked ``respawn`` when it exits, at most
   :data:`RESPAWN_LIMIT` times within :data:`RESPAWN_WINDOW` seconds; beyond
   that the service is marked failed and left alone (as Shepherd does);
   a daemon without ``respawn`` that exits is ``stopped`` (code 0) or
   ``failed``; its dependents, already started, are left running;
5. reaps every child, orphans included (as PID 1 they reparent to it;
   otherwise the init makes itself a child subreaper);
6. on SIGTERM or SIGINT, stops the services in the reverse of the order in
   which they first started: each service's process group gets the
   service's ``stop_signal``, then ``SIGKILL`` after its ``stop_timeout``,
   and the init waits until the group is empty before the next service.
   Then it signals every process left, TERM then KILL, and reaps them: as
   PID 1 every other process of the namespace (``kill(-1)``), otherwise
   its own children (orphans it adopted).  SIGHUP is logged and ignored.

Exit status: 0 once every service is stopped, whether it had to be killed or
had failed before; 1 when a service's processes survived ``SIGKILL`` (they
are named in the log) or the spec is invalid; 70 on an internal error.

The status file ``RUN_DIR/init.status`` (JSON, replaced atomically on every
change) gives the init's PID and state (``starting`` until no service waits,
runs its one-shot or waits to be ready, then ``running``, ``stopping``,
``stopped``), the start order, and per service its readiness and state
(``waiting``, ``starting`` until done or ready, ``running``, ``done``,
``failed``, ``skipped``, ``stopping``, ``stopped``), PID (for a pid-file
daemon, the one its file names once ready), restarts, last exit code or
signal, log file and reason.  ``python -m system.init --status`` prints it.

XXX: a pid file naming a process that is not a descendant of the init (so
never reparented to it) is trusted: that process's exit goes unnoticed.

Note: this module runs inside containers with the host's Python and a module
tree from the store; it imports only the standard library, networkx (through
:mod:`system.init_spec`) and :mod:`store.errors`; keep it so.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from store.errors import PyguixError
from system.init_spec import (
    SPAWNED,
    InitSpec,
    NotifyFdReadiness,
    PidFileReadiness,
    ServiceSpec,
    load_spec,
    providers_of,
    readiness_to_json,
    start_order,
)
from system.supervise import (
    Launch,
    SignalPipe,
    SpawnError,
    become_subreaper,
    describe_status,
    group_alive,
    reap,
    signal_group,
    signal_name,
    spawn,
)

__all__ = ["RESPAWN_LIMIT", "RESPAWN_WINDOW", "Supervisor", "main", "read_status"]

logger = logging.getLogger("system.init")

RESPAWN_LIMIT = 5
"""How many respawns :data:`RESPAWN_WINDOW` seconds may see before giving up."""

RESPAWN_WINDOW = 10.0

KILL_TIMEOUT = 2.0
"""Seconds to wait for a process group to vanish after ``SIGKILL``."""

POLL_INTERVAL = 0.05
"""How often a stopping service's process group is checked."""

PID_FILE_POLL_INTERVAL = 0.1
"""How often a starting daemon's pid file is looked for."""

CLOSED_NOTIFY_GRACE = 0.2
"""Seconds a daemon that closed its notification pipe has to exit, so that
its exit, the likelier cause, is what its failure reports."""

STATUS_NAME = "init.status"

_HANDLED_SIGNALS = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

# Service states.
WAITING = "waiting"
STARTING = "starting"
RUNNING = "running"
DONE = "done"
FAILED = "failed"
SKIPPED = "skipped"
STOPPING = "stopping"
STOPPED = "stopped"

_UP = (RUNNING, DONE)
_DOWN = (FAILED, SKIPPED, STOPPED)


@dataclass
class _Unit:
    """The running state of one service (mutable, owned by the supervisor)."""

    spec: ServiceSpec
    log_file: str
    state: str = WAITING
    pid: int | None = None
    pgid: int | None = None
    restarts: int = 0
    exit_code: int | None = None
    term_signal: int | None = None
    reason: str | None = None
    respawns: deque[float] = field(default_factory=deque)
    ready_deadline: float | None = None
    """While the daemon is not ready yet: when it will have failed (monotonic)."""
    notify_read: int | None = None
    """While the daemon is not ready yet: our end of its notification pipe."""
    notify_closed: bool = False
    """Whether the daemon closed its notification pipe without a newline."""

    def to_json(self) -> dict[str, object]:
        """Return this unit's entry of the status file."""
        return {
            "name": self.spec.name,
            "provision": list(self.spec.provides),
            "requirement": list(self.spec.requirement),
            "one_shot": self.spec.one_shot,
            "respawn": self.spec.respawn,
            "readiness": readiness_to_json(self.spec.readiness),
            "state": self.state,
            "pid": self.pid,
            "restarts": self.restarts,
            "exit_code": self.exit_code,
            "term_signal": self.term_signal,
            "log_file": self.log_file,
            "reason": self.reason,
        }


class Supervisor:
    """Start, watch and stop the services of one init spec.

    :param spec: the services.
    :param log_dir: where relative and default log files go.
    :param run_dir: where the status file goes.
    """

    def __init__(self, spec: InitSpec, log_dir: str, run_dir: str) -> None:
        self.order = start_order(spec)
        self.providers = providers_of(spec)
        self.units = {s.name: _Unit(s, _log_file(s, log_dir)) for s in spec.services}
        self.started: list[str] = []
        self.state = STARTING
        self.status_file = os.path.join(run_dir, STATUS_NAME)
        self.unstoppable: list[str] = []
        self._by_pid: dict[int, _Unit] = {}
        self._stop_requested = False
        self._pipe: SignalPipe | None = None

    def run(self) -> int:
        """Boot, supervise until SIGTERM or SIGINT, stop; return the exit status."""
        with SignalPipe(_HANDLED_SIGNALS) as pipe:
            self._pipe = pipe
            try:
                self._start_ready()
                while not self._stop_requested:
                    readable = self._wait(self._readiness_timeout())
                    self._check_readiness(readable)
                    self._start_ready()
            finally:
                status = self._shutdown()
        return status

    # -- events -------------------------------------------------------------

    def _wait(self, timeout: float | None) -> tuple[int, ...]:
        """Wait for a signal, a notification pipe or ``timeout``, then handle
        signals and dead children; return the readable notification pipes."""
        assert self._pipe is not None
        wakeup = self._pipe.wait(timeout)
        for signum in wakeup.signals:
            self._on_signal(signum)
        for pid, status in reap():
            self._on_exit(pid, status)
        return wakeup.readable

    def _on_signal(self, signum: int) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT) and not self._stop_requested:
            logger.info("received %s; stopping services", signal_name(signum))
            self._stop_requested = True
        elif signum == signal.SIGHUP:
            logger.info("received SIGHUP; ignoring it")

    def _on_exit(self, pid: int, status: int) -> None:
        unit = self._by_pid.pop(pid, None)
        name, how = (unit.spec.name if unit else ""), describe_status(status)
        if unit is None:
            logger.info("reaped orphan process %d (%s)", pid, how)
            return
        if pid != unit.pid:
            logger.info("launcher of service '%s' (pid %d) %s", name, pid, how)
            return

        unit.pid = None
        unit.exit_code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        unit.term_signal = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        if unit.state in (STOPPING, FAILED):
            logger.info("service '%s' (pid %d) %s", name, pid, how)
        elif unit.spec.one_shot:
            self._finish_one_shot(unit, status, how)
        elif unit.state == STARTING:
            self._exit_before_ready(unit, status, how)
        elif unit.spec.respawn and not self._stop_requested:
            logger.warning("service '%s' (pid %d) %s; respawning it", name, pid, how)
            self._respawn(unit)
        else:
            unit.state = STOPPED if status == 0 else FAILED
            unit.reason = how
            log = logger.info if status == 0 else logger.warning
            log("service '%s' (pid %d) %s", name, pid, how)
        self._write_status()

    def _finish_one_shot(self, unit: _Unit, status: int, how: str) -> None:
        if status == 0:
            unit.state = DONE
            logger.info("one-shot service '%s' done", unit.spec.name)
        else:
            unit.state = FAILED
            unit.reason = how
            logger.error("one-shot service '%s' failed: %s", unit.spec.name, how)

    def _exit_before_ready(self, unit: _Unit, status: int, how: str) -> None:
        """Handle the exit of a daemon's first process before it was ready."""
        readiness = unit.spec.readiness
        if status == 0 and isinstance(readiness, PidFileReadiness):
            logger.info(
                "service '%s' launcher %s; waiting for pid file '%s'",
                unit.spec.name,
                how,
                readiness.pid_file,
            )
            return
        self._fail_start(unit, f"{how} before it was ready")

    def _respawn(self, unit: _Unit) -> None:
        """Start ``unit`` again unless it has respawned too often lately."""
        now = time.monotonic()
        while unit.respawns and now - unit.respawns[0] > RESPAWN_WINDOW:
            unit.respawns.popleft()
        if len(unit.respawns) >= RESPAWN_LIMIT:
            unit.state = FAILED
            unit.reason = f"respawned {RESPAWN_LIMIT} times within {RESPAWN_WINDOW:g} s"
            logger.error(
                "service '%s' is respawning too fast (%s); giving up",
                unit.spec.name,
                unit.reason,
            )
            return
        unit.respawns.append(now)
        unit.restarts += 1
        self._spawn(unit)

    # -- starting -----------------------------------------------------------

    def _start_ready(self) -> None:
        """Start (or skip) every waiting service whose requirements are settled."""
        if self._stop_requested:
            return
        for name in self.order:
            unit = self.units[name]
            if unit.state != WAITING:
                continue
            providers = [self.units[self.providers[r]] for r in unit.spec.requirement]
            down = [p for p in providers if p.state in _DOWN]
            if down:
                self._skip(unit, down[0])
            elif all(p.state in _UP for p in providers):
                self._spawn(unit)

        if self.state == STARTING and not any(
            u.state in (WAITING, STARTING) for u in self.units.values()
        ):
            self.state = RUNNING
            logger.info("all services started or settled")
        self._write_status()

    def _skip(self, unit: _Unit, provider: _Unit) -> None:
        unit.state = SKIPPED
        unit.reason = f"requirement '{provider.spec.name}' is {provider.state}"
        logger.warning("not starting service '%s': %s", unit.spec.name, unit.reason)

    def _spawn(self, unit: _Unit) -> None:
        spec = unit.spec
        pass_fds = self._prepare_readiness(unit)
        launch = Launch(
            name=spec.name,
            argv=spec.command,
            base_environment=os.environ,
            environment=spec.environment,
            log_file=unit.log_file,
            directory=spec.directory,
            user=spec.user,
            pass_fds=pass_fds,
        )
        try:
            pid = spawn(launch)
        except SpawnError as error:
            self._end_readiness_wait(unit)
            unit.state = FAILED
            unit.reason = str(error)
            logger.error("%s", error)
            return
        finally:
            for fd in pass_fds.values():
                os.close(fd)

        unit.pid = unit.pgid = pid
        self._by_pid[pid] = unit
        if spec.name not in self.started:
            self.started.append(spec.name)
        if spec.one_shot or spec.readiness != SPAWNED:
            unit.state = STARTING
        else:
            unit.state = RUNNING
        logger.info("started service '%s' (pid %d)", spec.name, pid)

    # -- readiness ----------------------------------------------------------

    def _prepare_readiness(self, unit: _Unit) -> dict[int, int]:
        """Arm ``unit``'s readiness wait before it is spawned.

        :return: the descriptors the daemon inherits (its notification pipe).
        """
        readiness = unit.spec.readiness
        if readiness == SPAWNED:
            return {}
        assert isinstance(readiness, (PidFileReadiness, NotifyFdReadiness))
        unit.ready_deadline = time.monotonic() + readiness.timeout
        if isinstance(readiness, PidFileReadiness):
            _remove_stale(readiness.pid_file)
            return {}

        assert self._pipe is not None
        read, write = os.pipe()
        os.set_blocking(read, False)
        self._pipe.watch(read)
        unit.notify_read = read
        return {readiness.notify_fd: write}

    def _readiness_timeout(self) -> float | None:
        """Return how long the event loop may sleep before a readiness check."""
        waits = [
            u.ready_deadline - time.monotonic()
            for u in self.units.values()
            if u.ready_deadline is not None
        ]
        if any(
            u.ready_deadline is not None
            and isinstance(u.spec.readiness, PidFileReadiness)
            for u in self.units.values()
        ):
            waits.append(PID_FILE_POLL_INTERVAL)
        return max(0.0, min(waits)) if waits else None

    def _check_readiness(self, readable: tuple[int, ...]) -> None:
        """Mark ready, or failed, every daemon waiting to be ready."""
        for unit in self.units.values():
            if unit.ready_deadline is None or unit.state != STARTING:
                continue
            readiness = unit.spec.readiness
            if isinstance(readiness, PidFileReadiness):
                pid = _live_pid_in(readiness.pid_file)
                if pid is not None:
                    self._ready(unit, pid)
                    continue
            elif unit.notify_read in readable and self._notified(unit):
                self._ready(unit, unit.pid)
                continue
            if unit.state == STARTING and time.monotonic() >= unit.ready_deadline:
                self._fail_start(unit, _not_ready_reason(readiness, unit.notify_closed))

    def _notified(self, unit: _Unit) -> bool:
        """Read ``unit``'s notification pipe; tell whether it holds a newline.

        A pipe closed without one fails the service, which can no longer
        notify, after :data:`CLOSED_NOTIFY_GRACE` seconds.
        """
        assert unit.notify_read is not None
        try:
            data = os.read(unit.notify_read, 512)
        except BlockingIOError:
            return False
        if b"\n" in data:
            return True
        if not data:
            self._on_notify_closed(unit)
        return False

    def _on_notify_closed(self, unit: _Unit) -> None:
        """Stop watching a notification pipe closed without a newline; give
        the daemon :data:`CLOSED_NOTIFY_GRACE` seconds before it has failed."""
        assert self._pipe is not None and unit.notify_read is not None
        self._pipe.unwatch(unit.notify_read)
        os.close(unit.notify_read)
        unit.notify_read = None
        unit.notify_closed = True
        assert unit.ready_deadline is not None
        grace = time.monotonic() + CLOSED_NOTIFY_GRACE
        unit.ready_deadline = min(unit.ready_deadline, grace)

    def _ready(self, unit: _Unit, pid: int | None) -> None:
        """Mark ``unit`` running; with a pid file, supervise the process it names."""
        self._end_readiness_wait(unit)
        unit.state = RUNNING
        if pid is not None and pid != unit.pid:
            unit.pid = pid
            unit.pgid = _group_of(pid, unit.pgid)
            self._by_pid[pid] = unit
        logger.info("service '%s' is ready (pid %s)", unit.spec.name, unit.pid)

    def _fail_start(self, unit: _Unit, reason: str) -> None:
        """Mark ``unit`` failed before it was ready, and stop what is left of it."""
        self._end_readiness_wait(unit)
        unit.state = FAILED
        unit.reason = reason
        logger.error("service '%s' failed to start: %s", unit.spec.name, reason)
        if unit.pgid is not None and not self._gone(unit):
            signal_group(unit.pgid, unit.pid, unit.spec.stop_signal)

    def _end_readiness_wait(self, unit: _Unit) -> None:
        """Forget ``unit``'s readiness deadline and close its notification pipe."""
        unit.ready_deadline = None
        unit.notify_closed = False
        if unit.notify_read is not None:
            assert self._pipe is not None
            self._pipe.unwatch(unit.notify_read)
            os.close(unit.notify_read)
            unit.notify_read = None

    # -- stopping -----------------------------------------------------------

    def _shutdown(self) -> int:
        """Stop every service, last started first; return the exit status."""
        self._stop_requested = True
        self.state = STOPPING
        for unit in self.units.values():
            self._end_readiness_wait(unit)
        self._write_status()
        for name in reversed(self.started):
            self._stop(self.units[name])
        self._end_leftovers()
        self._wait(0)

        self.state = STOPPED
        self._write_status()
        if self.unstoppable:
            logger.error("could not stop: %s", ", ".join(self.unstoppable))
            return 1
        logger.info("all services stopped")
        return 0

    def _stop(self, unit: _Unit) -> None:
        """Stop ``unit``'s process group: its stop signal, then SIGKILL."""
        if unit.pgid is None or self._gone(unit):
            if unit.state == STARTING:
                unit.state = STOPPED
            return
        failed = unit.state == FAILED
        unit.state = STOPPING
        self._write_status()
        spec = unit.spec
        logger.info(
            "stopping service '%s' (pid %s) with %s",
            spec.name,
            unit.pid,
            signal_name(spec.stop_signal),
        )

        signal_group(unit.pgid, unit.pid, spec.stop_signal)
        if not self._wait_gone(unit, spec.stop_timeout):
            logger.warning(
                "service '%s' still running %g s after %s; killing it",
                spec.name,
                spec.stop_timeout,
                signal_name(spec.stop_signal),
            )
            signal_group(unit.pgid, unit.pid, signal.SIGKILL)
            if not self._wait_gone(unit, KILL_TIMEOUT):
                unit.state = FAILED
                unit.reason = "its processes survived SIGKILL"
                self.unstoppable.append(spec.name)
                self._write_status()
                return
        unit.state = FAILED if failed else STOPPED
        self._write_status()

    def _gone(self, unit: _Unit) -> bool:
        return unit.pid is None and (unit.pgid is None or not group_alive(unit.pgid))

    def _wait_gone(self, unit: _Unit, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self._gone(unit):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._wait(min(remaining, POLL_INTERVAL))
        return True

    def _end_leftovers(self) -> None:
        """Signal every process the services left behind, TERM then KILL, and reap it.

        As PID 1 that is every other process of the PID namespace
        (``kill(-1)``); otherwise, the init's own children: orphans that
        reparented to it as a subreaper, rescanned as they die and their
        children reparent in turn.
        """
        for signum, grace in ((signal.SIGTERM, 1.0), (signal.SIGKILL, KILL_TIMEOUT)):
            signalled: set[int] = set()
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                new = self._signal_leftovers(signum, signalled)
                if new:
                    logger.info(
                        "sent %s to leftover processes %s", signal_name(signum), new
                    )
                if not _has_children():
                    return
                self._wait(POLL_INTERVAL)

    def _signal_leftovers(self, signum: int, signalled: set[int]) -> list[int]:
        """Send ``signum`` to the leftovers not in ``signalled`` yet; return them."""
        if os.getpid() == 1:
            if signalled:
                return []
            signalled.add(-1)
            with contextlib.suppress(ProcessLookupError):
                os.kill(-1, signum)
                return [-1]
            return []

        # Note: outside PID 1 only the init's own children are signalled,
        # never kill(-1), which would reach every process of the user.
        new = [pid for pid in _children() if pid not in signalled]
        for pid in new:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
        signalled.update(new)
        return new

    # -- status -------------------------------------------------------------

    def _write_status(self) -> None:
        """Replace the status file with the current state (never raises)."""
        document = {
            "pid": os.getpid(),
            "state": self.state,
            "start_order": list(self.started),
            "services": [self.units[name].to_json() for name in self.order],
        }
        temporary = f"{self.status_file}.{os.getpid()}.tmp"
        try:
            os.makedirs(os.path.dirname(self.status_file), exist_ok=True)
            with open(temporary, "w", encoding="utf-8") as stream:
                json.dump(document, stream, indent=1)
                stream.write("\n")
            os.replace(temporary, self.status_file)
        except OSError as error:
            logger.warning("cannot write '%s': %s", self.status_file, error.strerror)


def _children() -> list[int]:
    """Return the PIDs of this process's children (living or zombie)."""
    path = f"/proc/self/task/{os.getpid()}/children"
    try:
        with open(path, encoding="ascii") as stream:
            return [int(pid) for pid in stream.read().split()]
    except OSError:
        return []


def _has_children() -> bool:
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return True


def _remove_stale(pid_file: str) -> None:
    """Remove a pid file left by an earlier run, as Shepherd does before a start."""
    try:
        os.unlink(pid_file)
    except FileNotFoundError:
        pass
    except OSError as error:
        logger.warning(
            "cannot remove stale pid file '%s': %s", pid_file, error.strerror
        )


def _live_pid_in(pid_file: str) -> int | None:
    """Return the PID ``pid_file`` holds if that process lives, else ``None``.

    A file being written, or holding anything but a positive number, counts
    as not there yet.
    """
    try:
        with open(pid_file, encoding="ascii") as stream:
            pid = int(stream.read().strip())
    except (OSError, ValueError):
        return None
    if pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return pid


def _group_of(pid: int, fallback: int | None) -> int | None:
    """Return the process group to stop for ``pid``; ``fallback`` if that is
    the init's own (never to be signalled) or ``pid`` is gone."""
    try:
        group = os.getpgid(pid)
    except ProcessLookupError:
        return fallback
    return fallback if group == os.getpgrp() else group


def _not_ready_reason(readiness: object, notify_closed: bool) -> str:
    if notify_closed:
        assert isinstance(readiness, NotifyFdReadiness)
        return (
            f"it closed notification fd {readiness.notify_fd} without writing a newline"
        )
    if isinstance(readiness, PidFileReadiness):
        return (
            f"pid file '{readiness.pid_file}' did not name a live process "
            f"within {readiness.timeout:g} s"
        )
    assert isinstance(readiness, NotifyFdReadiness)
    return (
        f"no readiness notification on fd {readiness.notify_fd} "
        f"within {readiness.timeout:g} s"
    )


def _log_file(spec: ServiceSpec, log_dir: str) -> str:
    if spec.log_file is None:
        return os.path.join(log_dir, f"{spec.name}.log")
    return os.path.join(log_dir, spec.log_file)


# ---------------------------------------------------------------------------
# Status queries


def read_status(run_dir: str) -> dict[str, object]:
    """Return the status document an init wrote under ``run_dir``.

    :raises PyguixError: there is none, or it is not JSON.
    """
    path = os.path.join(run_dir, STATUS_NAME)
    try:
        with open(path, encoding="utf-8") as stream:
            document: dict[str, object] = json.load(stream)
    except FileNotFoundError:
        raise PyguixError(
            f"no init status at '{path}'",
            "is the init running? give its --run-dir if it is not the default",
        ) from None
    except (OSError, ValueError) as error:
        raise PyguixError(f"cannot read init status '{path}': {error}") from error
    return document


def format_status(document: dict[str, object]) -> str:
    """Return a status document as a table, one service a line."""
    lines = [f"init (pid {document.get('pid')}): {document.get('state')}"]
    rows = [("SERVICE", "STATE", "PID", "RESTARTS", "NOTE")]
    services = document.get("services")
    for entry in services if isinstance(services, list) else []:
        pid = entry.get("pid")
        rows.append(
            (
                str(entry.get("name")),
                str(entry.get("state")),
                "-" if pid is None else str(pid),
                str(entry.get("restarts")),
                entry.get("reason") or "",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[4]]).rstrip())
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Command line


def main(argv: Sequence[str] | None = None) -> int:
    """Run the init (``--spec``) or print its status (``--status``).

    :return: the exit status: 0, 1 on a bad spec or an unstoppable service,
        70 on an internal error.
    """
    options = _parser().parse_args(argv)
    try:
        if options.status:
            document = read_status(options.run_dir)
            text = (
                json.dumps(document, indent=1)
                if options.json
                else format_status(document)
            )
            print(text)
            return 0
        spec = load_spec(options.spec)
        supervisor = Supervisor(spec, options.log_dir, options.run_dir)
    except PyguixError as error:
        _print_error(error)
        return 1
    return _supervise(supervisor, options.log_dir)


def _supervise(supervisor: Supervisor, log_dir: str) -> int:
    handlers = _start_logging(log_dir)
    try:
        if os.getpid() != 1 and not become_subreaper():
            logger.warning(
                "cannot become a child subreaper; orphans go to the host's init"
            )
        logger.info(
            "init %d starting %d services: %s",
            os.getpid(),
            len(supervisor.order),
            ", ".join(supervisor.order),
        )
        return supervisor.run()
    except Exception:
        logger.exception("internal error in the init; please report it")
        return 70
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
            handler.close()


def _start_logging(log_dir: str) -> list[logging.Handler]:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    try:
        os.makedirs(log_dir, exist_ok=True)
        handlers.append(logging.FileHandler(os.path.join(log_dir, "init.log")))
    except OSError as error:
        print(f"warning: cannot log to '{log_dir}': {error.strerror}", file=sys.stderr)
    formatter = logging.Formatter("%(asctime)s %(levelname)s: %(message)s")
    for handler in handlers:
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return handlers


def _print_error(error: PyguixError) -> None:
    print(f"error: {error}", file=sys.stderr)
    if error.hint:
        print(f"hint: {error.hint}", file=sys.stderr)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m system.init",
        description="Supervise the services of a pyguix system (run as PID 1).",
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--spec", metavar="FILE", help="the init spec (JSON) to run")
    action.add_argument(
        "--status", action="store_true", help="print the status of a running init"
    )
    parser.add_argument(
        "--json", action="store_true", help="with --status, print the raw JSON"
    )
    parser.add_argument(
        "--log-dir", default="/var/log", help="service and init logs (/var/log)"
    )
    parser.add_argument(
        "--run-dir", default="/run/pyguix", help="the status file (/run/pyguix)"
    )
    return parser


if __name__ == "__main__":
    sys.exit(main())
