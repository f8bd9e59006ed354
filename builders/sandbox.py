"""The build sandbox: run one builder in fresh namespaces, as Nix's and Guix's daemons do.

Spec: issue 5, item 2.  A build runs in new user, mount, PID, UTS, IPC and
(unless it is a fixed-output derivation) network namespaces, over a tmpfs
root that holds only:

- the caller's bind mounts (the input closure and the bootstrap
  interpreter's paths, :func:`builders.bootstrap.interpreter_paths`),
  read-only unless marked writable;
- the build directory, bound writable at :attr:`SandboxSpec.build_dir_target`
  (the builder's working directory) and the writable directories (as an
  output's temporary location, bound where the output path is);
- ``/proc`` of the new PID namespace, a minimal ``/dev`` (``null zero full
  random urandom tty``, ``/dev/shm``, a private ``/dev/pts``, the
  ``fd``/``stdin``/``stdout``/``stderr`` links), ``/tmp`` (mode 1777);
- ``/etc/passwd`` and ``/etc/group`` naming the build user, and, without
  network, ``/etc/hosts`` for ``localhost``, as Nix writes them; with
  network, the host's ``/etc/resolv.conf``, ``/etc/services`` and
  ``/etc/hosts`` (those that exist), read-only, as Nix binds them for
  fixed-output derivations.

The builder runs as :attr:`SandboxSpec.uid` (1000, gid 100, as Nix's
sandbox) with no capabilities and ``no_new_privs``, in its own session, with
host name ``localhost``, umask 022, standard input ``/dev/null`` and both
output streams on one pipe that the caller reads into the log.  It is PID 1
of its PID namespace, so when it exits or is killed every process it
started dies with it; the sandbox in turn dies if pyguix dies
(``PR_SET_PDEATHSIG``).

The environment is exactly :attr:`SandboxSpec.env`: nothing is inherited.
A caller mirroring Nix and Guix sets ``out`` (and each output name),
``NIX_BUILD_TOP``, ``TMPDIR``, ``TEMPDIR``, ``TMP``, ``TEMP`` and ``PWD``
(the build directory inside), ``HOME=/homeless-shelter``,
``PATH=/path-not-set``, ``NIX_STORE``, ``NIX_BUILD_CORES``, ``LC_ALL=C``
and the derivation's own variables.

Ids: the builder's uid inside maps to one host uid.  As root that is a
build user (default :data:`BUILD_USER_BASE` + 1; the scheduler may give
each concurrent build its own) and uid 0 inside maps to
:data:`BUILD_USER_BASE`, an unprivileged id that owns the sandbox's own
files; the build and writable directories are handed to the build user.
Anyone else maps its own uid alone.

Note: the sandbox forks its processes before anything else, because
``unshare(CLONE_NEWUSER)`` fails in a process with threads; a scheduler may
run builds from threads, as each build starts with a fork.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO

from builders.container import (
    BindMount,
    FileSystemSpec,
    Launched,
    MessageReader,
    Plan,
    kill_quietly,
    launch,
    raise_error,
    reap_helper,
)
from store.errors import PyguixError

__all__ = [
    "BUILD_USER_BASE",
    "BindMount",
    "SandboxError",
    "SandboxResult",
    "SandboxSpec",
    "run_sandboxed",
]

logger = logging.getLogger(__name__)

#: Host ids used for builds when pyguix runs as root: this one owns the
#: sandbox's own files (uid 0 inside), the next ones are build users.
BUILD_USER_BASE = 30000


# Host files a build with network access needs to resolve names.
_NETWORK_FILES = ("/etc/resolv.conf", "/etc/services", "/etc/hosts")


class SandboxError(PyguixError):
    """Report that a sandbox could not be set up."""


@dataclass(frozen=True)
class SandboxSpec:
    """What one sandboxed build runs, and what it sees."""

    command: tuple[str, ...]
    """The builder's argument vector; ``command[0]`` is an absolute path."""
    build_dir: str
    """The host directory that becomes the build directory.

    It must exist; as root it is handed to the build user (its owner only,
    not its contents), so what the caller puts in it must be readable by all.
    """
    env: Mapping[str, str] = field(default_factory=dict)
    """The builder's whole environment (see the module's documentation)."""
    mounts: tuple[FileSystemSpec, ...] = ()
    """Host paths to bind, in order, read-only unless marked writable."""
    build_dir_target: str = "/tmp/pyguix-build-0"
    """Where the build directory appears inside; the builder starts there."""
    writable_dirs: Mapping[str, str] = field(default_factory=dict)
    """Host directory to in-sandbox path, bound writable after the mounts."""
    hostname: str = "localhost"
    """The host name inside."""
    network: bool = False
    """True shares the host's network (fixed-output derivations only)."""
    uid: int = 1000
    """The builder's uid inside."""
    gid: int = 100
    """The builder's gid inside."""
    host_uid: int | None = None
    """The host uid of the builder: default a build user as root, else ours."""
    host_gid: int | None = None
    """The host gid of the builder: default the host uid as root, else ours."""
    timeout: float | None = None
    """Seconds after which the build is killed; ``None`` for no limit."""
    max_silent_time: float | None = None
    """Seconds without output after which the build is killed."""


