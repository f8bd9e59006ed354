"""Move store items between stores in the format of ``nix-store --export``.

The stream (Nix 2.8's ``Store::exportPaths`` and ``importPaths``)::

    stream  = { u64(1) item } u64(0)
    item    = NAR u64(0x4558494e) string(path)
              u64(n) string(reference) * n   (sorted)
              string(deriver or "") u64(0)   (no signature)
    string  = u64(length) bytes, zero-padded to a multiple of 8

Integers are little-endian.  ``0x4558494e`` is ``"NIXE"``.  Items are
written references first; importing requires each item's references to be
valid already or to come earlier in the stream (or to be the item itself),
which holds for a closure exported in topological order.

Import is all or nothing: every NAR is checked and restored under a
temporary name while its sha256 is computed, every path and reference is
checked, and only when the whole stream has been read are the items moved
into place and registered, in one transaction.  If anything fails, the
temporary entries are removed and nothing is registered.

A stream may name one path twice: as Nix 2.8 does, the first copy is kept
and later ones are read, checked and skipped, whatever they hold.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, BinaryIO

from store import nar
from store.canonical import canonicalise, remove_tree
from store.database import PathInfo
from store.errors import PyguixError, StoreError
from store.hash import Hash
from store.local import LocalStore

__all__ = [
    "EXPORT_MAGIC",
    "ExportError",
    "export_paths",
    "import_paths",
    "sort_topologically",
]

_DAMAGED_HINT = "the stream is damaged; export it again with 'pyguix store export'"
"""What to do about a stream that breaks the format."""

EXPORT_MAGIC = 0x4558494E
MAX_STRING = 4096


class ExportError(StoreError):
    """Report an export stream that is malformed or cannot be imported.

    :param offset: the byte offset in the stream where the problem lies.
    :param hint: what to do; by default, to export the items again.
    """

    def __init__(self, message: str, offset: int, hint: str | None = None) -> None:
        super().__init__(
            f"{message} (at byte offset {offset} of the stream)",
            hint or _DAMAGED_HINT,
        )
        self.offset = offset


# -- Writing ---------------------------------------------------------------------


def _u64(value: int) -> bytes:
    return value.to_bytes(8, "little")


def _string(text: str) -> bytes:
    data = text.encode()
    return _u64(len(data)) + data + b"\0" * (-len(data) % 8)


def sort_topologically(store: LocalStore, paths: Iterable[str]) -> list[str]:
    """Order ``paths`` so that references come before their referrers.

    This is the order of Nix's ``exportPaths`` (the reverse of
    ``topoSortPaths``): a depth-first, post-order walk over the paths in
    sorted order, visiting references in sorted order.
    """
    chosen = sorted(set(paths))
    order: list[str] = []
    seen: set[str] = set()

    def visit(path: str) -> None:
        if path in seen:
            return
        seen.add(path)
        for reference in sorted(store.query_references(path)):
            if reference in chosen_set:
                visit(reference)
        order.append(path)

    chosen_set = set(chosen)
    for path in chosen:
        visit(path)
    return order


def export_paths(
    store: LocalStore, paths: Iterable[str], write: Callable[[bytes], object]
) -> None:
    """Write the export stream of ``paths``, references first.

    As Nix's ``exportPaths``, the paths are sorted topologically (see
    :func:`sort_topologically`), and the NAR of each item is checked against
    its recorded hash as it is written.

    :raises StoreError: when a path is not valid or its contents changed.
    """
    paths = list(paths)
    invalid = sorted(set(paths) - store.query_valid(paths))
    if invalid:
        raise StoreError(
            f"cannot export '{invalid[0]}': it is not valid", "add it first"
        )
    for path in sort_topologically(store, paths):
        info = store.query_path_info(path)
        if info is None:
            raise StoreError(f"cannot export '{path}': it is not valid", "add it first")
        write(_u64(1))
        _write_nar(store, info, write)
        write(_u64(EXPORT_MAGIC) + _string(path))
        write(
            _u64(len(info.references))
            + b"".join(_string(r) for r in sorted(info.references))
        )
        write(_string(info.deriver or "") + _u64(0))
    write(_u64(0))


def _write_nar(
    store: LocalStore, info: PathInfo, write: Callable[[bytes], object]
) -> None:
    hasher = hashlib.sha256()

    def tee(data: bytes) -> None:
        hasher.update(data)
        write(data)

    nar.dump(store.physical(info.path), tee)
    if hasher.digest() != info.nar_hash.digest:
        raise StoreError(
            f"cannot export '{info.path}': its contents no longer match its NAR hash",
            "run 'pyguix store verify --check-contents'",
        )


# -- Reading ---------------------------------------------------------------------


class _Reader:
    """Read a stream exactly, counting bytes and hashing when asked."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.offset = 0
        self.hasher: Any = None

    def read(self, size: int = -1) -> bytes:
        assert size >= 0, "NAR reads are exact"
        data = self.stream.read(size) or b""
        self.offset += len(data)
        if self.hasher is not None:
            self.hasher.update(data)
        return data

    def exact(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            more = self.read(size - len(data))
            if not more:
                raise ExportError("the stream is truncated", self.offset)
            data += more
        return data

    def u64(self) -> int:
        return int.from_bytes(self.exact(8), "little")

    def string(self) -> str:
        start = self.offset
        length = self.u64()
        if length > MAX_STRING:
            raise ExportError(f"a string of {length} bytes is too long", start)
        data = self.exact(length)
        if any(self.exact(-length % 8)):
            raise ExportError("a string has non-zero padding", self.offset)
        try:
            return data.decode()
        except UnicodeDecodeError:
            raise ExportError("a string is not UTF-8", start) from None


@dataclass(frozen=True)
class _Pending:
    """An item read from the stream, restored under a temporary name."""

    info: PathInfo
    temp: str


def import_paths(store: LocalStore, stream: BinaryIO) -> list[str]:
    """Import every item of an export stream; return their paths in order.

    :raises ExportError: on a malformed stream, a bad path or a reference
        that is neither valid nor earlier in the stream; nothing is
        registered then.
    """
    reader = _Reader(stream)
    with ExitStack() as cleanup, store.gc_lock(shared=True):
        pending: list[_Pending] = []
        while True:
            start = reader.offset
            marker = reader.u64()
            if marker == 0:
                break
            if marker != 1:
                raise ExportError(
                    f"expected 0 or 1 before an item, not {marker}", start
                )
            pending.append(_read_item(store, reader, pending, cleanup))
        _install(store, _first_copies(pending))
        return [p.info.path for p in pending]
    raise AssertionError("unreachable")


def _read_item(
    store: LocalStore, reader: _Reader, earlier: list[_Pending], cleanup: ExitStack
) -> _Pending:
    """Read one item: restore its NAR, then read and check its metadata."""
    entry = cleanup.enter_context(store.adding(None))
    temp = entry.temp
    reader.hasher = hashlib.sha256()
    start = reader.offset
    try:
        size = nar.restore(reader, temp, expect_eof=False)  # type: ignore[arg-type]
    except nar.NarError as error:
        raise ExportError(
            f"a NAR is not valid: {error.reason}", start + error.offset
        ) from None
    nar_hash = Hash("sha256", reader.hasher.digest())
    reader.hasher = None

    info = _read_metadata(store, reader, earlier)
    full = PathInfo(
        info.path, nar_hash, size, info.references, info.deriver, int(time.time())
    )
    entry.set_target(store.parse_path(info.path))
    return _Pending(full, temp)


def _read_metadata(
    store: LocalStore, reader: _Reader, earlier: list[_Pending]
) -> PathInfo:
    start = reader.offset
    if reader.u64() != EXPORT_MAGIC:
        raise ExportError("the item does not end with the export magic number", start)
    start = reader.offset
    path = _parse(store, reader.string(), start)
    references = frozenset(
        _parse(store, reader.string(), start) for _ in range(reader.u64())
    )
    deriver = reader.string()
    if deriver:
        _parse(store, deriver, start)
    if reader.u64() != 0:
        raise ExportError(
            f"'{path}' carries a signature, which pyguix does not check",
            reader.offset,
            "export it again without signatures",
        )
    known = {p.info.path for p in earlier} | {path}
    missing = sorted(references - known - store.query_valid(references - known))
    if missing:
        raise ExportError(
            f"'{path}' refers to '{missing[0]}', which is neither valid nor earlier "
            "in the stream",
            start,
            "export the whole closure (pyguix store query --requisites)",
        )
    return PathInfo(path, Hash("sha256", bytes(32)), 0, references, deriver or None)


def _parse(store: LocalStore, text: str, offset: int) -> str:
    try:
        return str(store.parse_path(text))
    except PyguixError as error:
        raise ExportError(
            error.message,
            offset,
            "the stream is damaged or was made for another store directory; "
            f"export it again from a store whose directory is '{store.store_dir}'",
        ) from None


def _first_copies(pending: list[_Pending]) -> list[_Pending]:
    """Return the first item of each path, in stream order.

    Nix 2.8 (``importPaths``) skips an item whose path it has imported
    already, whatever the later copy holds, so the first copy wins.
    """
    first: dict[str, _Pending] = {}
    for item in pending:
        first.setdefault(item.info.path, item)
    return list(first.values())


def _install(store: LocalStore, pending: list[_Pending]) -> None:
    """Move the restored items into place and register them together."""
    paths = [p.info.path for p in pending]
    for path in paths:
        store._add_temp_root_locked(path)
    with store.lock_paths(paths):
        valid = store.query_valid(paths)
        placed: list[str] = []
        try:
            for item in pending:
                if item.info.path in valid:
                    continue
                target = store.physical(item.info.path)
                # Note: text items are added without the path lock, by a
                # rename that replaces a file atomically; removing such a
                # file first could leave a concurrently registered text
                # missing.  Only a leftover directory needs removing.
                if os.path.isdir(target) and not os.path.islink(target):
                    remove_tree(target)
                canonicalise(item.temp)
                os.rename(item.temp, target)
                placed.append(item.info.path)
            fresh = [p.info for p in pending if p.info.path in placed]
            store.db.register(fresh)
        except BaseException:
            _remove_unregistered(store, placed)
            raise


def _remove_unregistered(store: LocalStore, placed: list[str]) -> None:
    """Remove what an import placed, except items another process registered
    meanwhile (the same text, added concurrently)."""
    try:
        registered = store.query_valid(placed)
    except BaseException:
        registered = set()
    for path in placed:
        if path not in registered:
            remove_tree(store.physical(path))
