"""Read one NAR from a stream as a sequence of events, strictly.

The grammar is in :mod:`store.nar.grammar`.  :func:`read_events` yields, in
archive order::

    Directory(path)            a directory begins
    RegularFile(path, ...)     a file begins; FileChunk events follow,
    FileChunk(data)            as many as its contents need (none if empty)
    Symlink(path, target)
    DirectoryEnd(path)         the directory's entries are done

``path`` is the node's place relative to the archive root, components
joined by ``/`` (``b""`` for the root).  Only the canonical form is accepted:
the magic, the keywords in grammar order, entries strictly sorted by bytes,
valid names, zero padding, bounded lengths.  Any deviation, and truncation,
raises :class:`~store.nar.grammar.NarError` with the byte offset; nothing
else comes out of the parser, whatever the input.

Every read asks for exactly the bytes the grammar needs next, so the stream
is left just after the archive's closing token: a NAR embedded in a longer
stream (``nix-store --export``) can be read without losing what follows.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from store.nar.grammar import (
    MAGIC,
    MAX_NAME_LENGTH,
    MAX_SIZE,
    MAX_TAG_LENGTH,
    MAX_TARGET_LENGTH,
    NarError,
    check_name,
    show,
)

__all__ = [
    "Directory",
    "DirectoryEnd",
    "Event",
    "FileChunk",
    "NarReader",
    "RegularFile",
    "Symlink",
    "copy_nar",
    "read_events",
]

_CHUNK = 1 << 20
"""The largest piece of file contents read (and yielded) at once."""


@dataclass(frozen=True, slots=True)
class Directory:
    """A directory begins; its entries' events follow."""

    path: bytes
    """Where the node sits, relative to the root (``b""`` for the root)."""


@dataclass(frozen=True, slots=True)
class DirectoryEnd:
    """The directory at ``path`` has no more entries."""

    path: bytes
    """The same path as its :class:`Directory` event."""


@dataclass(frozen=True, slots=True)
class RegularFile:
    """A regular file begins; ``size`` bytes follow as :class:`FileChunk`."""

    path: bytes
    """Where the node sits, relative to the root."""

    executable: bool
    """Whether the file is marked executable."""

    size: int
    """The number of bytes of the file."""


@dataclass(frozen=True, slots=True)
class FileChunk:
    """The next piece of the current file's contents."""

    data: bytes
    """At most one mebibyte of contents."""


@dataclass(frozen=True, slots=True)
class Symlink:
    """A symbolic link."""

    path: bytes
    """Where the node sits, relative to the root."""

    target: bytes
    """The link's target, verbatim."""


Event = Directory | DirectoryEnd | RegularFile | FileChunk | Symlink

_Events = Generator[Event, None, None]


class _Entries:
    """An open directory while its entries are read."""

    __slots__ = ("path", "previous")

    def __init__(self, path: bytes) -> None:
        self.path = path
        self.previous: bytes | None = None


