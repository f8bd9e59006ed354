"""The container runtime: run a program in fresh Linux namespaces over a new root.

This mirrors Guix's ``call-with-container`` and ``container-excursion``
(``gnu/build/linux-container.scm``) and is what a system's ``run-container``
script calls (issue 6, item 6).  The build sandbox (:mod:`builders.sandbox`)
is the same machinery with a build's settings.

How a container starts
----------------------

Three processes take part (four with locked mounts, below)::

    caller (P) --fork--> helper (C) --unshare(user, mnt, pid, ...)--+
                                      --fork--> init (G), PID 1 inside

The caller forks the helper *before* anything else: ``unshare`` of a user
namespace fails with ``EINVAL`` in a process with threads, and a fresh fork
has one thread whatever the caller runs.  The helper unshares the
namespaces and tells the caller, which writes the uid and gid maps (only a
process outside may map ids other than its own); the helper then forks the
init, the first process of the new PID namespace, and waits for it.  The
init assembles the root (below), becomes PID 1's payload (``execve`` of a
program, or a Python callable) and reports ``ready``.  Every message,
errors included, travels as one JSON line over a close-on-exec pipe, so a
failed mount reaches the caller as a :class:`~builders.linux.LinuxError`
naming the call, never as a silent exit status (Guix bug 23306).

The helper carries ``PR_SET_PDEATHSIG`` for the caller and the init for the
helper: when pyguix dies, the helper dies, then the init, and the kernel
kills every process of the PID namespace with it.

The root
--------

A tmpfs mounted over ``/tmp`` in the new mount namespace only: nothing is
created on the host, so nothing is left behind even when pyguix is killed.
In it: ``/proc`` for the new PID namespace; ``/sys`` read-only with a
private network namespace (``EPERM`` tolerated, Guix issue 61690); a tmpfs
``/dev`` with the host's ``null``, ``zero``, ``full``, ``random``,
``urandom`` and ``tty`` bound in (a user namespace cannot make device
nodes), a new ``devpts`` instance with ``/dev/ptmx`` pointing into it (Guix
bug 36463), ``/dev/shm``, the ``/dev/fd`` links and, when standard input is
a terminal, that terminal on ``/dev/console``; then the caller's mounts, in
order.  A read-only bind is a bind followed by a read-only remount that
repeats the source's flags (:func:`~builders.linux.bind_flags_of`).  Then
``pivot_root``, and the old root is detached.  Meanwhile the helper, in the
same private network namespace, brings ``lo`` up; the init waits for it
before running its payload.

Bind sources are opened (``O_PATH``) before anything is mounted and before
the init changes its ids, and mounted through ``/proc/self/fd``: hiding
``/tmp`` then hides none of them, host paths are looked up with the
caller's ids, and files in the tmpfs are created with ids mapped in the new
namespace (the kernel refuses, ``EOVERFLOW``, to create files for an
unmapped owner).

Locked mounts
-------------

With ``lock_mounts`` (Guix's ``#:lock-mounts?``, on by default in
:func:`call_with_container` as in Guix, and so for ``guix shell
--container``; Guix's ``container-script``, the ``run-container`` of
``guix system container``, turns it off), once the root is assembled a
fourth process, the *locker*, joins the container's user and mount
namespaces and unshares a *nested* user namespace and a mount namespace;
the init maps the nested namespace's ids to the same ids (each range the
container has, from itself to itself) and joins the locker's mount
namespace.  The helper forks the locker before it unshares anything, so
that the locker takes no PID in the container.  A mount namespace copied
into one owned by a less privileged user namespace has its mounts locked (mount_namespaces(7),
user_namespaces(7)): none of them can be unmounted or moved to reveal what
lies under it (``EINVAL``), and a remount cannot clear their read-only,
``nosuid``, ``nodev``, ``noexec`` or atime flags (``EPERM``), even for root
in the container, even for a process entering it later.

Unlike Guix, whose payload runs in the nested user namespace, the payload
stays in the container's user namespace and only its mount namespace is
the nested one's: the kernel enforces the locks whatever the user namespace
of the caller, so the mounts are just as locked, while root in the
container keeps its rights over the UTS, network, IPC and PID namespaces,
which the nested user namespace does not own (a payload inside it could
neither set the host name nor mount a new ``/proc``).  Ids are unchanged
(``/proc/self/uid_map`` shows the container's map), and
:func:`container_excursion` joins the container's user namespace, which
has the rights over every namespace of the container, the mount namespace
included, as before.

Reading a container's files from the host
------------------------------------------

:func:`open_in_root` and the readers built on it look a path up as a
process whose root is ``/proc/PID/root`` would, one ``O_NOFOLLOW``
component at a time relative to directory descriptors, expanding symlinks
by hand (an absolute one restarts at the root, ``..`` stops there), as
``openat2``'s ``RESOLVE_IN_ROOT``, which Python does not expose.  A
container that links ``/var/log/x.log`` to a host path thus never makes
``pyguix container logs`` print a host file.

Note: this module imports only :mod:`builders.linux` and
:mod:`store.errors`, so that the module closure a ``run-container`` script
carries into the store stays small; keep it so.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import stat
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NoReturn

from builders import linux
from builders.linux import LinuxError
from store.errors import PyguixError

__all__ = [
    "ALL_NAMESPACES",
    "BindMount",
    "ContainerError",
    "FileSystemSpec",
    "MAX_SYMLINKS",
    "call_with_container",
    "container_excursion",
    "in_our_namespace",
    "enter_hint",
    "exit_status",
    "list_directory_in_root",
    "open_in_root",
    "read_file_in_root",
    "read_link_in_root",
]

#: The namespaces a container gets by default, as Guix's ``%namespaces``
#: (without ``cgroup``).
ALL_NAMESPACES = frozenset({"user", "mnt", "pid", "ipc", "uts", "net"})

_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")

# Where the init mounts the new root before pivot_root, in its own mount
# namespace: a directory every system has, already looked up by then.
_ROOT = "/tmp"


class ContainerError(PyguixError):
    """Report that a container could not be set up or entered."""


@dataclass(frozen=True)
class FileSystemSpec:
    """A file system to mount in a container or sandbox.

    A bind mount (``type="bind"``) makes host path ``source`` visible at
    ``target`` inside; any other type is mounted as mount(2) would, with
    ``source`` as the device (``"none"`` for tmpfs-like ones) and ``options``
    as its data string.
    """

    source: str
    """Host path for a bind; device name otherwise."""
    target: str
    """Absolute path inside the container; its mount point is created."""
    writable: bool = False
    """False mounts it read-only (a bind is remounted read-only)."""
    type: str = "bind"
    """The file system type, or ``"bind"``."""
    options: str | None = None
    """The data string of a non-bind mount, as ``"mode=1777,size=64m"``."""
    flags: int = 0
    """Extra ``MS_*`` flags."""

    @property
    def is_bind(self) -> bool:
        """Tell whether this is a bind mount."""
        return self.type == "bind"


@dataclass(frozen=True)
class BindMount(FileSystemSpec):
    """A bind mount: ``BindMount(source_on_host, target_inside, writable)``."""

    def __post_init__(self) -> None:
        assert self.type == "bind", "BindMount is a bind mount"


# ---------------------------------------------------------------------------
# What the init must do, prepared by the caller


@dataclass(frozen=True)
class Plan:
    """Everything the helper and init processes do, decided in the caller.

    Internal to the sandbox and the container runtime: the fields are the
    knobs of :func:`call_with_container` and of a build, resolved.
    """

    namespaces: frozenset[str]
    mounts: tuple[FileSystemSpec, ...] = ()
    uid_map: str = ""
    gid_map: str = ""
    deny_setgroups: bool = False
    become_root: bool = False
    guest_uid: int | None = None
    guest_gid: int | None = None
    hostname: str | None = None
    loopback: bool = True
    writable_root: bool = True
    lock_mounts: bool = False
    mount_sys: bool = False
    console: bool = False
    child_is_pid1: bool = True
    relayed_signals: tuple[int, ...] = ()
    directories: tuple[tuple[str, int], ...] = (("/tmp", 0o1777),)
    files: tuple[tuple[str, bytes], ...] = ()
    cwd: str = "/"
    umask: int | None = None
    new_session: bool = False
    no_new_privs: bool = False
    stdio: tuple[int | None, int | None, int | None] = (None, None, None)
    argv: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    function: Callable[[], int | None] | None = None

    @property
    def flags(self) -> int:
        """Return the unshare(2) flags of the namespaces."""
        flags = 0
        for name in self.namespaces:
            flags |= linux.NAMESPACE_FLAGS[name]
        return flags


@dataclass(frozen=True)
class Launched:
    """A started container: the helper's and the init's host PIDs."""

    helper_pid: int
    pid: int
    messages: MessageReader


class MessageReader:
    """Read JSON lines from the helper and init processes' report pipe."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.eof = False
        self._buffer = b""
        self._pending: list[dict[str, object]] = []

    def fill(self) -> None:
        """Read once from the pipe; at end of file set :attr:`eof`."""
        data = os.read(self.fd, 65536)
        if not data:
            self.eof = True
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        self._pending.extend(json.loads(line) for line in lines if line)

    def pop(self) -> dict[str, object] | None:
        """Return the next complete message already read, or ``None``."""
        return self._pending.pop(0) if self._pending else None

    def next(self) -> dict[str, object] | None:
        """Return the next message, blocking; ``None`` at end of file."""
        while not self._pending and not self.eof:
            self.fill()
        return self.pop()

    def close(self) -> None:
        """Close the pipe, once."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _send(fd: int, message: dict[str, object]) -> None:
    os.write(fd, json.dumps(message).encode() + b"\n")


def error_message(error: BaseException) -> dict[str, object]:
    """Return an exception raised during setup as a message for the caller.

    Paths below the new root, as the init saw them before ``pivot_root``,
    are shown as they are seen from inside.
    """
    if isinstance(error, LinuxError):
        arguments = tuple(_inside(argument) for argument in error.arguments)
        shown = LinuxError(error.call, arguments, error.errno)
        return {"error": {"kind": "linux", **shown.to_dict()}}
    if isinstance(error, PyguixError):
        text, hint = error.message, error.hint
    elif isinstance(error, OSError):
        name = f" '{_inside(error.filename)}'" if error.filename else ""
        text, hint = f"cannot set up the new root:{name}: {error.strerror}", None
    else:
        detail = "".join(traceback.format_exception_only(type(error), error)).strip()
        text, hint = f"setup of the new root failed: {detail}", None
    return {"error": {"kind": "setup", "message": text, "hint": hint}}


def _inside(argument: object) -> object:
    """Return a path below the new root as seen from inside; others as is."""
    if isinstance(argument, str) and argument.startswith(_ROOT + "/"):
        return argument[len(_ROOT) :]
    return argument


def raise_error(
    message: Mapping[str, object], error_class: type[PyguixError]
) -> NoReturn:
    """Raise the error carried by ``message``, as sent by :func:`error_message`."""
    data = message["error"]
    assert isinstance(data, dict)
    if data.get("kind") == "linux":
        raise LinuxError.from_dict(data)
    hint = data.get("hint")
    raise error_class(str(data["message"]), hint if isinstance(hint, str) else None)


# ---------------------------------------------------------------------------
# The caller's side


def launch(plan: Plan, error_class: type[PyguixError] = ContainerError) -> Launched:
    """Start the helper and init processes of ``plan``; return once ready.

    On a setup error the processes are reaped and the error is raised here.
    """
    linux.preload()
    if _EXITING_HELPERS:
        reap_helper(_EXITING_HELPERS.pop())
    message_read, message_write = os.pipe2(os.O_CLOEXEC)
    go_read, go_write = os.pipe2(os.O_CLOEXEC)
    parent = os.getpid()
    helper = os.fork()
    if helper == 0:
        try:
            os.close(message_read)
            os.close(go_write)
            _helper_main(plan, parent, message_write, go_read)
        finally:
            os._exit(2)
    os.close(message_write)
    os.close(go_read)
    reader = MessageReader(message_read)
    try:
        pid = _handshake(plan, helper, reader, go_write, error_class)
    except BaseException as error:
        if not isinstance(error, PyguixError):
            # Interrupted: the init dies with the helper (parent-death signal).
            kill_quietly(helper)
        os.close(go_write)
        os.waitpid(helper, 0)
        reader.close()
        raise
    os.close(go_write)
    return Launched(helper, pid, reader)


def _handshake(
    plan: Plan,
    helper: int,
    reader: MessageReader,
    go_write: int,
    error_class: type[PyguixError],
) -> int:
    """Map ids, let the helper go on and wait for the init's ``ready``."""
    _expect(reader.next(), "unshared", error_class)
    if "user" in plan.namespaces:
        linux.write_id_maps(helper, plan.uid_map, plan.gid_map, plan.deny_setgroups)
    os.write(go_write, b"g")

    # The helper reports the init's pid and the init reports "ready" on the
    # same pipe, from two processes: either may come first.
    pid: int | None = None
    ready = False
    try:
        while pid is None or not ready:
            message = _expect(reader.next(), ("pid", "ready"), error_class)
            if "pid" in message:
                assert isinstance(message["pid"], int), message
                pid = message["pid"]
            else:
                ready = True
    except BaseException:
        if pid is not None:
            kill_quietly(pid)
        raise
    return pid


