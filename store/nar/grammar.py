"""The NAR grammar shared by the writer and the reader, and the NAR error.

A NAR (Nix ARchive, Nix's ``libutil/archive.cc``) is the canonical
serialisation of a file tree.  Everything in it is a *token*: a u64
little-endian length, that many bytes, then zero bytes up to a multiple of
8.  The archive is::

    nar       = "nix-archive-1" node
    node      = "(" "type" ( regular | symlink | directory ) ")"
    regular   = "regular" [ "executable" "" ] "contents" <contents>
    symlink   = "symlink" "target" <target>
    directory = "directory" { "entry" "(" "name" <name> "node" node ")" }

``<contents>`` is a token too: its length is the file size.  Entries are
sorted by the raw bytes of their names, and a name is never empty, ``.``,
``..``, nor contains ``/`` or NUL.  Only the owner's execute bit survives;
modes, owners, times and extended attributes are not recorded.

Reading is strict: the canonical form above and nothing else, whereas Nix
2.8's own parser also accepts unsorted entries, ``executable`` after
``contents`` and trailing bytes (see ``fixtures/nar/restore.json``).
"""

from __future__ import annotations

from store.errors import PyguixError

__all__ = [
    "MAGIC",
    "MAX_NAME_LENGTH",
    "MAX_SIZE",
    "MAX_TAG_LENGTH",
    "MAX_TARGET_LENGTH",
    "NarError",
    "check_name",
    "padding",
    "show",
    "token",
]

MAGIC = b"nix-archive-1"
"""The first token of every NAR (Nix's ``narVersionMagic1``)."""

MAX_TAG_LENGTH = 16
"""No keyword of the grammar is longer; a longer one is rejected unread."""

MAX_NAME_LENGTH = 255
"""An entry name longer than Linux's ``NAME_MAX`` cannot be restored."""

MAX_TARGET_LENGTH = 4095
"""A symlink target longer than ``PATH_MAX - 1`` cannot be restored."""

MAX_SIZE = 2**63 - 1
"""The largest file size a NAR may declare (``off_t`` is signed)."""


class NarError(PyguixError):
    """Report a NAR that breaks the grammar, or a tree that has no NAR.

    :param reason: what is wrong, naming the token or the file in quotes.
    :param offset: the byte offset in the NAR stream where the problem lies:
        the start of the offending token (or of its padding), the end of the
        data on truncation, the end of the archive for trailing bytes, the
        bytes written so far when dumping.
    :param path: the file concerned, when there is one.
    """

    def __init__(
        self,
        reason: str,
        offset: int,
        path: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(f"NAR error at byte offset {offset}: {reason}", hint)
        self.reason = reason
        self.offset = offset
        self.path = path


def padding(size: int) -> bytes:
    """Return the zero bytes that follow ``size`` bytes of a token."""
    return b"\0" * (-size % 8)


def token(data: bytes) -> bytes:
    """Return ``data`` as one NAR token: length, bytes, padding."""
    return len(data).to_bytes(8, "little") + data + padding(len(data))


def show(data: bytes) -> str:
    """Return ``data`` as printable text for a message, escaping bad bytes."""
    return data.decode("utf-8", "backslashreplace").replace("\0", "\\0")


def check_name(name: bytes) -> str | None:
    """Return why ``name`` cannot name a directory entry, or ``None``."""
    if not name:
        return "the entry name is empty"
    if name in (b".", b".."):
        return f"the entry name is '{show(name)}'"
    if b"/" in name:
        return f"the entry name '{show(name)}' contains a slash"
    if b"\0" in name:
        return f"the entry name '{show(name)}' contains a NUL byte"
    if len(name) > MAX_NAME_LENGTH:
        return f"the entry name is longer than {MAX_NAME_LENGTH} bytes"
    return None