class _Parser:
    """Read tokens with exact-size reads, counting and copying bytes."""

    def __init__(
        self, stream: BinaryIO, copy: Callable[[bytes], object] | None
    ) -> None:
        self.stream = stream
        self.copy = copy
        self.offset = 0

    # Bytes and tokens.

    def read_exact(self, size: int) -> bytes:
        """Return the next ``size`` bytes; the stream must hold them."""
        data = self.stream.read(size)
        if data is None:
            data = b""
        while len(data) < size:
            more = self.stream.read(size - len(data))
            if not more:
                raise NarError(
                    f"the archive is truncated: {size - len(data)} more bytes "
                    "were expected",
                    self.offset + len(data),
                )
            data += more
        self.offset += size
        if self.copy is not None:
            self.copy(data)
        return data

    def read_length(self, limit: int, what: str) -> int:
        """Return a u64 length, at most ``limit``."""
        start = self.offset
        length = int.from_bytes(self.read_exact(8), "little")
        if length > limit:
            raise NarError(
                f"the {what} is {length} bytes long, more than {limit}", start
            )
        return length

    def read_padding(self, size: int) -> None:
        """Read the padding after ``size`` bytes and check it is zero."""
        start = self.offset
        count = -size % 8
        if count and self.read_exact(count) != bytes(count):
            raise NarError("the padding after a token holds non-zero bytes", start)

    def read_token(self, limit: int, what: str) -> bytes:
        """Return the bytes of the next token."""
        data = self.read_exact(self.read_length(limit, what))
        self.read_padding(len(data))
        return data

    def expect(self, *tags: bytes) -> bytes:
        """Read a keyword and return it if it is one of ``tags``."""
        start = self.offset
        tag = self.read_token(MAX_TAG_LENGTH, "keyword")
        if tag not in tags:
            wanted = " or ".join(f"'{show(each)}'" for each in tags)
            raise NarError(f"expected {wanted}, found '{show(tag)}'", start)
        return tag

    # The grammar.

    def archive(self) -> _Events:
        """Yield the events of one whole archive."""
        self.expect_magic()
        directories: list[_Entries] = []
        path: bytes | None = b""
        while path is not None:
            if (yield from self.node(path)):
                directories.append(_Entries(path))
            elif directories:
                self.expect(b")")
            path = yield from self.next_entry(directories)

    def expect_magic(self) -> None:
        """Read the archive's first token."""
        magic = self.read_token(len(MAGIC), "magic")
        if magic != MAGIC:
            raise NarError(f"expected '{MAGIC.decode()}', found '{show(magic)}'", 0)

    def node(self, path: bytes) -> Generator[Event, None, bool]:
        """Yield the events of a node up to its end or, for a directory, its
        start; return whether a directory was opened."""
        self.expect(b"(")
        self.expect(b"type")
        kind = self.expect(b"regular", b"symlink", b"directory")
        if kind == b"directory":
            yield Directory(path)
            return True
        if kind == b"symlink":
            self.expect(b"target")
            target = self.read_symlink_target()
            yield Symlink(path, target)
        else:
            yield from self.regular(path)
        self.expect(b")")
        return False

    def read_symlink_target(self) -> bytes:
        """Read a symlink target, which must be a path."""
        start = self.offset
        target = self.read_token(MAX_TARGET_LENGTH, "symlink target")
        if not target or b"\0" in target:
            raise NarError("the symlink target is empty or holds a NUL byte", start)
        return target

    def regular(self, path: bytes) -> _Events:
        """Yield a regular file and its contents."""
        executable = self.expect(b"executable", b"contents") == b"executable"
        if executable:
            start = self.offset
            if self.read_token(MAX_TAG_LENGTH, "executable marker"):
                raise NarError("the 'executable' marker is not empty", start)
            self.expect(b"contents")
        size = self.read_length(MAX_SIZE, "file")
        yield RegularFile(path, executable, size)
        left = size
        while left:
            count = min(left, _CHUNK)
            yield FileChunk(self.read_exact(count))
            left -= count
        self.read_padding(size)

    def next_entry(
        self, directories: list[_Entries]
    ) -> Generator[Event, None, bytes | None]:
        """Read on to the next entry's node and return its path, closing
        finished directories; return ``None`` at the end of the archive."""
        while directories:
            current = directories[-1]
            if self.expect(b"entry", b")") == b"entry":
                return self.entry_name(current)
            directories.pop()
            yield DirectoryEnd(current.path)
            if directories:
                self.expect(b")")
        return None

    def entry_name(self, directory: _Entries) -> bytes:
        """Read an entry up to its node; return the node's path."""
        self.expect(b"(")
        self.expect(b"name")
        start = self.offset
        name = self.read_token(MAX_NAME_LENGTH, "entry name")
        problem = check_name(name)
        if problem is not None:
            raise NarError(problem, start)
        if directory.previous is not None and name <= directory.previous:
            rule = "is a duplicate" if name == directory.previous else "is not sorted"
            raise NarError(
                f"the entry name '{show(name)}' {rule} (after '{show(directory.previous)}')",
                start,
            )
        directory.previous = name
        self.expect(b"node")
        return directory.path + b"/" + name if directory.path else name


class NarReader:
    """Iterate over the events of the one NAR read from a stream.

    :param stream: read with exact-size reads only, never past the archive
        (but for the one-byte end-of-file check of ``expect_eof``).
    :param copy: called with every byte read, in order, as it is read.
    :param expect_eof: after the archive, check that the stream is at its
        end; without it, the stream is left just after the archive.

    Iterating raises :class:`NarError` on anything but a canonical archive;
    :attr:`offset` then counts the bytes read so far.
    """

    def __init__(
        self,
        stream: BinaryIO,
        copy: Callable[[bytes], object] | None = None,
        *,
        expect_eof: bool = True,
    ) -> None:
        self._parser = _Parser(stream, copy)
        self._expect_eof = expect_eof

    @property
    def offset(self) -> int:
        """Return the number of bytes read from the stream so far."""
        return self._parser.offset

    def __iter__(self) -> Iterator[Event]:
        yield from self._parser.archive()
        if self._expect_eof and self._parser.stream.read(1):
            raise NarError("trailing bytes follow the archive", self.offset)


def read_events(stream: BinaryIO, *, expect_eof: bool = True) -> Iterator[Event]:
    """Yield the events of the one NAR read from ``stream`` (see
    :class:`NarReader`)."""
    return iter(NarReader(stream, expect_eof=expect_eof))


def copy_nar(
    stream: BinaryIO, write: Callable[[bytes], object], *, expect_eof: bool = False
) -> int:
    """Check the NAR read from ``stream`` while copying its bytes to ``write``.

    Nothing touches the filesystem, and the stream is read exactly to the
    end of the archive.  Use it to import an archive or to hash one
    (``write=hasher.update``).

    :param expect_eof: also check that nothing follows the archive.
    :return: the number of bytes read, which is the archive's size.
    :raises NarError: on anything but a canonical archive, with its offset;
        the bytes before the problem have already been written.
    """
    reader = NarReader(stream, write, expect_eof=expect_eof)
    for _ in reader:
        pass
    return reader.offset