def _expect(
    message: dict[str, object] | None,
    keys: str | tuple[str, ...],
    error_class: type[PyguixError],
) -> dict[str, object]:
    """Return ``message`` if it carries one of ``keys``; raise what it reports."""
    if message is None:
        raise error_class(
            "the container's setup process exited without a word",
            "look for a message from the kernel (dmesg) or a crash",
        )
    if "error" in message:
        raise_error(message, error_class)
    wanted = (keys,) if isinstance(keys, str) else keys
    assert any(key in message for key in wanted), (keys, message)
    return message


def kill_quietly(pid: int, signum: int = signal.SIGKILL) -> None:
    """Send ``signum`` to ``pid``, which may have exited already."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def wait_helper(
    launched: Launched, error_class: type[PyguixError] = ContainerError
) -> int:
    """Read the init's wait status from the helper, reap it, and return it.

    :raises error_class: the init reported an error after ``ready``: its
        program could not be executed.
    """
    status: int | None = None
    error: dict[str, object] | None = None
    while (message := launched.messages.next()) is not None:
        if "status" in message:
            raw = message["status"]
            assert isinstance(raw, int)
            status = raw
        elif "error" in message:
            error = message
    launched.messages.close()
    _, helper_status = os.waitpid(launched.helper_pid, 0)
    if error is not None:
        raise_error(error, error_class)
    if status is None:
        # The helper died before the init: count it as a kill of the init.
        return helper_status if os.WIFSIGNALED(helper_status) else signal.SIGKILL
    return status


# Helpers that had sent their last word but had not yet exited when their
# caller was done with them; reaped by the next launch or the next reap.
_EXITING_HELPERS: set[int] = set()


def reap_helper(pid: int) -> None:
    """Reap helper ``pid`` once it has sent its status, without waiting for it.

    A helper's exit frees the namespaces it holds (the mount namespace's
    mounts among them), which may take milliseconds after the build's end:
    if it has not exited yet it is reaped later, by the next call of
    :func:`launch` or of this function, so a build's result is not delayed
    by it.  Its namespaces hold nothing visible on the host meanwhile.
    """
    _EXITING_HELPERS.add(pid)
    for helper in list(_EXITING_HELPERS):
        try:
            done, _ = os.waitpid(helper, os.WNOHANG)
        except ChildProcessError:
            done = helper
        if done:
            _EXITING_HELPERS.discard(helper)


def exit_status(status: int) -> int:
    """Turn a wait status into an exit status: the code, or 128 + signal."""
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return 128 + os.WSTOPSIG(status)


def id_maps(
    host_uids: int, host_uid_base: int | None, guest_id: int = 0
) -> tuple[str, str, bool]:
    """Return the uid map, gid map and setgroups choice of a container.

    Root maps ``host_uids`` ids from ``host_uid_base`` (default: its own
    uid, 0, as Guix does); anyone else maps its own uid and gid alone, and
    must deny setgroups first.
    """
    uid, gid = os.getuid(), os.getgid()
    if uid != 0:
        return f"{guest_id} {uid} 1", f"{guest_id} {gid} 1", True
    base = uid if host_uid_base is None else host_uid_base
    return f"{guest_id} {base} {host_uids}", f"{guest_id} {base} {host_uids}", False


# ---------------------------------------------------------------------------
# The helper process


def _helper_main(plan: Plan, parent: int, report: int, go: int) -> NoReturn:
    """Unshare the namespaces, fork the init and report its wait status."""
    try:
        _close_fds_except({report, go, *(fd for fd in plan.stdio if fd is not None)})
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
            signal.signal(signum, signal.SIG_IGN)
        linux.set_parent_death_signal(signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(2)
        if os.getuid() != 0:
            # /proc/PID of a process that is not dumpable (the caller changed
            # ids) belongs to root: the caller could not write the id maps.
            linux.set_dumpable(True)
        locker = _start_locker() if _locks(plan) else None
        linux.unshare(plan.flags)
        _send(report, {"unshared": True})
        if os.read(go, 1) != b"g":
            os._exit(2)
        os.close(go)
        alive_read, alive_write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(alive_write)
            _init_main(plan, report, alive_read, locker)
        os.close(alive_read)
        if locker is not None:
            locker.close()
        _send(report, {"pid": pid})
        # While the init assembles the root: loopback up, in the same
        # network namespace, then let the init go on to its payload.
        if plan.loopback and "net" in plan.namespaces:
            linux.bring_interface_up("lo")
        os.write(alive_write, b"u")
        for fd in set(plan.stdio):
            if fd is not None and fd > 2:
                os.close(fd)
        if locker is not None:
            os.waitpid(locker.pid, 0)
        _, status = os.waitpid(pid, 0)
        _send(report, {"status": status})
        # The status is the last word: the caller need not wait for the
        # end of file, which comes only once this process's memory is freed.
        os.close(report)
        os._exit(0)
    except BaseException as error:  # noqa: BLE001 - reported to the caller
        _send(report, error_message(error))
        os._exit(3)


def _close_fds_except(keep: set[int]) -> None:
    """Close every descriptor above 2 not in ``keep``.

    Note: a helper outlives the caller's other threads' forks: any pipe end
    of another build that it kept open would delay that build's end of file.
    """
    low = 3
    for fd in sorted(fd for fd in keep if fd >= 3):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, _max_fd())


def _max_fd() -> int:
    try:
        return os.sysconf("SC_OPEN_MAX")
    except (ValueError, OSError):
        return 65536


# ---------------------------------------------------------------------------
# The init process: PID 1 of the new PID namespace


def _init_main(
    plan: Plan, report: int, helper_alive: int, locker: Locker | None
) -> NoReturn:
    """Assemble the root, drop privileges and run the payload.

    ``helper_alive`` is a pipe only the helper writes to: one byte once it
    has brought the loopback interface up, which the init waits for before
    it reports ``ready``; at end of file the helper died (maybe before the
    parent-death signal was armed) and the init quits.  ``locker`` is the
    process that makes the locked mount namespace, if the mounts are locked.
    """
    try:
        for signum in (
            signal.SIGINT,
            signal.SIGTERM,
            signal.SIGHUP,
            signal.SIGQUIT,
            signal.SIGPIPE,
            signal.SIGXFSZ,
        ):
            signal.signal(signum, signal.SIG_DFL)
        linux.set_parent_death_signal(signal.SIGKILL)
        sources = _open_sources(plan)
        _take_ids(plan)
        _assemble_root(plan, sources)
        _enter_root(plan)
        if locker is not None:
            _lock_mounts(plan, locker)
        _configure(plan)
        if os.read(helper_alive, 1) != b"u":
            os._exit(2)
        os.close(helper_alive)
    except BaseException as error:  # noqa: BLE001 - reported to the caller
        _send(report, error_message(error))
        os._exit(3)
    _send(report, {"ready": True})
    if not plan.child_is_pid1:
        _act_as_init(plan, report)
    _run_payload(plan, report)


def _open_sources(plan: Plan) -> dict[str, int]:
    """Open every host path to bind, as ``O_PATH`` descriptors, keyed by path."""
    paths = [f"/dev/{name}" for name in _DEVICES]
    if plan.console and os.isatty(0):
        paths.append(os.ttyname(0))
    paths += [spec.source for spec in plan.mounts if spec.is_bind]
    sources: dict[str, int] = {}
    for path in paths:
        if path in sources:
            continue
        try:
            sources[path] = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except FileNotFoundError:
            if not path.startswith("/dev/"):
                raise ContainerError(
                    f"bind mount source '{path}' does not exist",
                    "create it, or drop the mapping",
                ) from None
    return sources


def _take_ids(plan: Plan) -> None:
    """Drop supplementary groups and become the namespace's root if mapped."""
    if not plan.deny_setgroups and "user" in plan.namespaces:
        os.setgroups([])
    if plan.become_root:
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
        linux.set_dumpable(True)


