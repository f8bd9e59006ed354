"""Read a source tree into the store: hash it, copy it, flush it.

These are the file-system steps of adding (Nix's ``addToStore`` from a
path): :func:`hash_source` computes the content hash that names the item
and the NAR hash recorded for it in one pass over the source;
:func:`copy_source` copies only what a NAR records (contents, symlinks, the
executable bit) and hashes the NAR of what it wrote on the way, so that a
source changing in between is caught without reading the copy again;
:func:`fsync_tree` flushes a new item before it is registered.

A single-file item given as bytes (a text) takes a shorter way:
:func:`write_file` creates it canonical (mode ``0444``, dated 1) through one
descriptor, and :func:`file_nar_hash` hashes its NAR from the bytes in
memory, which for a regular file is the framing below around the contents::

    "nix-archive-1" "(" "type" "regular" "contents" <contents> ")"
"""

from __future__ import annotations

import hashlib
import os
import stat

from store import nar
from store.canonical import CANONICAL_MTIME, walk_up
from store.errors import StoreError
from store.hash import Hash
from store.nar.grammar import MAGIC, padding, token

__all__ = [
    "copy_source",
    "file_nar_hash",
    "fsync",
    "fsync_tree",
    "hash_source",
    "write_file",
]

_FILE_HEAD = b"".join(token(t) for t in (MAGIC, b"(", b"type", b"regular", b"contents"))
"""The NAR of a regular, non-executable file, up to its contents' token."""

_CLOSE = token(b")")


def file_nar_hash(data: bytes) -> tuple[Hash, int]:
    """Return the NAR hash and NAR size of a non-executable file holding
    ``data``, as :func:`store.nar.hash_path` would find it on disk."""
    hasher = hashlib.sha256(_FILE_HEAD)
    hasher.update(len(data).to_bytes(8, "little"))
    hasher.update(data)
    tail = padding(len(data)) + _CLOSE
    hasher.update(tail)
    size = len(_FILE_HEAD) + 8 + len(data) + len(tail)
    return Hash("sha256", hasher.digest()), size


def write_file(path: str, data: bytes, durable: bool) -> None:
    """Create ``path`` holding ``data``, canonical: mode ``0444``, dated 1.

    :param durable: flush the file to disk before closing it.
    :raises FileExistsError: when ``path`` exists.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

        # The mode given to open went through the umask; the time must
        # come after the last write.
        os.fchmod(fd, 0o444)
        os.utime(fd, (CANONICAL_MTIME, CANONICAL_MTIME))
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: str) -> None:
    """Flush the files and directories of the tree at ``path`` to disk,
    each directory after its entries."""
    for entry, info in walk_up(path):
        if not stat.S_ISLNK(info.st_mode):
            fsync(entry)


def fsync(path: str) -> None:
    """Flush the file or directory ``path`` to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def copy_source(source: str, target: str) -> tuple[Hash, int]:
    """Copy ``source`` to ``target`` (contents, symlinks and the exec bit
    only); return the NAR hash and NAR size of the copy.

    Known gap: with :func:`hash_source` before it, a cold add reads the
    source twice where Nix reads it once, and is about 3× slower than
    ``nix-store --add`` (see ``docs/benchmarks.md``).

    :raises NarError: when ``source`` cannot be read or holds a file a NAR
        cannot.
    :raises StoreError: when the copy cannot be written.
    """
    try:
        return nar.copy_path(source, target)
    except OSError as error:
        raise StoreError(
            f"cannot copy '{source}' into the store: {error.strerror}",
            "check that the store's file system has room and is writable",
        ) from None


def hash_source(source: str, recursive: bool, algorithm: str) -> tuple[Hash, Hash, int]:
    """Return the content hash, the NAR hash (sha256) and the NAR size of ``source``.

    One pass over ``source`` computes both hashes of its NAR; a flat hash
    also reads the file's contents once more.
    """
    if not recursive and not stat.S_ISREG(os.lstat(source).st_mode):
        raise StoreError(
            f"cannot add '{source}' flat: it is not a regular file",
            "add directories and symlinks recursively (without --flat)",
        )
    hashers = {"sha256": hashlib.sha256()}
    if recursive:
        hashers.setdefault(algorithm, hashlib.new(algorithm))
    size = 0

    def write(data: bytes) -> None:
        nonlocal size
        size += len(data)
        for hasher in hashers.values():
            hasher.update(data)

    nar.dump(source, write)
    nar_hash = Hash("sha256", hashers["sha256"].digest())
    if recursive:
        return Hash(algorithm, hashers[algorithm].digest()), nar_hash, size
    with open(source, "rb") as file:
        flat = hashlib.file_digest(file, algorithm)
    return Hash(algorithm, flat.digest()), nar_hash, size
