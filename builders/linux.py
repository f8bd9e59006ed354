"""Linux system calls for namespaces and mounts, through ctypes on the C library.

Python 3.11 has no ``os.unshare``, ``os.setns``, ``mount`` or ``pivot_root``,
so this module binds them from libc (``use_errno=True``) and turns every
failure into a :class:`LinuxError` that carries the call, its arguments and
``errno``, and says which capability or namespace was missing, with a hint.
An opaque ``EPERM`` is the usual way such code fails; the message is the
documentation users actually read.

Spec: unshare(2), setns(2), mount(2), umount(2), pivot_root(2),
sethostname(2), setdomainname(2), prctl(2), netdevice(7) for
``SIOCGIFFLAGS``/``SIOCSIFFLAGS``, user_namespaces(7) for the id maps.

Note: ``unshare(CLONE_NEWUSER)`` and ``setns`` into a user namespace fail
with ``EINVAL`` in a process that has more than one thread.  Call them only
in a freshly forked child (a fork has one thread), never in a process that
may have started threads; the sandbox and the container runtime fork first.

The probes at the end (:func:`user_namespaces_supported` and friends) let
tests and callers skip with a reason instead of failing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno as errno_module
import fcntl
import functools
import os
import platform
import signal
import socket
import struct

from store.errors import PyguixError

__all__ = [
    "CLONE_NEWCGROUP",
    "CLONE_NEWIPC",
    "CLONE_NEWNET",
    "CLONE_NEWNS",
    "CLONE_NEWPID",
    "CLONE_NEWUSER",
    "CLONE_NEWUTS",
    "MNT_DETACH",
    "MS_BIND",
    "MS_NODEV",
    "MS_NOEXEC",
    "MS_NOSUID",
    "MS_PRIVATE",
    "MS_RDONLY",
    "MS_REC",
    "MS_REMOUNT",
    "MS_STRICTATIME",
    "NAMESPACE_FLAGS",
    "LinuxError",
    "bind_flags_of",
    "bring_interface_up",
    "mount",
    "namespaces_unavailable_reason",
    "pivot_root",
    "preload",
    "set_dumpable",
    "set_no_new_privs",
    "set_parent_death_signal",
    "setdomainname",
    "sethostname",
    "setgroups_supported",
    "setns",
    "umount2",
    "unprivileged_user_namespaces_supported",
    "unshare",
    "user_namespaces_supported",
    "write_id_maps",
]

# Namespace flags of clone(2), unshare(2) and setns(2).
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

#: Namespace names as in ``/proc/PID/ns/`` and their flags.
NAMESPACE_FLAGS: dict[str, int] = {
    "user": CLONE_NEWUSER,
    "mnt": CLONE_NEWNS,
    "pid": CLONE_NEWPID,
    "ipc": CLONE_NEWIPC,
    "uts": CLONE_NEWUTS,
    "net": CLONE_NEWNET,
    "cgroup": CLONE_NEWCGROUP,
}

# Mount flags of mount(2).
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24

# Flags of umount2(2).
MNT_DETACH = 2

_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_PR_SET_NO_NEW_PRIVS = 38

_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_IFREQ = "16sH22x"  # struct ifreq: name, then ifr_flags in the union

# pivot_root has no glibc wrapper; its number depends on the architecture.
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203}

# statvfs(3) flags, turned into the mount flags a bind remount must keep.
_ST_TO_MS = {
    1: MS_RDONLY,
    2: MS_NOSUID,
    4: MS_NODEV,
    8: MS_NOEXEC,
    16: MS_SYNCHRONOUS,
    64: MS_MANDLOCK,
    1024: MS_NOATIME,
    2048: MS_NODIRATIME,
    4096: MS_RELATIME,
}


# ---------------------------------------------------------------------------
# Errors


_NEEDS = {
    "unshare": "creating namespaces needs CAP_SYS_ADMIN, or user namespaces "
    "that unprivileged users may create",
    "setns": "joining a namespace needs CAP_SYS_ADMIN in the user namespace "
    "that owns it",
    "mount": "mounting needs CAP_SYS_ADMIN in the user namespace that owns "
    "the mount namespace",
    "umount2": "unmounting needs CAP_SYS_ADMIN in the user namespace that owns "
    "the mount namespace",
    "pivot_root": "pivot_root needs CAP_SYS_ADMIN in its mount namespace and "
    "a new root that is a mount point, not shared",
    "sethostname": "setting the host name needs CAP_SYS_ADMIN in a private "
    "UTS namespace",
    "setdomainname": "setting the domain name needs CAP_SYS_ADMIN in a "
    "private UTS namespace",
    "ioctl(SIOCSIFFLAGS)": "bringing an interface up needs CAP_NET_ADMIN in a "
    "private network namespace",
    "write_id_maps": "mapping more than one id, or ids other than your own, "
    "needs CAP_SETUID/CAP_SETGID in the parent user namespace (root)",
}

_HINTS = {
    ("unshare", errno_module.EPERM): "run as root, or allow unprivileged user "
    "namespaces (sysctl kernel.unprivileged_userns_clone=1, "
    "kernel.apparmor_restrict_unprivileged_userns=0); inside Docker, "
    "seccomp and a missing CAP_SYS_ADMIN forbid it",
    ("unshare", errno_module.EINVAL): "unshare(CLONE_NEWUSER) fails in a "
    "process with several threads: fork before starting any thread",
    ("unshare", errno_module.ENOSPC): "the limit of user namespaces is "
    "reached: raise /proc/sys/user/max_user_namespaces",
    ("unshare", errno_module.EUSERS): "the limit of user namespaces is "
    "reached: raise /proc/sys/user/max_user_namespaces",
    ("setns", errno_module.EINVAL): "setns into a user namespace fails in a "
    "process with several threads, or for a process that has exited",
    ("mount", errno_module.ENODEV): "this kernel does not know the file system "
    "type: check /proc/filesystems",
    ("mount", errno_module.EROFS): "the mount point is below a read-only mount",
    ("mount", errno_module.EBUSY): "something is mounted there already",
    ("pivot_root", errno_module.EINVAL): "the current root must be a mount "
    "point and not shared; pivot_root cannot run from an initramfs or chroot",
}


def _describe_errno(number: int) -> str:
    name = errno_module.errorcode.get(number, f"errno {number}")
    return f"{name} ({os.strerror(number)})"


class LinuxError(PyguixError):
    """Report a failed system call, naming what it needed.

    :param call: the system call, as ``"mount"`` or ``"ioctl(SIOCSIFFLAGS)"``.
    :param arguments: its arguments, shown in the message.
    :param errno: the ``errno`` it set.
    """

    def __init__(self, call: str, arguments: tuple[object, ...], errno: int) -> None:
        shown = ", ".join(repr(argument) for argument in arguments)
        message = f"{call}({shown}) failed with {_describe_errno(errno)}"
        needs = _NEEDS.get(call)
        if needs is not None and errno in (errno_module.EPERM, errno_module.EACCES):
            message = f"{message}: {needs}"
        hint = _HINTS.get((call, errno))
        if hint is None and errno == errno_module.ENOENT:
            hint = "a path given to it does not exist"
        if hint is None and errno == errno_module.ENOSYS:
            hint = "this kernel lacks the system call or the namespace kind"
        if hint is None and needs is not None and needs not in message:
            hint = needs
        if hint is None and errno in (errno_module.EPERM, errno_module.EACCES):
            hint = (
                "run as root, or where user namespaces are allowed; a remount "
                "inside one must keep the locked flags (nosuid, nodev, noexec)"
            )
        super().__init__(message, hint)
        self.call = call
        self.arguments = arguments
        self.errno = errno

    def to_dict(self) -> dict[str, object]:
        """Return the error as plain data, to send it over a pipe."""
        return {
            "call": self.call,
            "arguments": [repr(argument) for argument in self.arguments],
            "errno": self.errno,
            "message": self.message,
            "hint": self.hint,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> LinuxError:
        """Rebuild an error sent by :meth:`to_dict`, its message unchanged."""
        arguments, errno, hint = data["arguments"], data["errno"], data.get("hint")
        assert isinstance(arguments, list) and isinstance(errno, int)
        error = cls(str(data["call"]), tuple(_Shown(str(a)) for a in arguments), errno)
        error.message = str(data.get("message", error.message))
        error.args = (error.message,)
        error.hint = hint if isinstance(hint, str) else None
        return error


# ---------------------------------------------------------------------------
# The C library


@functools.cache
def _libc() -> ctypes.CDLL:
    name = ctypes.util.find_library("c") or "libc.so.6"
    libc = ctypes.CDLL(name, use_errno=True)
    libc.mount.argtypes = [
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_ulong,
        ctypes.c_char_p,
    ]
    libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    libc.unshare.argtypes = [ctypes.c_int]
    libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    libc.setdomainname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    libc.prctl.argtypes = [
        ctypes.c_int,
        ctypes.c_ulong,
        ctypes.c_ulong,
        ctypes.c_ulong,
        ctypes.c_ulong,
    ]
    libc.syscall.restype = ctypes.c_long
    return libc


def preload() -> None:
    """Load the C library bindings now, in the parent.

    Call before forking a child that makes system calls: the child then
    never runs the dynamic loader, whose locks another thread of the parent
    may hold at the time of the fork.
    """
    _libc()


def _check(result: int, call: str, *arguments: object) -> None:
    if result < 0:
        raise LinuxError(call, arguments, ctypes.get_errno())


def _encode(path: str | None) -> bytes | None:
    return None if path is None else os.fsencode(path)


def _flag_names(flags: int) -> str:
    names = [
        f"CLONE_NEW{name.upper()}"
        for name, bit in NAMESPACE_FLAGS.items()
        if flags & bit
    ]
    return "|".join(names) or hex(flags)


# ---------------------------------------------------------------------------
# System calls


def unshare(flags: int) -> None:
    """Move the calling process into new namespaces, as unshare(2).

    Note: with ``CLONE_NEWUSER`` the caller must have a single thread.
    """
    _check(_libc().unshare(flags), "unshare", _Shown(_flag_names(flags)))


def setns(fd: int, nstype: int = 0) -> None:
    """Join the namespace open at ``fd``, as setns(2)."""
    _check(_libc().setns(fd, nstype), "setns", fd, nstype)


def mount(
    source: str | None,
    target: str,
    fstype: str | None,
    flags: int = 0,
    data: str | None = None,
) -> None:
    """Mount ``source`` on ``target``, as mount(2)."""
    result = _libc().mount(
        _encode(source), _encode(target), _encode(fstype), flags, _encode(data)
    )
    _check(result, "mount", source, target, fstype, _Shown(hex(flags)), data)


def umount2(target: str, flags: int = 0) -> None:
    """Unmount ``target``, as umount2(2)."""
    _check(_libc().umount2(_encode(target), flags), "umount2", target, flags)


def pivot_root(new_root: str, put_old: str) -> None:
    """Make ``new_root`` the root of the mount namespace, as pivot_root(2).

    ``pivot_root(".", ".")`` from inside the new root stacks the old root on
    top of it; ``umount2(".", MNT_DETACH)`` then drops it (see the man page).
    """
    number = _SYS_PIVOT_ROOT.get(platform.machine())
    if number is None:
        raise LinuxError("pivot_root", (new_root, put_old), errno_module.ENOSYS)
    result = _libc().syscall(number, _encode(new_root), _encode(put_old))
    _check(result, "pivot_root", new_root, put_old)


def sethostname(name: str) -> None:
    """Set the host name of the UTS namespace."""
    raw = name.encode()
    _check(_libc().sethostname(raw, len(raw)), "sethostname", name)


def setdomainname(name: str) -> None:
    """Set the NIS domain name of the UTS namespace."""
    raw = name.encode()
    _check(_libc().setdomainname(raw, len(raw)), "setdomainname", name)


def _prctl(option: int, argument: int, call: str) -> None:
    _check(_libc().prctl(option, argument, 0, 0, 0), call, argument)


def set_parent_death_signal(signum: int = signal.SIGKILL) -> None:
    """Have the kernel send ``signum`` to this process when its parent dies.

    Note: the setting is cleared by a change of effective ids, so set it
    after ``setresuid``; it survives ``execve`` of a non-setuid program.
    """
    _prctl(_PR_SET_PDEATHSIG, signum, "prctl(PR_SET_PDEATHSIG)")


def set_no_new_privs() -> None:
    """Forbid this process and its children to gain privileges by execve."""
    _prctl(_PR_SET_NO_NEW_PRIVS, 1, "prctl(PR_SET_NO_NEW_PRIVS)")


def set_dumpable(dumpable: bool = True) -> None:
    """Set the dumpable flag, which decides who owns ``/proc/self``."""
    _prctl(_PR_SET_DUMPABLE, int(dumpable), "prctl(PR_SET_DUMPABLE)")


def bring_interface_up(name: str = "lo") -> None:
    """Set the ``IFF_UP`` flag of interface ``name`` (``lo`` by default).

    A new network namespace has a loopback interface that is down; this is
    the ``ip link set lo up`` of the sandbox and the container.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack(_IFREQ, name.encode(), 0)
        try:
            answer = fcntl.ioctl(sock.fileno(), _SIOCGIFFLAGS, request)
        except OSError as error:
            raise LinuxError("ioctl(SIOCGIFFLAGS)", (name,), error.errno or 0) from None
        flags = struct.unpack(_IFREQ, answer)[1]
        request = struct.pack(_IFREQ, name.encode(), flags | _IFF_UP)
        try:
            fcntl.ioctl(sock.fileno(), _SIOCSIFFLAGS, request)
        except OSError as error:
            raise LinuxError("ioctl(SIOCSIFFLAGS)", (name,), error.errno or 0) from None