def _assemble_root(plan: Plan, sources: dict[str, int]) -> None:
    root = _ROOT
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
    linux.mount("none", root, "tmpfs", 0, "mode=0755")

    for directory, mode in plan.directories:
        os.makedirs(root + directory, exist_ok=True)
        os.chmod(root + directory, mode)
    for path, content in plan.files:
        os.makedirs(os.path.dirname(root + path), exist_ok=True)
        with open(root + path, "wb") as port:
            port.write(content)
        os.chmod(root + path, 0o444)

    _mount_proc_and_sys(plan)
    _populate_dev(root, sources)
    if plan.console and os.isatty(0):
        _bind_console(root, sources[os.ttyname(0)])
    made: set[str] = set()
    for spec in plan.mounts:
        _mount_one(root, spec, sources.get(spec.source), made)
    for fd in sources.values():
        os.close(fd)


def _mount_proc_and_sys(plan: Plan) -> None:
    nosuid_nodev_noexec = linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
    os.makedirs(_ROOT + "/proc", exist_ok=True)
    if "pid" in plan.namespaces:
        linux.mount("proc", _ROOT + "/proc", "proc", nosuid_nodev_noexec)
    else:
        linux.mount("/proc", _ROOT + "/proc", None, linux.MS_BIND | linux.MS_REC)

    if plan.mount_sys and "net" in plan.namespaces:
        os.makedirs(_ROOT + "/sys", exist_ok=True)
        try:
            linux.mount(
                "sysfs",
                _ROOT + "/sys",
                "sysfs",
                nosuid_nodev_noexec | linux.MS_RDONLY,
            )
        except LinuxError as error:
            if error.errno != errno.EPERM:
                raise


