"""What a system's ``boot`` and ``activate`` programs run, inside the system.

This is the build-side half of the services in :mod:`system.base`, as
Guix's ``gnu/build/activation.scm`` is to ``gnu/services.scm``: the
programs import this module (it is copied into the store with them) and
call its procedures with data baked in when the system was described.  It
uses the standard library only, and must stay so: it runs under the
bootstrap interpreter with nothing else on ``sys.path``.

The hand-over from whoever boots the system is the environment variable
``PYGUIX_NEW_SYSTEM`` (Guix's ``GUIX_NEW_SYSTEM``): the system directory
being activated.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import traceback
from collections.abc import Iterable, Sequence

__all__ = [
    "NEW_SYSTEM_VARIABLE",
    "activate_accounts",
    "activate_current_system",
    "activate_etc",
    "cleanup",
    "exec_init",
    "new_system",
    "run_activation",
    "run_snippets",
    "set_host_name",
]

NEW_SYSTEM_VARIABLE = "PYGUIX_NEW_SYSTEM"
"""The environment variable naming the system directory to activate."""


def _say(text: str) -> None:
    """Print ``text`` on stderr, where the boot log goes."""
    print(text, file=sys.stderr, flush=True)


def new_system(program: str | None = None) -> str:
    """Return the system directory being activated: ``$PYGUIX_NEW_SYSTEM``,
    else the directory of ``program`` (default ``sys.argv[0]``) when it is
    a system directory, as when running ``SYSTEM/boot``.

    :raises SystemExit: when neither names a system directory.
    """
    system = os.environ.get(NEW_SYSTEM_VARIABLE)
    if system:
        return system
    here = os.path.dirname(os.path.abspath(program or sys.argv[0]))
    if all(os.path.exists(os.path.join(here, entry)) for entry in ("boot", "activate")):
        return here
    raise SystemExit(
        f"error: {NEW_SYSTEM_VARIABLE} is not set; "
        "run the system's programs as SYSTEM/boot or set it"
    )


def activate_current_system(
    system: str | None = None, link: str = "/run/current-system"
) -> None:
    """Point ``link`` at ``system`` atomically: a symlink ``LINK.new`` is
    made, then renamed over ``link`` (Guix's ``activate-current-system``)."""
    system = system or new_system()
    os.makedirs(os.path.dirname(link), exist_ok=True)
    temporary = link + ".new"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)
    os.symlink(system, temporary)
    os.rename(temporary, link)
    _say(f"activating system '{system}'")


def run_snippets(snippets: Sequence[tuple[str, str]]) -> int:
    """Run each ``(name, code)`` snippet in a fresh namespace where ``os``
    and ``sys`` are imported, as in a builder, logging and surviving
    failures; return how many failed."""
    failures = 0
    for name, code in snippets:
        _say(f"activating service '{name}'")
        try:
            namespace = {"__name__": name, "os": os, "sys": sys}
            exec(compile(code, f"activate-{name}", "exec"), namespace)
        except BaseException as error:  # a snippet must never stop the others
            if isinstance(error, KeyboardInterrupt):
                raise
            failures += 1
            _say(f"warning: activation of '{name}' failed: {error!r}")
            traceback.print_exc(file=sys.stderr)
    return failures


def cleanup() -> None:
    """Remove stale lock files, empty ``/tmp``, ``/var/run`` and ``/run``
    and recreate them (modes 1777, 755, 755), ignoring every error so the
    system still boots (Guix's ``cleanup-gexp``)."""
    for lock in ("/etc/group.lock", "/etc/passwd.lock", "/etc/.pwd.lock"):
        with contextlib.suppress(OSError):
            os.unlink(lock)
    for directory, mode in (("/tmp", 0o1777), ("/var/run", 0o755), ("/run", 0o755)):
        with contextlib.suppress(OSError):
            _empty_directory(directory)
        with contextlib.suppress(OSError):
            os.makedirs(directory, exist_ok=True)
            os.chmod(directory, mode)


def _empty_directory(directory: str) -> None:
    """Delete what ``directory`` holds, keeping it (it may be a mount point)."""
    if os.path.islink(directory):
        os.unlink(directory)
        return
    for entry in os.listdir(directory):
        path = os.path.join(directory, entry)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(path)


