"""Create the file tree a NAR describes, as ``nix-store --restore``.

This is Nix's ``restorePath`` (``libutil/archive.cc``) over the strict
reader of :mod:`store.nar.reader`: the archive is checked as it is read and
the tree is created as the events arrive.  Files get mode 0666 or, when
marked executable, 0777, less the umask; directories 0777 less the umask
(the store canonicalises modes afterwards).  If anything goes wrong, what
was created is removed again: a failed restore leaves no target behind,
even an archive nested deeper than the file system allows paths to go
(which fails with the offset of the node that could not be created).
"""

from __future__ import annotations

import contextlib
import errno
import os
from typing import BinaryIO

from store.canonical import remove_tree
from store.nar.grammar import NarError
from store.nar.reader import (
    Directory,
    DirectoryEnd,
    Event,
    FileChunk,
    NarReader,
    RegularFile,
    Symlink,
)

__all__ = ["restore"]

_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class _Builder:
    """Turn reader events into files under ``target``."""

    def __init__(self, target: bytes) -> None:
        self.target = target
        self.fd: int | None = None

    def place(self, path: bytes) -> bytes:
        """Return where the node at archive path ``path`` goes."""
        return self.target + b"/" + path if path else self.target

    def apply(self, event: Event) -> None:
        """Create what ``event`` describes."""
        if isinstance(event, FileChunk):
            self.write(event.data)
            return
        self.close()
        if isinstance(event, RegularFile):
            mode = 0o777 if event.executable else 0o666
            self.fd = os.open(self.place(event.path), _FILE_FLAGS, mode)
        elif isinstance(event, Directory):
            os.mkdir(self.place(event.path), 0o777)
        elif isinstance(event, Symlink):
            os.symlink(event.target, self.place(event.path))
        else:
            assert isinstance(event, DirectoryEnd)

    def write(self, data: bytes) -> None:
        """Append ``data`` to the open file."""
        assert self.fd is not None
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]

    def close(self) -> None:
        """Close the open file, if any."""
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)

    def remove(self) -> None:
        """Remove whatever was created at the target, as far as it can be."""
        self.close()
        with contextlib.suppress(OSError):
            remove_tree(os.fsdecode(self.target))


def restore(
    stream: BinaryIO, target: str | os.PathLike[str], *, expect_eof: bool = True
) -> int:
    """Read one NAR from ``stream`` and create its tree at ``target``.

    :param target: must not exist; its parent directory must.
    :param expect_eof: check that the stream ends with the archive; without
        it, reading stops right after the archive's closing token, so a NAR
        embedded in a longer stream can be read.
    :return: the number of bytes read, which is the archive's size.
    :raises NarError: when the archive is not canonical (with its offset),
        or when the tree cannot be created (``path`` names the target).  In
        both cases nothing is left at ``target``.
    """
    place = os.fsencode(target)
    if os.path.lexists(place):
        raise NarError(
            f"the restore target '{os.fsdecode(place)}' already exists",
            0,
            path=os.fsdecode(place),
            hint="restore into a path that does not exist yet",
        )
    builder = _Builder(place)
    reader = NarReader(stream, expect_eof=expect_eof)
    try:
        for event in reader:
            builder.apply(event)
        builder.close()
    except NarError as error:
        builder.remove()
        if error.hint is None:
            error.hint = _DAMAGED_HINT
        raise
    except OSError as error:
        builder.remove()
        raise _creation_error(error, place, reader.offset) from None
    except BaseException:
        builder.remove()
        raise
    return reader.offset


_DAMAGED_HINT = (
    "the archive is damaged or not a NAR; make it again with "
    "'pyguix store dump' or 'nix-store --dump'"
)


def _creation_error(error: OSError, target: bytes, offset: int) -> NarError:
    """Return the error for a node of the tree that could not be created."""
    name = _shorten(os.fsdecode(error.filename or target))
    if error.errno == errno.ENAMETOOLONG:
        hint = (
            "the archive nests deeper than the file system allows a path to "
            "go; it cannot be restored here"
        )
    else:
        hint = "check that the target's directory is writable and has room"
    return NarError(
        f"cannot create '{name}': {error.strerror}",
        offset,
        path=os.fsdecode(target),
        hint=hint,
    )


def _shorten(name: str, keep: int = 120) -> str:
    """Return ``name``, its middle elided if it is longer than ``keep``."""
    if len(name) <= keep:
        return name
    return f"{name[: keep // 2]}...{name[-keep // 2 :]}"