def _populate_dev(root: str, sources: dict[str, int]) -> None:
    dev = root + "/dev"
    os.makedirs(dev, exist_ok=True)
    linux.mount(
        "none",
        dev,
        "tmpfs",
        linux.MS_NOSUID | linux.MS_NOEXEC | linux.MS_STRICTATIME,
        "mode=0755",
    )
    for name in _DEVICES:
        fd = sources.get(f"/dev/{name}")
        if fd is not None:
            _touch(f"{dev}/{name}")
            linux.mount(f"/proc/self/fd/{fd}", f"{dev}/{name}", None, linux.MS_BIND)

    os.mkdir(f"{dev}/pts")
    linux.mount(
        "devpts",
        f"{dev}/pts",
        "devpts",
        linux.MS_NOSUID | linux.MS_NOEXEC,
        "newinstance,ptmxmode=0666,mode=0620",
    )
    os.symlink("pts/ptmx", f"{dev}/ptmx")
    os.mkdir(f"{dev}/shm")
    linux.mount(
        "none",
        f"{dev}/shm",
        "tmpfs",
        linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC,
        "mode=1777",
    )
    os.symlink("/proc/self/fd", f"{dev}/fd")
    for number, name in enumerate(("stdin", "stdout", "stderr")):
        os.symlink(f"/proc/self/fd/{number}", f"{dev}/{name}")


