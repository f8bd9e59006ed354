"""Write the NAR of a file tree, and hash it on the way.

This is Nix's ``dumpPath`` (``libutil/archive.cc``); the grammar is in
:mod:`store.nar.grammar`.  The tree is walked with ``lstat``, so symlinks are
recorded, never followed; a regular file is executable iff its owner may
execute it; entries go out sorted by the raw bytes of their names.  Open
directories are kept on a stack rather than in recursive calls, so a tree
of any depth the file system allows is written, as ``nix-hash`` does.

Small tokens are gathered in a buffer and handed out in batches; file
contents are read in large chunks and never held whole, so a file of any
size streams in constant memory.  :func:`hash_path` feeds a hasher directly
from one reusable buffer, which keeps it close to the speed of ``hashlib``
on the file contents alone.

:func:`copy_path` walks the tree once to both hash its NAR and recreate it
elsewhere (what a NAR records only: contents, symlinks, the executable
bit), so the hash is that of the very bytes written, as when Nix restores
an item from the dump it hashed.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from typing import Any

from store.hash import ALGORITHMS, Hash
from store.nar.grammar import MAGIC, NarError, padding, token

__all__ = ["copy_path", "dump", "dump_bytes", "hash_path"]

_CHUNK = 1 << 20
"""How many bytes of a file are read at once."""

_BATCH = 1 << 16
"""Gathered tokens are handed out once they pass this size."""

_TYPE = token(b"(") + token(b"type")
_FILE = _TYPE + token(b"regular") + token(b"contents")
_EXECUTABLE_FILE = (
    _TYPE + token(b"regular") + token(b"executable") + token(b"") + token(b"contents")
)
_SYMLINK = _TYPE + token(b"symlink") + token(b"target")
_DIRECTORY = _TYPE + token(b"directory")
_ENTRY = token(b"entry") + token(b"(") + token(b"name")
_NODE = token(b"node")
_CLOSE = token(b")")
_ENDS = [padding(size) + _CLOSE for size in range(8)]
"""What ends a file node of each size modulo 8: padding, then ``)``."""


class _Mirror:
    """Where a copy of the walked tree goes: ``source`` maps to ``target``."""

    def __init__(self, source: bytes, target: bytes) -> None:
        self.source = source
        self.target = target

    def place(self, path: bytes) -> bytes:
        """Return the copy's name for ``path``, a name under ``source``."""
        return self.target + path[len(self.source) :]

    def create_file(self, path: bytes, executable: int) -> int:
        """Create the copy of the regular file ``path``; return its descriptor."""
        mode = 0o755 if executable else 0o644
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self.place(path), flags, mode)
        # The umask may have taken bits from the mode given to open.
        os.fchmod(fd, mode)
        return fd


