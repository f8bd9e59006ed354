"""Record what keeps store items alive: permanent and temporary GC roots.

*Permanent roots* are symlinks under ``<state>/gcroots`` (searched
recursively) that point to a store path.  An *indirect* root, made by
``--add-root LINK``, is a symlink ``<state>/gcroots/auto/<hash of LINK>``
pointing to LINK, which itself points to the store path; when LINK
disappears, the auto link is stale and the collector removes it.  This is
Nix's ``findRoots``/``addPermRoot`` (``libstore/gc.cc``); a regular file in
``gcroots`` named after a valid item's base name is a root too.

*Temporary roots* belong to a running process: the file
``<state>/temproots/<pid>`` lists store paths, each followed by a NUL byte,
and is exclusively ``flock``-ed for as long as the process lives.  The
collector treats a file whose lock it can take as left by a dead process and
deletes it.  Writers append while holding the GC lock shared and the
collector reads while holding it exclusive, so no root is half-written when
read.

A process adds a temporary root for every item before it starts writing
it, so the file of a dead process also lists what that process may have
left half-added; :func:`abandoned_roots` hands those lists to the store's
crash recovery (see :mod:`store.local`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from store import base32
from store.errors import StoreError

__all__ = [
    "RootError",
    "TempRoots",
    "abandoned_roots",
    "find_permanent_roots",
    "read_temp_roots",
    "make_indirect_root",
]


class RootError(StoreError):
    """Report a GC root that cannot be created."""

    def __init__(self, link: str, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.link = link


@dataclass
class TempRoots:
    """The temporary-roots file of this process, locked while it lives."""

    filename: str
    pid: int
    fd: int
    paths: set[str] = field(default_factory=set)

    @classmethod
    def create(cls, directory: str) -> TempRoots:
        """Create (or take over, after a dead process) ``directory/<pid>``."""
        pid = os.getpid()
        filename = os.path.join(directory, str(pid))
        fd = os.open(
            filename, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600
        )
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        return cls(filename, pid, fd)

    def add(self, path: str) -> None:
        """Append ``path``; the caller holds the GC lock shared."""
        if path not in self.paths:
            os.write(self.fd, path.encode() + b"\0")
            self.paths.add(path)

    def add_many(self, paths: Iterable[str]) -> None:
        """Append those of ``paths`` not yet listed, in one write; the
        caller holds the GC lock shared."""
        new = [p for p in dict.fromkeys(paths) if p not in self.paths]
        if new:
            os.write(self.fd, b"".join(p.encode() + b"\0" for p in new))
            self.paths.update(new)

    def clear(self) -> None:
        """Drop every root; the caller holds the GC lock shared."""
        os.ftruncate(self.fd, 0)
        self.paths.clear()

    def close(self) -> None:
        """Remove the file and release its lock."""
        if self.fd >= 0:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.filename)
            os.close(self.fd)
            self.fd = -1


def read_temp_roots(directory: str) -> dict[str, set[str]]:
    """Return the temporary roots of live processes, by roots file.

    Files whose lock can be taken belong to dead processes and are removed.
    The caller holds the GC lock exclusive.
    """
    roots: dict[str, set[str]] = {}
    for name in sorted(os.listdir(directory)):
        filename = os.path.join(directory, name)
        try:
            fd = os.open(filename, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            if _is_abandoned(fd):
                os.unlink(filename)
                continue
            with os.fdopen(os.dup(fd), "rb") as file:
                data = file.read()
        finally:
            os.close(fd)
        roots[filename] = {p.decode() for p in data.split(b"\0") if p}
    return roots


@contextlib.contextmanager
def abandoned_roots(directory: str) -> Iterator[list[tuple[int, list[str]]]]:
    """Yield the roots files of dead processes as (pid, roots), locked.

    The files stay locked for the block, so no new process with a reused
    pid takes one over meanwhile, and are removed when the block ends
    without error.  The caller holds the GC lock exclusive.
    """
    found: list[tuple[int, list[str]]] = []
    held: list[tuple[str, int]] = []
    try:
        for name in sorted(os.listdir(directory)):
            if not name.isdigit():
                continue
            filename = os.path.join(directory, name)
            try:
                fd = os.open(filename, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            if not _is_abandoned(fd):
                os.close(fd)
                continue
            held.append((filename, fd))
            with os.fdopen(os.dup(fd), "rb") as file:
                data = file.read()
            found.append((int(name), [p.decode() for p in data.split(b"\0") if p]))
        yield found
        for filename, _ in held:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(filename)
    finally:
        for _, fd in held:
            os.close(fd)


def _is_abandoned(fd: int) -> bool:
    """Tell whether nobody holds the lock of the roots file ``fd``."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return False
        raise
    return True