def _bind_console(root: str, fd: int) -> None:
    """Bind the terminal of standard input onto ``/dev/console``, as Guix does."""
    console = root + "/dev/console"
    _touch(console)
    os.chmod(console, 0o600)
    linux.mount(f"/proc/self/fd/{fd}", console, None, linux.MS_BIND)


def _touch(path: str) -> None:
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))


def _make_directory(path: str, made: set[str]) -> None:
    """Create directory ``path`` and its parents, unless done already."""
    if path not in made:
        os.makedirs(path, exist_ok=True)
        made.add(path)


def _mount_one(root: str, spec: FileSystemSpec, fd: int | None, made: set[str]) -> None:
    """Mount ``spec`` under ``root``, creating its mount point.

    ``made`` holds the directories already created under ``root``: the
    bootstrap libraries share a directory, which is then made once.
    """
    target = root + spec.target
    read_only = 0 if spec.writable else linux.MS_RDONLY
    if not spec.is_bind:
        _make_directory(target, made)
        linux.mount(
            spec.source, target, spec.type, spec.flags | read_only, spec.options
        )
        return

    assert fd is not None
    if stat.S_ISDIR(os.fstat(fd).st_mode):
        _make_directory(target, made)
    else:
        _make_directory(os.path.dirname(target), made)
        if not os.path.lexists(target):
            _touch(target)
    try:
        linux.mount(f"/proc/self/fd/{fd}", target, None, linux.MS_BIND | linux.MS_REC)
        if read_only:
            flags = linux.bind_flags_of(fd) | spec.flags | read_only
            linux.mount(None, target, None, linux.MS_REMOUNT | linux.MS_BIND | flags)
    except LinuxError as error:
        # Name the host path, not the descriptor it was mounted through.
        arguments = (spec.source, *error.arguments[1:])
        raise LinuxError(error.call, arguments, error.errno) from None


def _enter_root(plan: Plan) -> None:
    """Make the assembled root the root: pivot_root, then detach the old one."""
    os.chdir(_ROOT)
    linux.pivot_root(".", ".")
    linux.umount2(".", linux.MNT_DETACH)
    os.chdir("/")
    os.chmod("/", 0o755)
    if not plan.writable_root:
        flags = linux.bind_flags_of("/") | linux.MS_RDONLY
        linux.mount(None, "/", None, linux.MS_REMOUNT | linux.MS_BIND | flags)


def _locks(plan: Plan) -> bool:
    """Tell whether to lock the mounts: asked, with user and mount namespaces.

    Guix, too, locks only when it makes both namespaces.
    """
    return plan.lock_mounts and {"user", "mnt"} <= plan.namespaces


@dataclass(frozen=True)
class Locker:
    """The process that makes the locked mount namespace, seen from the init.

    The helper forks it before it unshares anything, so that it takes no
    PID in the container: the payload is PID 1, or 2 behind an init, as
    without locks.  It is seen in the host's ``/proc`` only, which the init
    reaches through :attr:`proc`.
    """

    pid: int
    """Its PID in the caller's PID namespace."""
    request: int
    """Where the init writes ``l`` once the root is ready; closed once joined."""
    answer: int
    """Where it says it has unshared, or its error."""
    proc: int
    """An ``O_PATH`` descriptor of the host's ``/proc``, where it is seen."""

    def close(self) -> None:
        """Close the descriptors, in a process that does not use them."""
        for fd in (self.request, self.answer, self.proc):
            os.close(fd)


