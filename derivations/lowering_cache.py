"""The persistent lowering cache: what objects lowered to, across processes.

Lowering is memoised per store connection (Guix's ``mcached``); this cache
makes a second evaluation of an unchanged configuration, in a new process,
almost free.  It maps a *stable key* of an object to the derivation path or
store path the object lowered to.  The key is the sha256 of a canonical
msgpack serialisation of the object's content and options (its
*fingerprint*, see ``derivations.gexp.Compiler``), the system, the store
directory, the pyguix version, the bootstrap interpreter's identity and a
digest of the lowering code itself; never of the object's identity.

File: ``<state dir>/cache/lowering.msgpack``, one msgpack map::

    {"schema": "pyguix-lowering-cache", "version": 1,
     "store_dir": STR,
     "entries": {KEY (32 bytes): [KIND ("drv" | "path"), PATH (str)], ...}}

Trust rules:

- an entry is used only if what it names is valid in the store; the paths
  of all entries are checked in one ``query_valid`` when the file is first
  read, and invalid ones are dropped (and counted as *stale* when asked for);
- a file that is not msgpack, not of this schema, version or store
  directory, or holds a malformed entry, is ignored as a whole and
  rewritten on the next save;
- saving merges the entries on disk with ours under an exclusive lock on
  ``lowering.msgpack.lock``, then writes a temporary file and renames it
  over the old one, so readers never see a partial file and concurrent
  writers lose no entries.

Counters (:class:`CacheStats`): *hits* (lowerings answered from the file),
*misses* (objects lowered), *stale* (entries found but no longer valid).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgpack

__all__ = [
    "CACHE_FILE",
    "SCHEMA",
    "VERSION",
    "CacheStats",
    "LoweringCache",
]

SCHEMA = "pyguix-lowering-cache"
VERSION = 1
CACHE_FILE = ("cache", "lowering.msgpack")
"""The cache file, relative to the state directory."""

KINDS = ("drv", "path")


@dataclass
class CacheStats:
    """How the persistent cache answered, since the store was opened."""

    hits: int = 0
    """Objects whose lowering came from the cache file."""

    misses: int = 0
    """Objects lowered for real."""

    stale: int = 0
    """Entries found whose item is no longer valid, so not used."""

    damaged: bool = False
    """Whether the file read was damaged and ignored."""


class LoweringCache:
    """The persistent lowering cache of one store.

    :param store: a store with ``state_file``, ``store_dir`` and
        ``query_valid`` (see ``store.local.LocalStore``).
    """

    def __init__(self, store: Any) -> None:
        self.store = store
        self.path = store.state_file(*CACHE_FILE)
        self.stats = CacheStats()
        self._entries: dict[bytes, tuple[str, str]] | None = None
        self._invalid: dict[bytes, tuple[str, str]] = {}
        self._new: dict[bytes, tuple[str, str]] = {}
        self._rewrite = False

    # -- Reading --------------------------------------------------------------

    def lookup(self, key: bytes) -> tuple[str, str] | None:
        """Return ``(kind, path)`` for ``key`` if known and still valid."""
        entries = self._load()
        found = self._new.get(key) or entries.get(key)
        if found is None:
            if key in self._invalid:
                self.stats.stale += 1
            return None
        self.stats.hits += 1
        return found

    def _load(self) -> dict[bytes, tuple[str, str]]:
        """Read the file once, keeping only entries whose item is valid."""
        if self._entries is None:
            read = self._read_file()
            valid = self.store.query_valid({path for _, path in read.values()})
            self._entries = {
                key: entry for key, entry in read.items() if entry[1] in valid
            }
            self._invalid = {k: e for k, e in read.items() if k not in self._entries}
        return self._entries

    def _read_file(self) -> dict[bytes, tuple[str, str]]:
        """Return the entries of the cache file, or none if it is absent or
        damaged."""
        try:
            with open(self.path, "rb") as file:
                data = file.read()
        except FileNotFoundError:
            return {}
        entries = _decode(data, self.store.store_dir)
        if entries is None:
            self.stats.damaged = self._rewrite = True
            return {}
        return entries

    # -- Writing --------------------------------------------------------------

    def record(self, key: bytes, kind: str, path: str) -> None:
        """Remember that the object of ``key`` lowered to ``path``."""
        assert kind in KINDS, kind
        self.stats.misses += 1
        self._new[key] = (kind, path)

    @property
    def dirty(self) -> bool:
        """Tell whether entries were recorded since the last save."""
        return bool(self._new) or self._rewrite

    def save(self) -> None:
        """Merge the recorded entries into the file, atomically."""
        if not self.dirty:
            return
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with self._locked():
            on_disk = self._read_file_quietly()
            for key, entry in self._invalid.items():
                if on_disk.get(key) == entry:
                    del on_disk[key]
            on_disk.update(self._new)
            self._write(on_disk)
        self._load().update(self._new)
        self._new.clear()
        self._rewrite = False

    def _read_file_quietly(self) -> dict[bytes, tuple[str, str]]:
        """Read the file for merging; a damaged one contributes nothing."""
        try:
            with open(self.path, "rb") as file:
                return _decode(file.read(), self.store.store_dir) or {}
        except FileNotFoundError:
            return {}

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the cache's lock file exclusively."""
        fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _write(self, entries: dict[bytes, tuple[str, str]]) -> None:
        """Write ``entries`` to a temporary file, then rename it into place."""
        data = msgpack.packb(
            {
                "schema": SCHEMA,
                "version": VERSION,
                "store_dir": self.store.store_dir,
                "entries": {key: list(entry) for key, entry in sorted(entries.items())},
            },
            use_bin_type=True,
        )
        directory = os.path.dirname(self.path)
        fd, temp = tempfile.mkstemp(prefix=".lowering-", dir=directory)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
            os.chmod(temp, 0o644)
            os.replace(temp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise


def _decode(data: bytes, store_dir: str) -> dict[bytes, tuple[str, str]] | None:
    """Return the entries of a cache file's bytes, or ``None`` if the file
    is damaged or not for this store directory."""
    try:
        top = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception:  # msgpack raises many kinds on garbage
        return None
    if not isinstance(top, dict) or top.get("schema") != SCHEMA:
        return None
    if top.get("version") != VERSION or top.get("store_dir") != store_dir:
        return None
    entries = top.get("entries")
    if not isinstance(entries, dict):
        return None
    decoded: dict[bytes, tuple[str, str]] = {}
    for key, entry in entries.items():
        if not _is_entry(key, entry, store_dir):
            return None
        decoded[key] = (entry[0], entry[1])
    return decoded


def _is_entry(key: object, entry: object, store_dir: str) -> bool:
    """Tell whether one key and entry have the expected shape."""
    return (
        isinstance(key, bytes)
        and len(key) == 32
        and isinstance(entry, list)
        and len(entry) == 2
        and entry[0] in KINDS
        and isinstance(entry[1], str)
        and entry[1].startswith(store_dir.rstrip("/") + "/")
    )