def bind_flags_of(fd_or_path: int | str) -> int:
    """Return the mount flags a read-only remount of a bind must keep.

    Inside a user namespace the flags of a mount inherited from the host
    (``nosuid``, ``nodev``, ``noexec``, atime) are locked: a remount that
    drops one fails with ``EPERM``, so they are read with statvfs(3) and
    passed again, as Guix's ``mount-file-system`` does (Guix bug 46292).
    """
    stat = (
        os.fstatvfs(fd_or_path)
        if isinstance(fd_or_path, int)
        else os.statvfs(fd_or_path)
    )
    flags = 0
    for st_flag, ms_flag in _ST_TO_MS.items():
        if stat.f_flag & st_flag:
            flags |= ms_flag
    return flags


def write_id_maps(
    pid: int, uid_map: str, gid_map: str, deny_setgroups: bool, proc: str = "/proc"
) -> None:
    """Write the uid and gid maps of the user namespace of process ``pid``.

    :param uid_map: lines ``"INSIDE OUTSIDE COUNT"``, as user_namespaces(7).
    :param deny_setgroups: write ``deny`` to ``/proc/PID/setgroups`` first,
        which an unprivileged caller must do before writing a gid map.
    :param proc: where a ``proc`` file system showing ``pid`` is mounted
        (or reached, as ``/proc/self/fd/N``).
    """
    files = [("setgroups", "deny")] if deny_setgroups else []
    files += [("uid_map", uid_map), ("gid_map", gid_map)]
    for name, text in files:
        path = f"{proc}/{pid}/{name}"
        try:
            with open(path, "w") as port:
                port.write(text)
        except OSError as error:
            number = error.errno or errno_module.EIO
            raise LinuxError("write_id_maps", (path, text), number) from None