def _start_locker() -> Locker:
    """Fork the locker, still in the caller's namespaces; return it."""
    request_read, request_write = os.pipe2(os.O_CLOEXEC)
    answer_read, answer_write = os.pipe2(os.O_CLOEXEC)
    proc = os.open("/proc", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        _locker_main(request_read, answer_write)
    os.close(request_read)
    os.close(answer_write)
    return Locker(pid, request_write, answer_read, proc)


def _locker_main(request: int, answer: int) -> NoReturn:
    """Join the helper's user and mount namespaces, then unshare nested ones.

    Waits for the init's request, which comes once the root is assembled;
    holds the nested namespaces until the init has joined the mount
    namespace (end of file on ``request``).
    """
    try:
        _close_fds_except({request, answer})
        linux.set_parent_death_signal(signal.SIGKILL)
        if os.read(request, 1) != b"l":
            os._exit(0)
        helper = os.getppid()
        for name in ("user", "mnt"):
            fd = os.open(f"/proc/{helper}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
            linux.setns(fd, linux.NAMESPACE_FLAGS[name])
            os.close(fd)
            if name == "user":
                # Own the nested namespace as the container's root, so that
                # the init may write its maps even with subordinate ids.
                _become_root_if_mapped()
                linux.set_dumpable(True)
        linux.unshare(linux.CLONE_NEWUSER | linux.CLONE_NEWNS)
        linux.set_dumpable(True)
        _send(answer, {"unshared": True})
    except BaseException as error:  # noqa: BLE001 - reported to the init
        _send(answer, error_message(error))
        os._exit(3)
    os.read(request, 1)
    os._exit(0)


def _lock_mounts(plan: Plan, locker: Locker) -> None:
    """Move into a copy of the mount namespace owned by a nested user namespace.

    The copy's mounts are locked (see the module docstring).  The init,
    privileged in the container's user namespace, maps the nested one's ids
    to themselves and joins the locker's mount namespace; then the locker
    may exit.
    """
    reader = MessageReader(locker.answer)
    try:
        os.write(locker.request, b"l")
        _expect(reader.next(), "unshared", ContainerError)
        uid_map, gid_map = _identity_map(plan.uid_map), _identity_map(plan.gid_map)
        where = f"/proc/self/fd/{locker.proc}"
        linux.write_id_maps(locker.pid, uid_map, gid_map, False, proc=where)
        fd = os.open(f"{where}/{locker.pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        try:
            linux.setns(fd, linux.CLONE_NEWNS)
        finally:
            os.close(fd)
    finally:
        locker.close()


def _identity_map(id_map: str) -> str:
    """Return the map of a nested namespace keeping the ids of ``id_map``.

    Each ``INSIDE OUTSIDE COUNT`` line becomes ``INSIDE INSIDE COUNT``.
    """
    lines = []
    for line in id_map.splitlines():
        inside, _outside, count = line.split()
        lines.append(f"{inside} {inside} {count}")
    return "\n".join(lines)


def _configure(plan: Plan) -> None:
    """Set the host name, switch ids, and the process state.

    The helper brings ``lo`` up meanwhile (see :func:`_helper_main`).
    """
    if plan.hostname is not None and "uts" in plan.namespaces:
        linux.sethostname(plan.hostname)
    if plan.guest_gid is not None:
        os.setresgid(plan.guest_gid, plan.guest_gid, plan.guest_gid)
    if plan.guest_uid is not None:
        os.setresuid(plan.guest_uid, plan.guest_uid, plan.guest_uid)
    # A change of ids clears the parent-death signal: set it again.
    linux.set_parent_death_signal(signal.SIGKILL)
    if plan.no_new_privs:
        linux.set_no_new_privs()
    if plan.new_session:
        os.setsid()
    if plan.umask is not None:
        os.umask(plan.umask)
    os.chdir(plan.cwd)


def _act_as_init(plan: Plan, report: int) -> NoReturn:
    """Run the payload as PID 2 and be its init: relay signals, reap orphans.

    Exits with the payload's exit status (128 + signal when killed), which
    ends the PID namespace and every process left in it.
    """
    child = os.fork()
    if child == 0:
        _run_payload(plan, report)
    os.close(report)
    for signum in plan.relayed_signals:
        signal.signal(signum, lambda number, _frame: kill_quietly(child, number))
    while True:
        pid, status = os.waitpid(-1, 0)
        if pid == child:
            os._exit(exit_status(status))


def _run_payload(plan: Plan, report: int) -> NoReturn:
    """Run the program or the callable; never return."""
    stdin, stdout, stderr = plan.stdio
    for fd, number in ((stdin, 0), (stdout, 1), (stderr, 2)):
        if fd is not None:
            os.dup2(fd, number)
    if plan.function is not None:
        os.close(report)
        os.environ.clear()
        os.environ.update(plan.env)
        _run_function(plan.function)

    if stdin is None and plan.new_session:
        os.dup2(os.open("/dev/null", os.O_RDONLY), 0)
    _close_fds_except({report})
    try:
        os.execve(plan.argv[0], list(plan.argv), dict(plan.env))
    except OSError as error:
        message = f"cannot run '{plan.argv[0]}' in the container: {error.strerror}"
        _send(
            report,
            {
                "error": {
                    "kind": "setup",
                    "message": message,
                    "hint": "give an absolute path to a program "
                    "that is mounted in the container",
                }
            },
        )
    os._exit(127)


def _run_function(function: Callable[[], int | None]) -> NoReturn:
    code = 1
    try:
        result = function()
        code = result if isinstance(result, int) else 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:  # noqa: BLE001 - the payload's failure is its status
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


# ---------------------------------------------------------------------------
# call_with_container


def call_with_container(
    mounts: Sequence[FileSystemSpec],
    command: Sequence[str] | Callable[[], int | None],
    *,
    namespaces: Iterable[str] = ALL_NAMESPACES,
    host_uids: int = 65536,
    host_uid_base: int | None = None,
    hostname: str | None = None,
    env: Mapping[str, str] | None = None,
    pid_files: Sequence[str] = (),
    relayed_signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM),
    writable_root: bool = True,
    lock_mounts: bool = True,
    loopback: bool = True,
    child_is_pid1: bool = True,
    process_spawned_hook: Callable[[int], None] | None = None,
) -> int:
    """Run ``command`` as PID 1 of a new container and return its exit status.

    Mirrors Guix's ``call-with-container``; unlike Guix's ``run-container``
    script, the container's status is returned: its exit code, or 128 plus
    the signal that killed it.

    :param mounts: file systems to mount, in order, after ``/proc``,
        ``/dev`` and ``/tmp``; the store is one of them (read-only).
    :param command: an argument vector (``argv[0]`` an absolute path inside
        the container) or a callable run in the forked init, whose integer
        result is the exit code.
    :param namespaces: names among ``user mnt pid ipc uts net``; leave out
        ``net`` to share the host's network.  ``mnt`` is required.
    :param host_uids: how many ids root maps; anyone else maps one.
    :param host_uid_base: the first host id that root maps to 0 inside;
        ``None`` maps 0 to the caller's own id, as Guix does (container
        root is then host root for files it can reach); give a subordinate
        range (as 100000) to map it to unprivileged ids instead.
    :param hostname: the host name inside (private UTS namespace).
    :param env: the whole environment of ``command``; nothing is inherited.
    :param pid_files: files where the container's PID is written (the bare
        number), as ``run-container --pid-file``.
    :param relayed_signals: signals the caller forwards to the container's
        PID 1 while it waits (only from the main thread).
    :param writable_root: False remounts the root read-only after setup.
    :param lock_mounts: lock the mounts, so that nothing in the container
        can unmount one or clear its read-only flag (see the module
        docstring); as Guix, on by default, and ignored without the
        ``user`` namespace.  Guix's system containers pass False.
    :param loopback: bring ``lo`` up in a private network namespace.
    :param child_is_pid1: run ``command`` as PID 1, which must then handle
        signals and reap orphans itself (an init does; note that PID 1 dies
        of no signal it has no handler for).  False puts a small init in
        front, as Guix's ``#:child-is-pid1? #f``: it relays the
        ``relayed_signals`` to the command, reaps every process and exits
        with the command's status.
    :param process_spawned_hook: called with the host PID of the
        container's PID 1 once it is ready; :func:`enter_hint` says how to
        enter it.
    :raises LinuxError: a system call of the setup failed.
    :raises ContainerError: another setup failure, as a missing bind source.
    """
    chosen = frozenset(namespaces)
    assert "mnt" in chosen and chosen <= set(linux.NAMESPACE_FLAGS), chosen
    uid_map, gid_map, deny = id_maps(host_uids, host_uid_base)
    plan = Plan(
        namespaces=chosen,
        mounts=tuple(mounts),
        uid_map=uid_map,
        gid_map=gid_map,
        deny_setgroups=deny,
        become_root=os.getuid() == 0 and host_uid_base not in (None, 0),
        hostname=hostname,
        loopback=loopback,
        writable_root=writable_root,
        lock_mounts=lock_mounts,
        mount_sys=True,
        console=True,
        child_is_pid1=child_is_pid1,
        relayed_signals=tuple(relayed_signals),
        env=dict(env or {}),
        argv=() if callable(command) else tuple(command),
        function=command if callable(command) else None,
    )
    launched = launch(plan)
    return exit_status(
        _wait_relaying(launched, relayed_signals, pid_files, process_spawned_hook)
    )


def _wait_relaying(
    launched: Launched,
    relayed: Sequence[int],
    pid_files: Sequence[str],
    hook: Callable[[int], None] | None,
) -> int:
    """Relay signals to the container while waiting for it; return its status."""
    main = threading.current_thread() is threading.main_thread()
    previous = {}
    if main:
        for signum in relayed:
            previous[signum] = signal.signal(
                signum, lambda number, _frame: kill_quietly(launched.pid, number)
            )
    try:
        try:
            _announce(launched.pid, pid_files, hook)
        except BaseException:
            kill_quietly(launched.pid)
            wait_helper(launched)
            raise
        return wait_helper(launched)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _announce(
    pid: int, pid_files: Sequence[str], hook: Callable[[int], None] | None
) -> None:
    """Write the pid files and call the hook, for a container now running."""
    for path in pid_files:
        with open(path, "w") as port:
            port.write(str(pid))
    if hook is not None:
        hook(pid)


def enter_hint(pid: int) -> str:
    """Return the sentence telling how to enter the container of ``pid``."""
    return (
        f"container is running as PID {pid}; enter it with "
        f"'pyguix container exec {pid} COMMAND...' or 'nsenter -a -t {pid}'"
    )


# ---------------------------------------------------------------------------
# container_excursion


_EXCURSION_ORDER = ("user", "ipc", "uts", "net", "pid", "mnt")


def container_excursion(
    pid: int, argv: Sequence[str], env: Mapping[str, str] | None = None
) -> int:
    """Run ``argv`` inside the namespaces of process ``pid``; return its status.

    Mirrors Guix's ``container-excursion``: the user namespace is joined
    first (it grants the rights to join the others), the mount namespace
    last (so ``/proc/PID`` stays reachable until then), and the process
    forks again, since a new PID namespace applies to children only.  The
    command gets ``env`` alone and runs in ``/``; a command name without a
    ``/`` is looked up in the ``PATH`` of ``env``, inside the container.

    :returns: the command's exit code, or 128 plus the signal that killed it.
    :raises ContainerError: ``pid`` does not exist, or ``argv[0]`` cannot run.
    :raises LinuxError: joining a namespace failed.
    """
    if not os.path.isdir(f"/proc/{pid}"):
        raise ContainerError(f"no process '{pid}'", "give the PID of a container")
    assert argv, "a command is required"
    linux.preload()
    report_read, report_write = os.pipe2(os.O_CLOEXEC)
    child = os.fork()
    if child == 0:
        os.close(report_read)
        _excursion_child(pid, argv, env or {}, report_write)
    os.close(report_write)
    reader = MessageReader(report_read)
    message = reader.next()
    reader.close()
    _, status = os.waitpid(child, 0)
    if message is not None and "error" in message:
        raise_error(message, ContainerError)
    return exit_status(status)


def _excursion_child(
    pid: int, argv: Sequence[str], env: Mapping[str, str], report: int
) -> NoReturn:
    try:
        _close_fds_except({report})
        targets = _namespaces_to_join(pid)
        for name, fd in targets:
            linux.setns(fd, linux.NAMESPACE_FLAGS[name])
            os.close(fd)
            if name == "user":
                _become_root_if_mapped()
        os.chdir("/")
        grandchild = os.fork()
        if grandchild == 0:
            _exec_or_report(argv, env, report)
        os.close(report)
        _, status = os.waitpid(grandchild, 0)
        os._exit(exit_status(status))
    except BaseException as error:  # noqa: BLE001 - reported to the caller
        _send(report, error_message(error))
        os._exit(127)


def in_our_namespace(pid: int, name: str) -> bool:
    """Tell whether ``pid`` is in this process's namespace of kind ``name``
    (``user``, ``mnt``, ``pid``...).

    :raises OSError: when ``/proc/PID/ns/NAME`` cannot be read.
    """
    return os.readlink(f"/proc/{pid}/ns/{name}") == os.readlink(f"/proc/self/ns/{name}")


def _namespaces_to_join(pid: int) -> list[tuple[str, int]]:
    """Open the namespaces of ``pid`` that are not ours, in the order to
    join them.

    :raises ContainerError: they cannot be read, as those of a process of
        another user, or one the kernel does not let us trace.
    """
    targets = []
    try:
        for name in _EXCURSION_ORDER:
            if not in_our_namespace(pid, name):
                path = f"/proc/{pid}/ns/{name}"
                targets.append((name, os.open(path, os.O_RDONLY | os.O_CLOEXEC)))
    except OSError as error:
        raise ContainerError(
            f"cannot enter the namespaces of process '{pid}': "
            f"'{error.filename}': {error.strerror}",
            "run as root, or as the user who started the container; "
            "'pyguix container list' shows the containers",
        ) from None
    return targets


def _become_root_if_mapped() -> None:
    """Take uid and gid 0 of the user namespace just joined, if they are mapped.

    A container whose root maps to a subordinate id does not map the
    caller's own ids: without this the command would run as the overflow
    id, unable to create files.
    """
    with open("/proc/self/uid_map") as port:
        mapped = any(line.split()[0] == "0" for line in port if line.strip())
    if not mapped or os.getuid() == 0:
        return
    with contextlib.suppress(PermissionError):
        os.setgroups([])
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)


def _exec_or_report(
    argv: Sequence[str], env: Mapping[str, str], report: int
) -> NoReturn:
    try:
        os.execvpe(argv[0], list(argv), dict(env))
    except OSError as error:
        message = f"cannot run '{argv[0]}' in the container: {error.strerror}"
        searched = env.get("PATH", os.defpath) if "/" not in argv[0] else None
        hint = "give an absolute path inside the container" + (
            f", or a program on its PATH ({searched})" if searched else ""
        )
        _send(report, {"error": {"kind": "setup", "message": message, "hint": hint}})
    os._exit(127)


# ---------------------------------------------------------------------------
# Files of a running container, read from the host


MAX_SYMLINKS = 40
"""Symlinks followed in one lookup before ``ELOOP``, as Linux's limit."""


def open_in_root(root: str, path: str, *, follow: bool = True) -> int:
    """Return an ``O_PATH`` descriptor of ``path`` as a process whose root
    is ``root`` sees it (``openat2``'s ``RESOLVE_IN_ROOT``).

    Every component is opened with ``O_NOFOLLOW`` relative to its parent's
    descriptor, so that nothing is looked up twice and a swap between steps
    cannot lead elsewhere; a symlink is read and expanded by hand: an
    absolute one starts again at ``root``, ``..`` stops at ``root``.  So a
    container's ``/proc/PID/root`` never leads a host process out of it.

    :param follow: follow a symlink in the last component too.
    :raises OSError: a component is missing (``ENOENT``) or not a directory
        (``ENOTDIR``), or more than :data:`MAX_SYMLINKS` links (``ELOOP``).
    """
    flags = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
    # The root itself is followed: /proc/PID/root is a link to it.
    parents = [os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)]
    pending = _components(path)
    links = 0
    try:
        while pending:
            name = pending.pop(0)
            if name == "..":
                if len(parents) > 1:
                    os.close(parents.pop())
                continue

            fd = os.open(name, flags, dir_fd=parents[-1])
            mode = os.fstat(fd).st_mode
            if stat.S_ISLNK(mode) and (pending or follow):
                links += 1
                pending = _expand_link(fd, pending, parents, links, path)
                continue
            if pending and not stat.S_ISDIR(mode):
                os.close(fd)
                raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
            parents.append(fd)
        return parents.pop()
    finally:
        for fd in parents:
            os.close(fd)