def _store_path_of(target: str, store_dir: str) -> str | None:
    """Return the store path that ``target`` is in or below, if any."""
    prefix = store_dir.rstrip("/") + "/"
    if not target.startswith(prefix):
        return None
    base = target[len(prefix) :].split("/", 1)[0]
    return prefix + base if base else None


def find_permanent_roots(gcroots: str, store_dir: str) -> dict[str, set[str]]:
    """Return the store paths that ``gcroots`` keeps alive, with their links.

    Stale indirect roots under ``gcroots/auto`` are removed.

    :param gcroots: the physical roots directory.
    :param store_dir: the logical store directory that links point into.
    """
    roots: dict[str, set[str]] = {}
    auto = os.path.join(gcroots, "auto")
    for directory, subdirs, files in os.walk(gcroots):
        for name in sorted(subdirs + files):
            link = os.path.join(directory, name)
            found = _root_of(link, store_dir, directory == auto)
            if found is not None:
                roots.setdefault(found[1], set()).add(found[0])
    return roots


def _root_of(link: str, store_dir: str, in_auto: bool) -> tuple[str, str] | None:
    """Return the root's name and the store path ``link`` (in ``gcroots``)
    keeps alive, if any; an indirect root is named by the user's link."""
    if not os.path.islink(link):
        if os.path.isfile(link):
            path = _store_path_of(
                os.path.join(store_dir, os.path.basename(link)), store_dir
            )
            return (link, path) if path else None
        return None
    target = os.path.join(os.path.dirname(link), os.readlink(link))
    path = _store_path_of(target, store_dir)
    if path is not None:
        return link, path

    # An indirect root: the link points to the user's link.
    if not os.path.lexists(target):
        if in_auto:
            os.unlink(link)
        return None
    if not os.path.islink(target):
        return None
    final = os.path.join(os.path.dirname(target), os.readlink(target))
    path = _store_path_of(final, store_dir)
    return (target, path) if path else None


def _auto_name(link: str) -> str:
    """Return the name of the auto root for ``link``: base32 of its sha1."""
    return base32.encode(hashlib.sha1(link.encode()).digest())


def make_indirect_root(gcroots: str, link: str, path: str) -> None:
    """Make ``link`` a symlink to ``path`` and register it as an indirect root.

    :raises RootError: when ``link`` exists and is not a symlink, or cannot
        be created (its directory is missing or not writable).
    """
    link = os.path.abspath(link)
    if os.path.lexists(link) and not os.path.islink(link):
        raise RootError(
            link,
            f"cannot make '{link}' a GC root: it exists and is not a symlink",
            "remove it or choose another link name",
        )
    try:
        _replace_symlink(path, link)
    except OSError as error:
        raise RootError(
            link,
            f"cannot make '{link}' a GC root: {error.strerror}",
            "create its directory first, or choose a link in a writable directory",
        ) from None
    auto = os.path.join(gcroots, "auto")
    os.makedirs(auto, exist_ok=True)
    _replace_symlink(link, os.path.join(auto, _auto_name(link)))


def _replace_symlink(target: str, link: str) -> None:
    """Atomically make ``link`` a symlink to ``target``."""
    temp = f"{link}.tmp-{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temp)
    os.symlink(target, temp)
    os.replace(temp, link)
