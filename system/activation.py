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
import time
import traceback
from collections.abc import Iterable, Sequence

__all__ = [
    "NEW_SYSTEM_VARIABLE",
    "NoFreeIdError",
    "activate_accounts",
    "activate_current_system",
    "activate_etc",
    "allocate_ids",
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


# ---------------------------------------------------------------------------
# accounts

_ID_MIN = 1000
_ID_MAX = 60000
_SYSTEM_ID_MIN = 100
_SYSTEM_ID_MAX = 999


class NoFreeIdError(Exception):
    """Report that every id of a range is taken (a plain exception: this
    module cannot import :mod:`store.errors`).

    :param system: whether the range is the system one (100 to 999) rather
        than the users' one (1000 to 59999).
    """

    def __init__(self, system: bool) -> None:
        low, high = (
            (_SYSTEM_ID_MIN, _SYSTEM_ID_MAX) if system else (_ID_MIN, _ID_MAX - 1)
        )
        super().__init__(f"no free id is left from {low} to {high}")
        self.system = system


class _Allocation:
    """The ids taken so far and where the next search starts in each range
    (Guix's ``<allocation>``): users' ids are searched upwards, system ids
    downwards, each wrapping around its range."""

    def __init__(self) -> None:
        self.taken: set[int] = set()
        self.next_id = _ID_MIN
        self.next_system_id = _SYSTEM_ID_MAX

    def reserve(self, ids: Iterable[int], skip: bool = True) -> None:
        """Mark ``ids`` taken; with ``skip``, start the next searches after
        the highest users' id and below the lowest system id among them
        (Guix's ``reserve-ids``)."""
        ids = list(ids)
        self.taken.update(ids)
        if not skip:
            return
        user_ids = [number for number in ids if _ID_MIN <= number < _ID_MAX]
        system_ids = [
            number for number in ids if _SYSTEM_ID_MIN < number <= _SYSTEM_ID_MAX
        ]
        if user_ids:
            self.next_id = max(user_ids) + 1
        if system_ids:
            self.next_system_id = min(system_ids) - 1

    def allocate(self, system: bool) -> int:
        """Take and return the first free id from the search start (Guix's
        ``allocate-id``).

        :raises NoFreeIdError: when the whole range is taken.
        """
        low, high = (
            (_SYSTEM_ID_MIN, _SYSTEM_ID_MAX) if system else (_ID_MIN, _ID_MAX - 1)
        )
        start = self.next_system_id if system else self.next_id
        number = start if low <= start <= high else (high if system else low)
        for _ in range(high - low + 1):
            following = number - 1 if system else number + 1
            following = low + (following - low) % (high - low + 1)
            if number not in self.taken:
                self.taken.add(number)
                if system:
                    self.next_system_id = following
                else:
                    self.next_id = following
                return number
            number = following
        raise NoFreeIdError(system)


def allocate_ids(
    requests: Sequence[tuple[str, int | None, bool]],
    current: Sequence[tuple[str, int]] = (),
) -> list[int]:
    """Return the id of each ``(name, requested id, system?)`` request.

    A requested id is given as is; else the id ``current`` (the entries of
    the existing database, in file order) gives the name is kept; else a new
    id is allocated, in the system range for system accounts, after the
    highest id in use (below the lowest for system ones), skipping every id
    in use or requested (Guix's ``allocate-passwd`` and ``allocate-groups``).
    Unlike Guix, an existing id that another account now requests is not
    kept, so that two accounts never share it.

    :raises NoFreeIdError: when a range has no free id left.
    """
    allocation = _Allocation()
    allocation.reserve([number for _, number in current])
    requested = {number for _, number, _ in requests if number is not None}
    allocation.reserve(requested, skip=False)
    previous: dict[str, int] = {}
    for name, number in current:
        previous.setdefault(name, number)

    ids: list[int] = []
    for name, wanted, system in requests:
        if wanted is not None:
            allocation.reserve([wanted])
            ids.append(wanted)
        elif name in previous and previous[name] not in requested:
            ids.append(previous[name])
        else:
            ids.append(allocation.allocate(system))
    return ids


def activate_accounts(
    passwd: str,
    group: str,
    shadow: str,
    homes: Sequence[tuple[str, int, int]],
    root: str = "/etc",
    today: int | None = None,
) -> None:
    """Merge the declared accounts with the files in ``root`` and write
    ``passwd``, ``group`` and ``shadow`` (mode 0600) there, each replaced
    atomically, then create each home ``(path, uid, gid)`` that does not
    exist, owned by the user whose home it is, mode 0700 (Guix's
    ``activate-users+groups``, with ``user+group-databases``).

    ``passwd``, ``group`` and ``shadow`` are declarations, in the files'
    formats but for ids (see :mod:`system.accounts`): an id field is a
    number (fixed), empty (allocated) or ``system`` (allocated in the system
    range), and a user's group field is a gid or a group name.  Accounts
    already in the files keep their ids (unless fixed otherwise), the
    passwords of groups, the comments of users and their whole shadow
    entries; new users' shadow entries get the declared password and
    ``today`` (days since 1970, default now) as the date of the last
    change.  Accounts no longer declared are dropped.

    :raises NoFreeIdError: when the ids run out.
    :raises ValueError: on a malformed declaration.
    """
    os.makedirs(root, exist_ok=True)
    paths = {name: os.path.join(root, name) for name in ("passwd", "group", "shadow")}

    groups = _merge_groups(_entries(group, 4), _read_entries(paths["group"], 4))
    users = _merge_users(_entries(passwd, 7), _read_entries(paths["passwd"], 7), groups)
    shadows = _merge_shadow(
        [user[0] for user in users],
        _by_name(shadow.splitlines()),
        _by_name(_read_lines(paths["shadow"])),
        _days_since_epoch() if today is None else today,
    )

    _write_atomically(paths["group"], _lines(groups), 0o644)
    _write_atomically(paths["passwd"], _lines(users), 0o644)
    _write_atomically(paths["shadow"], "".join(line + "\n" for line in shadows), 0o600)
    _create_homes(homes, users)


def _read_lines(path: str) -> list[str]:
    """Return the lines of the file at ``path``, none if it does not exist."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as file:
            return file.read().splitlines()
    except FileNotFoundError:
        return []


def _read_entries(path: str, fields: int) -> list[list[str]]:
    """Return the entries of the database at ``path``, as in :func:`_entries`."""
    return _entries("\n".join(_read_lines(path)), fields)


def _entries(text: str, fields: int) -> list[list[str]]:
    """Return the lines of ``text`` split at ``:``, skipping those without
    a name or with another number of fields than ``fields``."""
    entries = [line.split(":") for line in text.splitlines()]
    return [entry for entry in entries if len(entry) == fields and entry[0]]


def _by_name(lines: Iterable[str]) -> dict[str, str]:
    """Map the name (first field) of each line to the first line with it."""
    result: dict[str, str] = {}
    for line in lines:
        if line:
            result.setdefault(line.split(":", 1)[0], line)
    return result


def _lines(entries: Iterable[list[str]]) -> str:
    """Return ``entries`` as database text."""
    return "".join(":".join(entry) + "\n" for entry in entries)


def _requested_id(field: str, what: str) -> tuple[int | None, bool]:
    """Return the fixed id of a declared id ``field`` (``None`` for one to
    allocate) and whether it is to be allocated in the system range."""
    if field.isdigit():
        return int(field), False
    if field in ("", "system"):
        return None, field == "system"
    raise ValueError(f"{what} has id '{field}'; expected a number, '' or 'system'")


def _current_ids(entries: Iterable[list[str]]) -> list[tuple[str, int]]:
    """Return the ``(name, id)`` of the existing ``entries`` (id third)."""
    return [(entry[0], int(entry[2])) for entry in entries if entry[2].isdigit()]


def _allocate_entries(
    declared: Sequence[list[str]], old: Sequence[list[str]], what: str
) -> list[int]:
    """Return the ids of the ``declared`` entries given the ``old`` ones."""
    requests = []
    for entry in declared:
        number, system = _requested_id(entry[2], f"{what} '{entry[0]}'")
        requests.append((entry[0], number, system))
    return allocate_ids(requests, _current_ids(old))


def _merge_groups(
    declared: Sequence[list[str]], old: Sequence[list[str]]
) -> list[list[str]]:
    """Return the group entries: declared ones, with old gids and passwords."""
    previous = {entry[0]: entry for entry in reversed(old)}
    gids = _allocate_entries(declared, old, "group")
    result = []
    for (name, password, _, members), gid in zip(declared, gids, strict=True):
        if name in previous:
            password = previous[name][1]
        result.append([name, password, str(gid), members])
    return result


def _merge_users(
    declared: Sequence[list[str]],
    old: Sequence[list[str]],
    groups: Sequence[list[str]],
) -> list[list[str]]:
    """Return the passwd entries: declared ones, with old uids and comments,
    and their groups' gids."""
    previous = {entry[0]: entry for entry in reversed(old)}
    gids = {entry[0]: entry[2] for entry in groups}
    uids = _allocate_entries(declared, old, "user")
    result = []
    for (name, _, _, group, comment, home, shell), uid in zip(
        declared, uids, strict=True
    ):
        if not group.isdigit() and group not in gids:
            raise ValueError(
                f"user '{name}' has group '{group}', which is not declared"
            )
        if name in previous:
            comment = previous[name][4]
        gid = group if group.isdigit() else gids[group]
        result.append([name, "x", str(uid), gid, comment, home, shell])
    return result


def _merge_shadow(
    names: Iterable[str],
    declared: dict[str, str],
    old: dict[str, str],
    today: int,
) -> list[str]:
    """Return the shadow lines of the users ``names``: the old line when
    there is one, else the declared one (a locked password by default)
    changed ``today`` (Guix's ``passwd->shadow``)."""
    lines = []
    for name in names:
        if name in old:
            lines.append(old[name])
            continue
        fields = declared.get(name, f"{name}:!::0:99999:7:::").split(":")
        fields += [""] * (9 - len(fields))
        fields[2] = str(today)
        lines.append(":".join(fields))
    return lines


def _days_since_epoch() -> int:
    """Return the number of days since 1970-01-01 UTC (Guix's
    ``days-since-epoch``)."""
    return int(time.time()) // 86400


def _create_homes(
    homes: Iterable[tuple[str, int, int]], users: Sequence[list[str]]
) -> None:
    """Create each home that does not exist, mode 0700, owned by the user
    (of ``users``) whose home it is, else by the ids given with it."""
    owners: dict[str, tuple[int, int]] = {}
    for user in users:
        if user[3].isdigit():
            owners.setdefault(user[5], (int(user[2]), int(user[3])))
    for path, uid, gid in homes:
        if os.path.exists(path):
            continue
        uid, gid = owners.get(path, (uid, gid))
        os.makedirs(path, mode=0o700)
        try:
            os.chown(path, uid, gid)
        except OSError as error:
            _say(f"warning: cannot give '{path}' to {uid}:{gid}: {error}")


def _write_atomically(path: str, text: str, mode: int) -> None:
    """Write ``text`` to ``path`` through a temporary file created with
    ``mode`` (so a shadow file is never readable by others) and a rename."""
    temporary = path + ".new"
    _remove(temporary)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with open(descriptor, "w", encoding="utf-8", errors="surrogateescape") as file:
        os.fchmod(file.fileno(), mode)
        file.write(text)
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