def _write_all(fd: int, data: bytes | memoryview) -> None:
    """Write all of ``data`` to ``fd``."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class _Writer:
    """Walk a tree and hand its NAR to ``write`` in batches, copying the
    tree to ``mirror`` on the way if one is given."""

    def __init__(
        self, write: Callable[[Any], object], reuse: bool, mirror: _Mirror | None
    ) -> None:
        self.write = write
        self.reuse = reuse
        self.mirror = mirror
        self.pending = bytearray()
        self.written = 0
        self.buffer = bytearray(_CHUNK) if reuse else bytearray()

    def emit(self, data: bytes) -> None:
        """Queue ``data``, handing the queue out when it has grown large."""
        self.pending += data
        if len(self.pending) >= _BATCH:
            self.flush()

    def flush(self) -> None:
        """Hand out what is queued."""
        if self.pending:
            self.written += len(self.pending)
            # A hasher consumes the buffer at once; other callers may keep it.
            self.write(self.pending if self.reuse else bytes(self.pending))
            self.pending.clear()

    def tree(self, root: bytes) -> None:
        """Write the node of ``root`` and, for a directory, all below it.

        Open directories are kept on a stack of their remaining entry
        names, not in recursive calls, so a tree of any depth is written.
        """
        stack: list[tuple[bytes, Iterator[bytes]]] = []
        self.node(root, stack)
        while stack:
            path, names = stack[-1]
            name = next(names, None)
            if name is not None:
                self.emit(_ENTRY + token(name) + _NODE)
                self.node(path + b"/" + name, stack)
                continue

            # The directory is done: close it, and its entry if it has one.
            stack.pop()
            self.emit(_CLOSE + _CLOSE if stack else _CLOSE)

    def node(self, path: bytes, stack: list[tuple[bytes, Iterator[bytes]]]) -> None:
        """Write the node of ``path``, which must exist, and close its entry
        if it is one; a directory's entries are pushed on ``stack`` instead."""
        try:
            info = os.lstat(path)
        except OSError as error:
            raise self.unreadable(path, "read", error) from None
        if stat.S_ISDIR(info.st_mode):
            stack.append((path, iter(self.directory(path))))
            return
        if stat.S_ISREG(info.st_mode):
            self.regular(path, info)
        elif stat.S_ISLNK(info.st_mode):
            self.symlink(path)
        else:
            raise self.error(
                path,
                "has an unsupported type",
                "a NAR holds only regular files, directories and symlinks",
            )
        if stack:
            self.emit(_CLOSE)

    def symlink(self, path: bytes) -> None:
        """Write a symlink node; its target is taken verbatim."""
        try:
            target = os.readlink(path)
        except OSError as error:
            raise self.unreadable(path, "read", error) from None
        if self.mirror is not None:
            os.symlink(target, self.mirror.place(path))
        self.emit(_SYMLINK + token(target) + _CLOSE)

    def directory(self, path: bytes) -> list[bytes]:
        """Open a directory node; return its entry names, sorted."""
        try:
            names = sorted(os.listdir(path))
        except OSError as error:
            raise self.unreadable(path, "listed", error) from None
        if self.mirror is not None:
            os.mkdir(self.mirror.place(path), 0o755)
        self.emit(_DIRECTORY)
        return names

    def regular(self, path: bytes, info: os.stat_result) -> None:
        """Write a regular file node, streaming the file's bytes."""
        size = info.st_size
        executable = info.st_mode & stat.S_IXUSR
        header = (_EXECUTABLE_FILE if executable else _FILE) + size.to_bytes(
            8, "little"
        )
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as error:
            raise self.unreadable(path, "opened", error) from None
        copy = -1
        try:
            if self.mirror is not None:
                copy = self.mirror.create_file(path, executable)

            # Small files, most of a tree, go out with their node in one piece.
            if size <= _BATCH:
                data = self.small_contents(path, fd, size)
                if copy >= 0:
                    _write_all(copy, data)
                self.emit(header + data + _ENDS[size % 8])
                return
            self.emit(header)
            self.flush()
            self.large_contents(path, fd, size, copy)
            self.emit(_ENDS[size % 8])
        finally:
            os.close(fd)
            if copy >= 0:
                os.close(copy)

    def small_contents(self, path: bytes, fd: int, size: int) -> bytes:
        """Return the whole of a small file, checking its size."""
        try:
            data = os.read(fd, size + 1)
        except OSError as error:
            raise self.unreadable(path, "read", error) from None
        if len(data) != size:
            raise self.changed(path)
        return data

    def large_contents(self, path: bytes, fd: int, size: int, copy: int) -> None:
        """Hand out a large file chunk by chunk, checking its size, and
        write each chunk to ``copy`` too unless it is -1."""
        left = size
        while left:
            chunk = self.read_chunk(path, fd, min(left, _CHUNK))
            if copy >= 0:
                _write_all(copy, chunk)
            self.write(chunk)
            self.written += len(chunk)
            left -= len(chunk)
        if self.read_chunk(path, fd, 1, end=True):
            raise self.changed(path)

    def read_chunk(
        self, path: bytes, fd: int, count: int, end: bool = False
    ) -> bytes | memoryview:
        """Read up to ``count`` bytes of ``path``; an empty read before the
        expected ``end`` means the file shrank."""
        try:
            if self.reuse and not end:
                got = os.readv(fd, [memoryview(self.buffer)[:count]])
                chunk: bytes | memoryview = memoryview(self.buffer)[:got]
            else:
                chunk = os.read(fd, count)
        except OSError as error:
            raise self.unreadable(path, "read", error) from None
        if not chunk and not end:
            raise self.changed(path)
        return chunk

    def unreadable(self, path: bytes, verb: str, error: OSError) -> NarError:
        """Return the error for ``path`` that cannot be ``verb`` (read,
        opened, listed)."""
        return self.error(
            path,
            f"cannot be {verb}: {error.strerror}",
            "check that it exists and that you may read it",
        )

    def changed(self, path: bytes) -> NarError:
        """Return the error for a file whose size changed while read."""
        return self.error(
            path,
            "changed size while it was being archived",
            "make sure nothing writes to it while it is archived",
        )

    def error(self, path: bytes, reason: str, hint: str | None = None) -> NarError:
        """Return a :class:`NarError` about ``path``."""
        shown = os.fsdecode(path)
        return NarError(
            f"'{shown}' {reason}", self.written + len(self.pending), shown, hint
        )