@dataclass(frozen=True)
class SandboxResult:
    """How a sandboxed build ended."""

    exit_status: int | None
    """The builder's exit code, or ``None`` if a signal killed it."""
    signal: int | None
    """The signal that killed the builder, if any."""
    timed_out: bool
    """The build ran past :attr:`SandboxSpec.timeout` and was killed."""
    silent_too_long: bool
    """The build was silent past :attr:`SandboxSpec.max_silent_time`."""
    duration: float
    """Wall-clock seconds from start to end."""

    @property
    def succeeded(self) -> bool:
        """Tell whether the builder exited with status 0 on its own."""
        return self.exit_status == 0 and not (self.timed_out or self.silent_too_long)


Log = BinaryIO | Callable[[bytes], object]


def run_sandboxed(spec: SandboxSpec, log: Log) -> SandboxResult:
    """Run ``spec.command`` in a new sandbox; stream its output to ``log``.

    :param log: a binary file, or a callable given each chunk of output.
    :returns: how the build ended; a failed build is a result, not an error.
    :raises LinuxError: a system call of the setup failed.
    :raises SandboxError: another setup failure, as a missing bind source or
        a builder that cannot be executed.
    """
    assert spec.command and spec.command[0].startswith("/"), spec.command
    write = log if callable(log) else log.write
    log_read, log_write = os.pipe2(os.O_CLOEXEC)
    try:
        plan = _plan(spec, log_write)
        _give_to_build_user(spec)
        logger.debug("starting sandboxed build: %s", spec.command)
        start = time.monotonic()
        launched = launch(plan, SandboxError)
        os.close(log_write)
        log_write = -1
        return _supervise(spec, launched, log_read, write, start)
    finally:
        os.close(log_read)
        if log_write >= 0:
            os.close(log_write)


def _host_ids(spec: SandboxSpec) -> tuple[int, int]:
    """Return the host uid and gid of the builder."""
    if os.getuid() != 0:
        return os.getuid(), os.getgid()
    uid = BUILD_USER_BASE + 1 if spec.host_uid is None else spec.host_uid
    gid = uid if spec.host_gid is None else spec.host_gid
    if BUILD_USER_BASE in (uid, gid):
        raise SandboxError(
            f"host id '{BUILD_USER_BASE}' cannot be a build user",
            "it owns the sandbox's own files: take build users above it",
        )
    return uid, gid


def _plan(spec: SandboxSpec, log_write: int) -> Plan:
    """Turn ``spec`` into the plan of the sandbox's processes."""
    host_uid, host_gid = _host_ids(spec)
    if os.getuid() == 0:
        uid_map = f"0 {BUILD_USER_BASE} 1\n{spec.uid} {host_uid} 1"
        gid_map = f"0 {BUILD_USER_BASE} 1\n{spec.gid} {host_gid} 1"
    else:
        uid_map, gid_map = f"{spec.uid} {host_uid} 1", f"{spec.gid} {host_gid} 1"

    mounts = list(spec.mounts)
    if spec.network:
        mounts += [
            BindMount(path, path) for path in _NETWORK_FILES if os.path.exists(path)
        ]
    mounts.append(BindMount(spec.build_dir, spec.build_dir_target, writable=True))
    for source, target in sorted(spec.writable_dirs.items(), key=lambda item: item[1]):
        mounts.append(BindMount(source, target, writable=True))

    namespaces = {"user", "mnt", "pid", "ipc", "uts"} | (
        {"net"} if not spec.network else set()
    )
    return Plan(
        namespaces=frozenset(namespaces),
        mounts=tuple(mounts),
        uid_map=uid_map,
        gid_map=gid_map,
        deny_setgroups=os.getuid() != 0,
        become_root=os.getuid() == 0,
        guest_uid=spec.uid,
        guest_gid=spec.gid,
        hostname=spec.hostname,
        loopback=not spec.network,
        files=_etc_files(spec),
        cwd=spec.build_dir_target,
        umask=0o022,
        new_session=True,
        no_new_privs=True,
        stdio=(None, log_write, log_write),
        argv=tuple(spec.command),
        env=dict(spec.env),
    )