def _components(path: str) -> list[str]:
    """Return the names of ``path``, without empty ones and ``.``."""
    return [name for name in path.split("/") if name not in ("", ".")]


def _expand_link(
    fd: int, pending: list[str], parents: list[int], links: int, path: str
) -> list[str]:
    """Return the names left to resolve once the symlink ``fd`` is read
    (and closed); an absolute target drops ``parents`` back to the root."""
    try:
        target = os.readlink("", dir_fd=fd)
    finally:
        os.close(fd)
    if links > MAX_SYMLINKS:
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
    if target.startswith("/"):
        while len(parents) > 1:
            os.close(parents.pop())
    return [*_components(target), *pending]


def _reopen(fd: int, flags: int) -> int:
    """Return a new descriptor of the file ``fd`` (``O_PATH``) refers to."""
    return os.open(f"/proc/self/fd/{fd}", flags | os.O_CLOEXEC)


def read_file_in_root(root: str, path: str) -> bytes:
    """Return the contents of the regular file ``path`` of ``root`` (see
    :func:`open_in_root`).

    :raises OSError: as :func:`open_in_root`; ``EINVAL`` when ``path`` is
        not a regular file (a FIFO, a device, a directory).
    """
    fd = open_in_root(root, path)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        with os.fdopen(_reopen(fd, os.O_RDONLY | os.O_NONBLOCK), "rb") as file:
            return file.read()
    finally:
        os.close(fd)


def list_directory_in_root(root: str, path: str) -> list[str]:
    """Return the names in the directory ``path`` of ``root`` (see
    :func:`open_in_root`).

    :raises OSError: as :func:`open_in_root`, ``ENOTDIR`` for a file.
    """
    fd = open_in_root(root, path)
    try:
        directory = _reopen(fd, os.O_RDONLY | os.O_DIRECTORY)
    finally:
        os.close(fd)
    try:
        return os.listdir(directory)
    finally:
        os.close(directory)


def read_link_in_root(root: str, path: str) -> str:
    """Return the target of the symlink ``path`` of ``root``, its parents
    resolved as :func:`open_in_root` does.

    :raises OSError: as :func:`open_in_root`; ``EINVAL`` when ``path`` is
        not a symlink.
    """
    fd = open_in_root(root, path, follow=False)
    try:
        if not stat.S_ISLNK(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a symbolic link", path)
        return os.readlink("", dir_fd=fd)
    finally:
        os.close(fd)
