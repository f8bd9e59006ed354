"""The local store: items on disk, their validity in SQLite, locks and roots.

A store has a logical *store directory*, hashed into every store path, and a
*state directory* holding::

    db/db.sqlite        the database (see store.database)
    gcroots/            permanent GC roots (see store.roots)
    temproots/<pid>     temporary roots of running processes
    adding/             one locked file per add in progress (crash recovery)
    gc.lock             taken shared by adders, exclusive by the collector

With a *root*, both live physically under it (a chroot store): the item
``/nix/store/abc-x`` is on disk at ``ROOT/nix/store/abc-x``.

Adding an item (Nix's ``addToStore``) follows one protocol, so that nothing
half-written is ever valid:

1. compute the store path (hashing the source);
2. take the GC lock shared, add a temporary root, return if already valid;
3. record the add in ``adding/<temp>`` (locked), lock ``<path>.lock``,
   check validity again;
4. write the item under ``<store>/.tmp-...``, canonicalise it, hash it
   again, fsync it;
5. rename it into place, then register it with its references in one
   transaction.

A process killed anywhere leaves at worst a temporary entry or an item
without a database row.  Both are recognised by their ``adding/`` record,
whose lock died with the process, and removed when the store is next opened.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Literal

from store import nar
from store.canonical import canonicalise, remove_tree
from store.database import Database, PathInfo
from store.errors import StoreError
from store.hash import ALGORITHMS, Hash
from store.ingest import copy_tree, fsync, fsync_tree, hash_source
from store.locks import FileLock, LockBusyError, PathLocks, lock_file
from store.paths import StorePath, make_fixed_output_path, make_text_path
from store.roots import TempRoots, make_indirect_root

__all__ = ["Adding", "LocalStore", "PathInfo", "TEMP_PREFIX", "pause_point"]

logger = logging.getLogger(__name__)

TEMP_PREFIX = ".tmp-"
"""Names of entries being written or deleted in the store directory."""

_temp_roots: dict[str, TempRoots] = {}
_temp_roots_lock = threading.Lock()


def pause_point(name: str) -> None:
    """Stop for a while at ``name`` when ``PYGUIX_PAUSE_AT`` names it.

    Crash tests set ``PYGUIX_PAUSE_AT=NAME`` to kill an adder at a chosen
    step; the process prints ``paused NAME`` on stderr and sleeps.
    """
    if os.environ.get("PYGUIX_PAUSE_AT") == name:
        os.write(2, f"paused {name}\n".encode())
        time.sleep(float(os.environ.get("PYGUIX_PAUSE_SECONDS", "60")))


class Adding:
    """A temporary entry in the store and its locked record in ``adding/``."""

    def __init__(self, temp: str, record: FileLock, durable: bool) -> None:
        self.temp = temp
        self.record = record
        self.durable = durable

    def set_target(self, path: StorePath) -> None:
        """Record that the entry will become ``path``, for crash recovery."""
        os.ftruncate(self.record.fd, 0)
        os.pwrite(self.record.fd, path.base_name.encode(), 0)
        if self.durable:
            os.fsync(self.record.fd)


class LocalStore:
    """A store on the local file system.

    :param store_dir: the logical store directory.
    :param state_dir: the logical state directory.
    :param root: the physical prefix of both, or ``None``.
    :param fsync: flush each new item to disk before registering it, and
        sync every database commit, so that a power failure cannot leave a
        valid item with lost contents; off by default, as in Nix 2.8, and on
        with ``PYGUIX_FSYNC=1``.  Either way a killed process leaves every
        item valid and complete, or absent.

    Creates the directories and the database on first use, and removes what
    crashed adds left behind.
    """

    def __init__(
        self,
        store_dir: str,
        state_dir: str,
        root: str | None = None,
        *,
        fsync: bool | None = None,
    ) -> None:
        self.fsync = (
            fsync if fsync is not None else os.environ.get("PYGUIX_FSYNC") == "1"
        )
        self.store_dir = os.path.normpath(store_dir)
        self.state_dir = os.path.normpath(state_dir)
        self.root = os.path.abspath(root) if root else None
        self.real_store_dir = self.physical(self.store_dir)
        self.real_state_dir = self.physical(self.state_dir)
        for directory in (self.real_store_dir, *self._state_dirs()):
            os.makedirs(directory, exist_ok=True)
        self.db = Database(self.state_file("db", "db.sqlite"), durable=self.fsync)
        self.recover()

    def _state_dirs(self) -> list[str]:
        return [
            self.state_file(name) for name in ("db", "gcroots", "temproots", "adding")
        ]

    def state_file(self, *names: str) -> str:
        """Return the physical path of ``names`` under the state directory."""
        return os.path.join(self.real_state_dir, *names)

    def physical(self, path: str | StorePath) -> str:
        """Return where the logical ``path`` (store path or state file) is on disk."""
        text = str(path)
        return self.root + text if self.root else text

    def parse_path(self, text: str) -> StorePath:
        """Parse ``text`` as a path in this store.

        :raises InvalidPathError: when it is not ``<store dir>/HASH-NAME``.
        """
        return StorePath.from_string(text, self.store_dir)

    def close(self) -> None:
        """Close the database (temporary roots live as long as the process)."""
        self.db.close()

    def __enter__(self) -> LocalStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- Queries --------------------------------------------------------------

    def is_valid(self, path: str | StorePath) -> bool:
        """Tell whether ``path`` has a row in the database."""
        return bool(self.db.query_valid([str(path)]))

    def query_valid(self, paths: Iterable[str | StorePath]) -> set[str]:
        """Return those of ``paths`` that are valid, in one query."""
        return self.db.query_valid(str(p) for p in paths)

    def query_path_info(self, path: str | StorePath) -> PathInfo | None:
        """Return the metadata of ``path``, or ``None`` if it is not valid."""
        return self.db.path_info(str(path))

    def query_references(self, path: str | StorePath) -> set[str]:
        """Return what ``path`` refers to."""
        return self.db.references(str(path))

    def query_referrers(self, path: str | StorePath) -> set[str]:
        """Return the valid items that refer to ``path``."""
        return self.db.referrers([str(path)])

    def query_deriver(self, path: str | StorePath) -> str | None:
        """Return the derivation recorded as having built ``path``."""
        return self.db.deriver(str(path))

    def query_requisites(
        self, paths: Iterable[str | StorePath], include_outputs: bool = False
    ) -> set[str]:
        """Return the closure of ``paths`` (Nix's ``computeFSClosure``).

        :param include_outputs: also include the valid outputs of every
            derivation in the closure, and their closures.
        """
        closure = self.db.closure(str(p) for p in paths)
        while include_outputs:
            drvs = [p for p in closure if p.endswith(".drv")]
            outputs = {
                out
                for outs in self.db.derivation_outputs(drvs).values()
                for out in outs.values()
            }
            more = self.db.closure(self.db.query_valid(outputs - closure)) - closure
            if not more:
                break
            closure |= more
        return closure

    def query_derivation_outputs(self, drv_path: str | StorePath) -> dict[str, str]:
        """Return the registered outputs of ``drv_path``, by output name."""
        return self.db.derivation_outputs([str(drv_path)]).get(str(drv_path), {})

    # -- Registration ----------------------------------------------------------

    def register_valid_paths(self, infos: Sequence[PathInfo]) -> None:
        """Make ``infos`` valid in one transaction.

        The caller guarantees that each item is complete and canonical on
        disk and that it holds the items' path locks.
        """
        now = int(time.time())
        stamped = [
            info
            if info.registration_time
            else PathInfo(
                info.path,
                info.nar_hash,
                info.nar_size,
                info.references,
                info.deriver,
                now,
                info.ca,
            )
            for info in infos
        ]
        with self.gc_lock(shared=True):
            for info in stamped:
                self._add_temp_root_locked(info.path)
            self.db.register(stamped)

    def register_derivation_outputs(
        self, drv_path: str, outputs: Mapping[str, str]
    ) -> None:
        """Record that output NAME of the valid ``drv_path`` is ``outputs[NAME]``."""
        self.db.register_outputs(str(drv_path), dict(outputs))

    # -- Locks and roots -------------------------------------------------------

    def lock_file_of(self, path: str | StorePath) -> str:
        """Return the physical lock file of ``path``."""
        return self.physical(path) + ".lock"

    @contextmanager
    def lock_paths(
        self, paths: Iterable[str | StorePath], wait: bool = True
    ) -> Iterator[PathLocks]:
        """Hold exclusive locks on ``paths`` for the block.

        :param wait: when false, raise :class:`LockBusyError` at once if a
            path is locked by someone else.
        """
        locks = PathLocks((self.lock_file_of(p) for p in paths), wait=wait)
        try:
            yield locks
        finally:
            locks.release()

    def gc_lock(
        self, shared: bool, wait: bool = True
    ) -> AbstractContextManager[FileLock]:
        """Hold the global GC lock, shared (adders) or exclusive (collector)."""
        return _held(lock_file(self.state_file("gc.lock"), shared=shared, wait=wait))

    def _temp_roots(self) -> TempRoots:
        key = self.state_file("temproots")
        with _temp_roots_lock:
            roots = _temp_roots.get(key)
            if roots is None or roots.pid != os.getpid():
                roots = _temp_roots[key] = TempRoots.create(key)
                atexit.register(roots.close)
            return roots

    def _add_temp_root_locked(self, path: str) -> None:
        self._temp_roots().add(path)

    def add_temp_root(self, path: str | StorePath) -> None:
        """Keep ``path`` from collection for as long as this process lives.

        Check validity after this call: a collection that ran just before
        may have removed the item.
        """
        with self.gc_lock(shared=True):
            self._add_temp_root_locked(str(path))

    def clear_temp_roots(self) -> None:
        """Drop every temporary root this process holds (a long-running
        process that no longer uses the items it added)."""
        with self.gc_lock(shared=True):
            self._temp_roots().clear()

    def add_permanent_root(self, link: str, path: str | StorePath) -> None:
        """Make ``link`` a symlink to ``path`` and an indirect GC root."""
        self.parse_path(str(path))
        make_indirect_root(self.state_file("gcroots"), link, str(path))

    # -- Adding ----------------------------------------------------------------

    def add_text(
        self, name: str, text: str | bytes, references: Iterable[str | StorePath] = ()
    ) -> StorePath:
        """Add ``text`` as a file named ``name``, as Nix's ``addTextToStore``.

        :raises StoreError: when a reference is not valid.
        """
        data = text.encode() if isinstance(text, str) else text
        refs = frozenset(str(r) for r in references)
        digest = hashlib.sha256(data).digest()
        path = make_text_path(name, digest, refs, self.store_dir)
        missing = refs - self.query_valid(refs)
        if missing:
            raise StoreError(
                f"cannot add '{path}': its reference '{min(missing)}' is not valid",
                "add the referenced items first",
            )

        def write(temp: str) -> None:
            with open(temp, "xb") as file:
                file.write(data)

        ca = f"text:{Hash('sha256', digest).to_string()}"
        self._add_item(path, write, None, refs, ca)
        return path

    def add_path(
        self,
        source: str,
        name: str | None = None,
        *,
        recursive: bool = True,
        algorithm: str = "sha256",
        dry_run: bool = False,
    ) -> StorePath:
        """Add the tree or file at ``source``, as ``nix-store --add`` (recursive)
        or ``nix-store --add-fixed ALGO`` (flat).

        Adding an item that is already valid costs one hash of ``source``.

        :param name: the item's name; the base name of ``source`` by default.
        :param recursive: hash the NAR (a ``source`` path for sha256);
            otherwise hash the contents of the regular file ``source``.
        :param dry_run: compute and return the path, write nothing.
        :raises StoreError: on a bad source, name or algorithm.
        """
        source = os.path.abspath(source)
        name = name or os.path.basename(source.rstrip("/"))
        if algorithm not in ALGORITHMS:
            raise StoreError(
                f"unknown hash algorithm '{algorithm}'",
                f"use one of {', '.join(sorted(ALGORITHMS))}",
            )
        if not os.path.lexists(source):
            raise StoreError(f"cannot add '{source}': it does not exist")
        content_hash, nar_hash, nar_size = hash_source(source, recursive, algorithm)
        method: Literal["flat", "recursive"] = "recursive" if recursive else "flat"
        path = make_fixed_output_path(method, content_hash, name, self.store_dir)
        if dry_run:
            return path
        prefix = "r:" if recursive else ""
        ca = f"fixed:{prefix}{content_hash.to_string()}"
        self._add_item(
            path,
            lambda temp: copy_tree(source, temp),
            (nar_hash, nar_size),
            frozenset(),
            ca,
        )
        return path

    def _add_item(
        self,
        path: StorePath,
        write: Callable[[str], None],
        expected: tuple[Hash, int] | None,
        references: frozenset[str],
        ca: str | None,
    ) -> None:
        """Write (with ``write``), check and register ``path``, unless valid."""
        text = str(path)
        with self.gc_lock(shared=True):
            self._add_temp_root_locked(text)
            if self.is_valid(text):
                return
            # The record comes first, so that a crash at any later point,
            # even while creating the lock file, is recovered.
            with self.adding(path) as entry, self.lock_paths([text]):
                if self.is_valid(text):
                    return
                pause_point("locked")
                nar_hash, nar_size = self._write_item(path, entry, write, expected)
                pause_point("before-register")
                info = PathInfo(
                    text, nar_hash, nar_size, references, None, int(time.time()), ca
                )
                try:
                    self.db.register([info])
                except BaseException:
                    remove_tree(self.physical(path))
                    raise
                pause_point("after-register")

    def _write_item(
        self,
        path: StorePath,
        entry: Adding,
        write: Callable[[str], None],
        expected: tuple[Hash, int] | None,
    ) -> tuple[Hash, int]:
        """Write ``path`` under the temporary name of ``entry``, then move it
        into place.

        The caller holds the path lock.  Returns the NAR hash and size.
        """
        target = self.physical(path)
        if os.path.lexists(target):
            logger.info("removing invalid '%s' before adding it", path)
            remove_tree(target)
        temp = entry.temp
        write(temp)
        pause_point("after-write")
        canonicalise(temp)
        nar_hash, nar_size = nar.hash_path(temp)
        if expected is not None and (nar_hash, nar_size) != expected:
            raise StoreError(
                f"cannot add '{path}': its source changed while it was copied",
                "retry once the source is no longer being modified",
            )
        if self.fsync:
            fsync_tree(temp)
        pause_point("before-rename")
        os.rename(temp, target)
        if self.fsync:
            fsync(self.real_store_dir)
        return nar_hash, nar_size

    @contextmanager
    def adding(self, path: StorePath | None) -> Iterator[Adding]:
        """Give a fresh temporary name in the store, recorded in ``adding/``.

        On error the temporary entry is removed; if the process dies, the
        record's lock dies with it and :meth:`recover` cleans up.
        """
        temp_name = f"{TEMP_PREFIX}{os.getpid()}-{os.urandom(8).hex()}"
        record = lock_file(self.state_file("adding", temp_name), delete=True)
        entry = Adding(os.path.join(self.real_store_dir, temp_name), record, self.fsync)
        try:
            if path is not None:
                entry.set_target(path)
            yield entry
        finally:
            remove_tree(entry.temp)
            record.release()

    # -- Crash recovery ---------------------------------------------------------

    def recover(self) -> list[str]:
        """Remove what dead adders left: temporary entries and unregistered
        items they were adding.  Return what was removed."""
        removed: list[str] = []
        adding = self.state_file("adding")
        for record in sorted(os.listdir(adding)):
            try:
                lock = lock_file(os.path.join(adding, record), wait=False, delete=True)
            except LockBusyError:
                continue
            try:
                with open(lock.filename, "rb") as file:
                    base_name = file.read().decode()
                removed += self._recover_one(record, base_name)
            finally:
                lock.release()
        return removed

    def _recover_one(self, temp_name: str, base_name: str) -> list[str]:
        removed: list[str] = []
        temp = os.path.join(self.real_store_dir, temp_name)
        if os.path.lexists(temp):
            remove_tree(temp)
            removed.append(temp)
        if not base_name:
            return removed
        path = os.path.join(self.store_dir, base_name)
        try:
            with self.lock_paths([path], wait=False):
                if os.path.lexists(self.physical(path)) and not self.is_valid(path):
                    remove_tree(self.physical(path))
                    removed.append(self.physical(path))
        except LockBusyError:
            pass
        return removed

    def trash(self, physical_path: str) -> int:
        """Remove an item from disk: rename it to a temporary name, then
        delete it, so that it vanishes at once.  Return the bytes freed."""
        with self.adding(None) as entry:
            try:
                os.rename(physical_path, entry.temp)
            except FileNotFoundError:
                return 0
            return remove_tree(entry.temp)


@contextmanager
def _held(lock: FileLock) -> Iterator[FileLock]:
    try:
        yield lock
    finally:
        lock.release()