def activate_etc(
    etc: str, copied: Iterable[str] = ("hosts",), root: str = "/etc"
) -> None:
    """Make ``ROOT/static`` point at the store's ``etc`` and each of its
    entries appear in ``root``: a symlink through ``static``, except the
    entries in ``copied``, which are copied so they can be edited (Guix's
    ``activate-etc``).  Stale links into ``static`` are removed."""
    os.makedirs(root, exist_ok=True)
    static = os.path.join(root, "static")
    _replace_with_symlink(etc, static)
    keep = set(copied)

    for entry in sorted(os.listdir(root)):
        path = os.path.join(root, entry)
        if os.path.islink(path) and os.readlink(path).startswith(static + "/"):
            os.unlink(path)

    for entry in sorted(os.listdir(etc)):
        target = os.path.join(root, entry)
        if entry in keep:
            _remove(target)
            shutil.copyfile(os.path.join(etc, entry), target)
            os.chmod(target, 0o644)
        else:
            _remove(target)
            os.symlink(os.path.join(static, entry), target)


def _remove(path: str) -> None:
    """Delete ``path`` whatever it is, if it exists."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def _replace_with_symlink(target: str, link: str) -> None:
    """Point ``link`` at ``target`` atomically."""
    temporary = link + ".new"
    _remove(temporary)
    os.symlink(target, temporary)
    if os.path.isdir(link) and not os.path.islink(link):
        shutil.rmtree(link)
    os.rename(temporary, link)


def activate_accounts(
    passwd: str,
    group: str,
    shadow: str,
    homes: Sequence[tuple[str, int, int]],
    root: str = "/etc",
) -> None:
    """Write ``passwd``, ``group`` and ``shadow`` (mode 0600) in ``root``
    and create each home ``(path, uid, gid)`` that does not exist, owned by
    its user, mode 0700.

    XXX: the files are replaced as a whole; Guix keeps the passwords and the
    ids of accounts that already exist."""
    os.makedirs(root, exist_ok=True)
    for name, text, mode in (
        ("passwd", passwd, 0o644),
        ("group", group, 0o644),
        ("shadow", shadow, 0o600),
    ):
        _write_atomically(os.path.join(root, name), text, mode)
    for path, uid, gid in homes:
        if os.path.exists(path):
            continue
        os.makedirs(path, mode=0o700)
        try:
            os.chown(path, uid, gid)
        except OSError as error:
            _say(f"warning: cannot give '{path}' to {uid}:{gid}: {error}")


def _write_atomically(path: str, text: str, mode: int) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    temporary = path + ".new"
    _remove(path if os.path.islink(path) else temporary)
    with open(temporary, "w", encoding="utf-8") as file:
        file.write(text)
    os.chmod(temporary, mode)
    os.rename(temporary, path)


def set_host_name(name: str) -> None:
    """Set the host name, if this process may (it may in a container's own
    UTS namespace)."""
    try:
        socket.sethostname(name)
    except OSError as error:
        _say(f"warning: cannot set the host name to '{name}': {error}")


def run_activation(program: str) -> None:
    """Run the ``activate`` program, failing the boot if it fails."""
    status = subprocess.call([program])
    if status != 0:
        raise SystemExit(f"error: activation program '{program}' exited with {status}")


def exec_init(program: str, spec: str) -> None:
    """Point ``/run/booted-system`` at the current system, mark descriptors
    above 2 close-on-exec and replace this process with the init
    supervisor reading ``spec`` (Guix's shepherd boot gexp)."""
    with contextlib.suppress(OSError):
        current = os.path.realpath("/run/current-system")
        _replace_with_symlink(current, "/run/booted-system")
    for fd in _open_descriptors():
        if fd > 2:
            with contextlib.suppress(OSError):
                os.set_inheritable(fd, False)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(program, [program, "--spec", spec])


def _open_descriptors() -> list[int]:
    """Return this process's open descriptors."""
    try:
        return [int(entry) for entry in os.listdir("/proc/self/fd")]
    except OSError:
        return list(range(3, 256))
