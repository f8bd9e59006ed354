"""Give a store item its canonical metadata, and remove read-only trees.

In the store every file is owned by the store, read-only, and dated
1 January 1970 00:00:01, so that only the contents and the executable bit
(the things a NAR records) tell two items apart.  :func:`canonicalise` is
Nix's ``canonicalisePathMetaData``: regular files become 0444, or 0555 when
their owner could execute them; directories become 0555; every entry's
mtime becomes 1; set-uid and set-gid bits go.  Other file types (devices,
FIFOs, sockets) cannot be stored and are refused.

Both walk trees with :func:`walk_up`, which keeps a stack instead of
recursing, so that a tree nested deeper than Python's recursion limit (Nix
and the file system allow it) is handled like any other.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator

from store.errors import StoreError

__all__ = [
    "CANONICAL_MTIME",
    "UnsupportedFileError",
    "canonicalise",
    "remove_tree",
    "walk_up",
]

CANONICAL_MTIME = 1


class UnsupportedFileError(StoreError):
    """Report a file of a type a store item cannot hold."""

    def __init__(self, path: str, mode: int) -> None:
        super().__init__(
            f"'{path}' has an unsupported file type ({stat.filemode(mode)[0]!r})",
            "store items hold only regular files, directories and symlinks",
        )
        self.path = path


def _canonical_mode(path: str, mode: int) -> int | None:
    """Return the mode ``path`` must get, or ``None`` for a symlink."""
    if stat.S_ISLNK(mode):
        return None
    if stat.S_ISDIR(mode):
        return 0o555
    if stat.S_ISREG(mode):
        return 0o555 if mode & stat.S_IXUSR else 0o444
    raise UnsupportedFileError(path, mode)


def _canonicalise_one(path: str, mode: int) -> None:
    new_mode = _canonical_mode(path, mode)
    if new_mode is not None and stat.S_IMODE(mode) != new_mode:
        os.chmod(path, new_mode)
    os.utime(path, (CANONICAL_MTIME, CANONICAL_MTIME), follow_symlinks=False)


def walk_up(
    path: str, unlock: Callable[[str, int], None] | None = None
) -> Iterator[tuple[str, os.stat_result]]:
    """Yield ``path`` and everything below it, each with its ``lstat``,
    every directory after its entries (so it may be changed or removed).

    Open directories are kept on a stack of their remaining entry names,
    not in recursive calls, so a tree of any depth is walked; each listing
    is read whole and closed, so no descriptor stays open per level.

    :param unlock: called with a directory's path and mode before it is
        listed, to make it readable and writable if it must be.
    :raises FileNotFoundError: when ``path`` does not exist.
    """
    stack: list[tuple[str, os.stat_result, Iterator[str]]] = []
    next_path: str | None = path
    while True:
        if next_path is not None:
            info = os.lstat(next_path)
            if stat.S_ISDIR(info.st_mode):
                if unlock is not None:
                    unlock(next_path, info.st_mode)
                stack.append((next_path, info, iter(os.listdir(next_path))))
            else:
                yield next_path, info
        if not stack:
            return

        # Go down into the next entry, or leave a finished directory.
        directory, info, names = stack[-1]
        name = next(names, None)
        if name is None:
            stack.pop()
            next_path = None
            yield directory, info
        else:
            next_path = os.path.join(directory, name)


def _unlock_unless_root(path: str, mode: int) -> None:
    """Make a directory its owner cannot write 0755, unless running as root."""
    if not mode & stat.S_IWUSR and os.geteuid() != 0:
        os.chmod(path, 0o755)


def _unlock(path: str, mode: int) -> None:
    """Make a directory its owner cannot write 0755."""
    if not mode & stat.S_IWUSR:
        os.chmod(path, 0o755)


def canonicalise(path: str) -> None:
    """Make the tree at ``path`` read-only, dated 1, keeping only the exec bit.

    Children are done before their directory, so the directory's mtime is
    set last and stays 1.

    :raises UnsupportedFileError: on a device, FIFO or socket; the tree is
        then left partly canonicalised.
    """
    for entry, info in walk_up(path, _unlock_unless_root):
        mode = info.st_mode
        if stat.S_ISDIR(mode):
            # Listing may have unlocked it.
            mode = os.lstat(entry).st_mode
        _canonicalise_one(entry, mode)


def remove_tree(path: str) -> int:
    """Remove the tree at ``path``, read-only or not; return the bytes freed.

    Freed bytes are the sizes of files and symlinks with one link, as Nix's
    ``deletePath`` does.  A missing ``path`` frees nothing.
    """
    freed = 0
    try:
        for entry, info in walk_up(path, _unlock):
            if stat.S_ISDIR(info.st_mode):
                os.rmdir(entry)
                continue
            os.unlink(entry)
            if info.st_nlink == 1:
                freed += info.st_size
    except FileNotFoundError:
        if os.path.lexists(path):
            raise
    return freed