class _Shown(str):
    """A string shown as is, without quotes, in error messages."""

    def __repr__(self) -> str:
        return str(self)


# ---------------------------------------------------------------------------
# Probes


def user_namespaces_supported() -> bool:
    """Tell whether this kernel has user namespaces."""
    return os.path.exists("/proc/self/ns/user")


def unprivileged_user_namespaces_supported() -> bool:
    """Tell whether users other than root may create user namespaces."""
    knob = "/proc/sys/kernel/unprivileged_userns_clone"
    if os.path.exists(knob):
        with open(knob) as port:
            return port.read().strip() == "1"
    return user_namespaces_supported()


def setgroups_supported() -> bool:
    """Tell whether ``/proc/PID/setgroups`` exists (Linux 3.19 and later)."""
    return os.path.exists("/proc/self/setgroups")


@functools.cache
def namespaces_unavailable_reason() -> str | None:
    """Return why new namespaces cannot be made here, or ``None`` if they can.

    Forks a child that unshares user, mount, PID, UTS, IPC and network
    namespaces and mounts a tmpfs, as the sandbox does; the answer is cached.
    """
    if not user_namespaces_supported():
        return "this kernel has no user namespaces (/proc/self/ns/user is missing)"
    if os.getuid() != 0 and not unprivileged_user_namespaces_supported():
        return "unprivileged user namespaces are disabled"
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        _probe_child(write_end)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as port:
        answer = port.read().decode(errors="replace")
    os.waitpid(pid, 0)
    return answer or None


def _probe_child(write_end: int) -> None:
    """Do what the sandbox does first, and write why it failed, if it did."""
    try:
        flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS
        unshare(flags | CLONE_NEWIPC | CLONE_NEWNET)
        mount(None, "/", None, MS_REC | MS_PRIVATE)
        mount("none", "/tmp", "tmpfs", 0, None)
        init = os.fork()
        if init == 0:
            # A new /proc needs the new PID namespace and a visible host /proc.
            try:
                mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
            except LinuxError as error:
                os.write(write_end, str(error).encode())
            os._exit(0)
        os.waitpid(init, 0)
    except LinuxError as error:
        os.write(write_end, str(error).encode())
    except BaseException as error:  # noqa: BLE001 - reported to the parent
        os.write(write_end, repr(error).encode())
    os._exit(0)
