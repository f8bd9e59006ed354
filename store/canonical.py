"""Give a store item its canonical metadata, and remove read-only trees.

In the store every file is owned by the store, read-only, and dated
1 January 1970 00:00:01, so that only the contents and the executable bit
(the things a NAR records) tell two items apart.  :func:`canonicalise` is
Nix's ``canonicalisePathMetaData``: regular files become 0444, or 0555 when
their owner could execute them; directories become 0555; every entry's
mtime becomes 1; set-uid and set-gid bits go.  Other file types (devices,
FIFOs, sockets) cannot be stored and are refused.
"""

from __future__ import annotations

import os
import stat

from store.errors import StoreError

__all__ = ["CANONICAL_MTIME", "UnsupportedFileError", "canonicalise", "remove_tree"]

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


def canonicalise(path: str) -> None:
    """Make the tree at ``path`` read-only, dated 1, keeping only the exec bit.

    Children are done before their directory, so the directory's mtime is
    set last and stays 1.

    :raises UnsupportedFileError: on a device, FIFO or socket; the tree is
        then left partly canonicalised.
    """
    mode = os.lstat(path).st_mode
    if stat.S_ISDIR(mode):
        if not mode & stat.S_IWUSR and os.geteuid() != 0:
            os.chmod(path, 0o755)
        with os.scandir(path) as entries:
            for entry in entries:
                canonicalise(entry.path)
    _canonicalise_one(path, os.lstat(path).st_mode)


def remove_tree(path: str) -> int:
    """Remove the tree at ``path``, read-only or not; return the bytes freed.

    Freed bytes are the sizes of files and symlinks with one link, as Nix's
    ``deletePath`` does.  A missing ``path`` frees nothing.
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return 0
    freed = 0
    if stat.S_ISDIR(info.st_mode):
        if not info.st_mode & stat.S_IWUSR:
            os.chmod(path, 0o755)
        with os.scandir(path) as entries:
            for entry in entries:
                freed += remove_tree(entry.path)
        os.rmdir(path)
        return freed
    os.unlink(path)
    return info.st_size if info.st_nlink == 1 else 0