def _run(
    path: str | os.PathLike[str],
    write: Callable[[bytes], object],
    reuse: bool,
    mirror: _Mirror | None = None,
) -> int:
    """Write the NAR of ``path`` to ``write``; return its size."""
    writer = _Writer(write, reuse, mirror)
    writer.emit(token(MAGIC))
    writer.tree(os.fsencode(path))
    writer.flush()
    return writer.written


def dump(path: str | os.PathLike[str], write: Callable[[bytes], object]) -> None:
    """Write the NAR of the tree at ``path`` to ``write``, as Nix's ``dumpPath``.

    ``write`` is called with successive pieces of the archive, each a new
    ``bytes`` object it may keep.  Large files are read in chunks, so memory
    use does not depend on file sizes.

    :raises NarError: when ``path`` or something below it is neither a
        regular file, a directory nor a symlink, cannot be read, or changes
        size while it is read; ``path`` attribute names the file.
    """
    _run(path, write, reuse=False)


def dump_bytes(path: str | os.PathLike[str]) -> bytes:
    """Return the NAR of the tree at ``path`` (for small trees)."""
    pieces: list[bytes] = []
    dump(path, pieces.append)
    return b"".join(pieces)


def hash_path(
    path: str | os.PathLike[str], algorithm: str = "sha256"
) -> tuple[Hash, int]:
    """Return the NAR hash and NAR size of the tree at ``path``, as Nix's
    ``hashPath`` (``nix-hash --type ALGO PATH``).

    :param algorithm: one of :data:`store.hash.ALGORITHMS`.
    :raises NarError: as :func:`dump` does.
    """
    assert algorithm in ALGORITHMS, algorithm
    hasher = hashlib.new(algorithm)
    size = _run(path, hasher.update, reuse=True)
    return Hash(algorithm, hasher.digest()), size


def copy_path(
    source: str | os.PathLike[str], target: str | os.PathLike[str]
) -> tuple[Hash, int]:
    """Copy the tree at ``source`` to ``target``; return the SHA-256 NAR hash
    and NAR size of what was copied.

    Only what a NAR records is copied: directories (mode ``0755``), symlinks,
    and regular files (``0755`` if their owner may execute them, else
    ``0644``); times and owners are not.  ``target`` must not exist; the
    caller removes a partial copy if this raises.

    :raises NarError: as :func:`dump` does, about ``source``.
    :raises OSError: when the copy cannot be written.
    """
    hasher = hashlib.sha256()
    mirror = _Mirror(os.fsencode(source), os.fsencode(target))
    size = _run(source, hasher.update, reuse=True, mirror=mirror)
    return Hash("sha256", hasher.digest()), size