def _etc_files(spec: SandboxSpec) -> tuple[tuple[str, bytes], ...]:
    home = spec.build_dir_target
    passwd = (
        f"root:x:0:0:pyguix build root:{home}:/noshell\n"
        f"pyguixbld:x:{spec.uid}:{spec.gid}:pyguix build user:{home}:/noshell\n"
        "nobody:x:65534:65534:nobody:/:/noshell\n"
    )
    group = f"root:x:0:\npyguixbld:!:{spec.gid}:\nnogroup:x:65534:\n"
    files = [("/etc/passwd", passwd.encode()), ("/etc/group", group.encode())]
    if not spec.network:
        files.append(("/etc/hosts", b"127.0.0.1 localhost\n::1 localhost\n"))
    return tuple(files)


def _give_to_build_user(spec: SandboxSpec) -> None:
    """As root, hand the build and writable directories to the build user."""
    if os.getuid() != 0:
        return
    host_uid, host_gid = _host_ids(spec)
    for directory in (spec.build_dir, *spec.writable_dirs):
        if os.path.isdir(directory):
            os.chown(directory, host_uid, host_gid)


# ---------------------------------------------------------------------------
# Watching the build


@dataclass
class _Watch:
    """The caller's view of a running build: deadlines and what happened."""

    start: float
    last_output: float
    timeout: float | None
    max_silent_time: float | None
    timed_out: bool = False
    silent_too_long: bool = False
    killed: bool = False

    def wait_time(self, now: float) -> float | None:
        """Return how long select may wait before a deadline, or ``None``."""
        deadlines = []
        if self.timeout is not None:
            deadlines.append(self.start + self.timeout)
        if self.max_silent_time is not None:
            deadlines.append(self.last_output + self.max_silent_time)
        return max(0.0, min(deadlines) - now) if deadlines else None

    def check(self, now: float) -> bool:
        """Record an expired deadline; return True when the build must die."""
        if self.killed:
            return False
        if self.timeout is not None and now >= self.start + self.timeout:
            self.timed_out = True
        elif (
            self.max_silent_time is not None
            and now >= self.last_output + self.max_silent_time
        ):
            self.silent_too_long = True
        return self.timed_out or self.silent_too_long


def _supervise(
    spec: SandboxSpec,
    launched: Launched,
    log_read: int,
    write: Callable[[bytes], object],
    start: float,
) -> SandboxResult:
    """Copy the build's output to the log until it ends, enforcing the limits."""
    watch = _Watch(start, start, spec.timeout, spec.max_silent_time)
    reports = _Reports()
    poller = select.poll()
    for fd in (log_read, launched.messages.fd):
        poller.register(fd, select.POLLIN)
    open_fds = 2
    try:
        while open_fds:
            for fd, _ in poller.poll(_milliseconds(watch.wait_time(time.monotonic()))):
                if fd == log_read:
                    done = _copy_output(log_read, write, watch)
                else:
                    done = reports.read(launched.messages)
                if done:
                    poller.unregister(fd)
                    open_fds -= 1
            if watch.check(time.monotonic()):
                why = "timeout" if watch.timed_out else "silent too long"
                logger.warning("killing build %s: %s", spec.command, why)
                kill_quietly(launched.pid)
                watch.killed = True
    except BaseException:
        kill_quietly(launched.pid)
        launched.messages.close()
        os.waitpid(launched.helper_pid, 0)
        raise
    launched.messages.close()
    reap_helper(launched.helper_pid)

    if reports.error is not None:
        raise_error(reports.error, SandboxError)
    return _result(reports.status, watch)


def _milliseconds(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds * 1000) + 1


def _copy_output(
    log_read: int, write: Callable[[bytes], object], watch: _Watch
) -> bool:
    """Copy one chunk of output to the log; return True at end of file."""
    data = os.read(log_read, 65536)
    if not data:
        return True
    watch.last_output = time.monotonic()
    write(data)
    return False


@dataclass
class _Reports:
    """What the sandbox's processes reported: the wait status, or an error."""

    status: int | None = None
    error: dict[str, object] | None = None

    def read(self, reader: MessageReader) -> bool:
        """Read the reports available; return True at the last one.

        The helper's status is its last word; else the end of file is.
        """
        reader.fill()
        while (message := reader.pop()) is not None:
            if "status" in message:
                raw = message["status"]
                assert isinstance(raw, int)
                self.status = raw
            elif "error" in message:
                self.error = message
        return reader.eof or self.status is not None


def _result(status: int | None, watch: _Watch) -> SandboxResult:
    duration = time.monotonic() - watch.start
    if status is None:
        # The helper vanished without a status: the build was killed.
        return SandboxResult(
            None, signal.SIGKILL, watch.timed_out, watch.silent_too_long, duration
        )
    if os.WIFEXITED(status):
        return SandboxResult(
            os.WEXITSTATUS(status),
            None,
            watch.timed_out,
            watch.silent_too_long,
            duration,
        )
    return SandboxResult(
        None, os.WTERMSIG(status), watch.timed_out, watch.silent_too_long, duration
    )
