"""The local store: items on disk, their validity in SQLite, locks and roots.

A store has a logical *store directory*, hashed into every store path, and a
*state directory* holding::

    db/db.sqlite        the database (see store.database)
    gcroots/            permanent GC roots (see store.roots)
    temproots/<pid>     temporary roots of running processes
    adding/             locked records of builds and imports in progress
    gc.lock             taken shared by adders, exclusive by the collector

With a *root*, both live physically under it (a chroot store): the item
``/nix/store/abc-x`` is on disk at ``ROOT/nix/store/abc-x``.

Adding an item (Nix's ``addToStore``) follows one protocol, so that nothing
half-written is ever valid:

1. compute the store path (hashing the source);
2. take the GC lock shared, add a temporary root, return if already valid;
3. for a tree or file copied from disk, lock ``<path>.lock`` and check
   validity again;
4. write the item as ``<store>/.tmp-<pid>-<hash part>``, canonical, hash it
   (a text from its bytes in memory, a copy from disk), flush it when
   durable;
5. rename it into place, then register it with its references in one
   transaction;
6. drop the GC lock.

Crash recovery.  The temporary root of step 2 doubles as the record of the
add: the roots file of a process lives as long as the process (it is
``flock``-ed), so a roots file whose lock is free lists everything a dead
process may have left half-added.  Recovery reads those files, removes each
``.tmp-<pid>-<hash part>`` entry they imply and each listed item that is on
disk but not valid (unless a build holds its path lock), then deletes the
file.  It runs only while holding the GC lock exclusive, as the collector
does: every adder holds it shared from step 2 to step 6, so recovery never
sees an add in progress, whatever the pids.  The store takes the lock at
open without waiting, and leaves recovery to a later open or to the
collector (``gc``, ``verify --repair``) when others are adding.  A pid
reused by a new process truncates the dead file it inherits; what that
file listed is then garbage for the collector, as in Nix, which keeps no
record at all.  Builds and imports still use locked records in
``adding/``, recovered under the same lock.

Text items take no path lock.  Their path is the hash of their bytes and
references, so every writer of one writes the same bytes, and renaming a
temporary file over the target replaces it atomically: a racing adder never
removes what another one placed.  Copied trees keep the path lock, because
a fixed-output build may be producing the same path.

The GC lock is held per add, or per batch (:meth:`LocalStore.batch`), on a
descriptor kept open (:class:`store.locks.SharedLock`): a collector waits
for one add or one batch, never for a process to exit, whereas a lock held
for the life of the store object would starve ``gc`` behind any long-lived
process.  A batch also keeps one database transaction open, so its items
become valid together when it ends, or, after a crash, not at all.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

from store.database import Database, PathInfo
from store.errors import StoreError
from store.locks import (
    FileLock,
    LockBusyError,
    PathLocks,
    SharedLock,
    held,
    lock_file,
    try_remove_stale_lock,
)
from store.paths import (
    StorePath,
    is_within,
    make_fixed_output_path,
    make_text_path,
)
from store.roots import TempRoots, abandoned_roots, make_indirect_root

if TYPE_CHECKING:
    from store.hash import Hash

# Note: opening a store and querying it must not import the NAR code, the
# ingestion helpers or the canonicaliser; methods that write import them,
# so that a no-op command starts quickly.

__all__ = ["Adding", "LocalStore", "PathInfo", "TEMP_PREFIX", "TextItem", "pause_point"]

logger = logging.getLogger(__name__)

TEMP_PREFIX = ".tmp-"
"""Names of entries being written or deleted in the store directory."""

TextItem = tuple[str, str | bytes, Iterable[str | StorePath]]
"""A text to add: its name, its contents and its references."""

_temp_roots: dict[str, TempRoots] = {}
_temp_roots_lock = threading.Lock()


_PAUSE_AT = os.environ.get("PYGUIX_PAUSE_AT")


def pause_point(name: str) -> None:
    """Stop for a while at ``name`` when ``PYGUIX_PAUSE_AT`` names it.

    Crash tests set ``PYGUIX_PAUSE_AT=NAME`` (read once, at import) to kill
    an adder at a chosen step; the process prints ``paused NAME`` on stderr
    and sleeps.
    """
    if name == _PAUSE_AT:
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


@dataclass(frozen=True)
class _Text:
    """A text to add, its path computed."""

    path: StorePath
    data: bytes
    references: frozenset[str]
    ca: str


@dataclass
class _Batch:
    """What a batch holds until its transaction ends."""

    locks: list[PathLocks] = field(default_factory=list)
    """Path locks of copied items, released after the commit."""

    placed: int = 0
    """How many items were renamed into place (to flush the directory)."""


def _text_item(
    name: str, text: str | bytes, references: Iterable[str | StorePath], store_dir: str
) -> _Text:
    """Compute the path of a text, as Nix's ``addTextToStore`` names it."""
    import hashlib

    from store.hash import Hash

    data = text.encode() if isinstance(text, str) else text
    refs = frozenset(str(r) for r in references)
    digest = hashlib.sha256(data).digest()
    path = make_text_path(name, digest, refs, store_dir)
    return _Text(path, data, refs, f"text:{Hash('sha256', digest).to_string()}")


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
    crashed adds left behind (see :meth:`recover`).
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
        self._gc_shared = SharedLock(self.state_file("gc.lock"))
        self._exclusive_holds = 0
        self._batch: _Batch | None = None
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
        """Close the database and the GC lock (temporary roots live as long
        as the process)."""
        self.db.close()
        self._gc_shared.close()

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

    def register_valid_paths(
        self,
        infos: Sequence[PathInfo],
        derivation_outputs: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        """Make ``infos`` valid, and record ``derivation_outputs``, in one
        transaction.

        The caller guarantees that each item is complete and canonical on
        disk and that it holds the items' path locks.

        :param derivation_outputs: for each valid derivation path, its
            outputs by name (as :meth:`register_derivation_outputs`), so that
            a build's outputs and the record of them become valid together.
        """
        now = int(time.time())
        stamped = [
            info if info.registration_time else replace(info, registration_time=now)
            for info in infos
        ]
        with self._gc_shared.hold():
            self._temp_roots().add_many(info.path for info in stamped)
            with self.db.transaction():
                self.db.register(stamped)
                for drv_path, outputs in (derivation_outputs or {}).items():
                    self.db.register_outputs(str(drv_path), dict(outputs))

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

    @contextmanager
    def gc_lock(self, shared: bool, wait: bool = True) -> Iterator[FileLock]:
        """Hold the global GC lock, shared (adders) or exclusive (collector).

        While this store holds it exclusive, :meth:`recover` runs in full.
        """
        lock = lock_file(self.state_file("gc.lock"), shared=shared, wait=wait)
        self._exclusive_holds += not shared
        try:
            yield lock
        finally:
            self._exclusive_holds -= not shared
            lock.release()

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
        with self._gc_shared.hold():
            self._temp_roots().add(str(path))

    def add_temp_roots(self, paths: Iterable[str | StorePath]) -> None:
        """Add temporary roots for ``paths`` under one hold of the GC lock."""
        with self._gc_shared.hold():
            self._temp_roots().add_many(str(p) for p in paths)

    def clear_temp_roots(self) -> None:
        """Drop every temporary root this process holds (a long-running
        process that no longer uses the items it added)."""
        with self._gc_shared.hold():
            self._temp_roots().clear()

    def add_permanent_root(self, link: str, path: str | StorePath) -> None:
        """Make ``link`` a symlink to ``path`` and an indirect GC root, as
        ``nix-store --add-root LINK --indirect -r PATH``.

        :raises StoreError: when ``path`` is not valid.
        :raises RootError: when ``link`` cannot be made.
        """
        self.parse_path(str(path))

        # The GC lock, held shared, keeps the collector out from the check
        # until the root exists.
        with self._gc_shared.hold():
            if not self.is_valid(path):
                raise StoreError(
                    f"cannot make a GC root for '{path}': it is not valid",
                    "add or build it first ('pyguix store add', 'pyguix build')",
                )
            make_indirect_root(self.state_file("gcroots"), link, str(path))

    # -- Adding texts ------------------------------------------------------------

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Add items in the block under one hold of the GC lock and in one
        database transaction.

        Items added in the block are on disk at once and valid for this
        store object (queries see them), but become valid for other
        processes only when the block ends.  An exception in the block
        still registers the items added before it (each is complete),
        unless the database failed in the middle of a registration; a
        process killed in the block registers none, and recovery removes
        them.  The collector, and other processes' registrations, wait for
        the block: keep it to one burst of adds, such as writing the
        derivations of one lowering.  Nested batches join the outer one.
        """
        if self._batch is not None:
            yield
            return
        with self._gc_shared.hold():
            batch = self._batch = _Batch()
            try:
                self.db.begin()
                try:
                    yield
                finally:
                    self._commit(batch)
            finally:
                for locks in batch.locks:
                    locks.release()
                self._batch = None

    def _commit(self, batch: _Batch) -> None:
        """Make the batch's registrations valid, flushed first when durable."""
        try:
            pause_point("before-commit")
            if self.fsync and batch.placed:
                from store.ingest import fsync

                fsync(self.real_store_dir)
            self.db.commit()
            pause_point("after-commit")
        except BaseException:
            # XXX: items already renamed into place stay on disk, invalid,
            # until the collector removes them.
            self.db.rollback()
            raise

    def add_text(
        self, name: str, text: str | bytes, references: Iterable[str | StorePath] = ()
    ) -> StorePath:
        """Add ``text`` as a file named ``name``, as Nix's ``addTextToStore``.

        :raises StoreError: when a reference is not valid.
        """
        item = _text_item(name, text, references, self.store_dir)
        path = str(item.path)
        with self._gc_shared.hold():
            self._temp_roots().add(path)
            valid = self.db.query_valid([path, *item.references])
            if path in valid:
                return item.path
            _check_references(item, valid, set())
            pause_point("locked")
            info = self._write_text(item)
            if info is not None:
                pause_point("before-register")
                self.db.register([info], checked=True)
                pause_point("after-register")
        return item.path

    def add_texts(self, items: Iterable[TextItem]) -> list[StorePath]:
        """Add many texts, each as :meth:`add_text` would, in one batch.

        Each text may refer to valid items and to texts before it in
        ``items``.  All are checked before anything is written, then those
        not yet valid are written and registered in one transaction: after a
        crash, either all of them are valid or none.

        :returns: the paths of ``items``, in order.
        :raises StoreError: when a reference is neither valid nor earlier
            in ``items``; nothing is added then.
        """
        texts = [_text_item(*item, self.store_dir) for item in items]
        paths = [str(text.path) for text in texts]
        with self.batch():
            self._temp_roots().add_many(paths)
            references = {r for text in texts for r in text.references}
            valid = self.db.query_valid({*paths, *references})
            earlier: set[str] = set()
            for text in texts:
                _check_references(text, valid, earlier)
                earlier.add(str(text.path))
            self._write_texts([t for t in texts if str(t.path) not in valid])
        return [text.path for text in texts]

    def _write_texts(self, texts: Sequence[_Text]) -> None:
        """Write ``texts`` and register them in one statement group."""
        infos: list[PathInfo] = []
        done: set[str] = set()
        for text in texts:
            if str(text.path) in done:
                continue
            done.add(str(text.path))
            pause_point("locked")
            info = self._write_text(text, before=infos)
            if info is None:
                infos = []
            else:
                infos.append(info)
        pause_point("before-register")
        self.db.register(infos, checked=True)
        pause_point("after-register")

    def _write_text(
        self, text: _Text, before: Sequence[PathInfo] = ()
    ) -> PathInfo | None:
        """Place ``text`` in the store; return its metadata to register.

        When its place holds a directory (junk from a crash), add it the
        slow way under its path lock instead, after registering ``before``
        (what it may refer to), and return ``None``.
        """
        from store.canonical import remove_tree
        from store.ingest import file_nar_hash, write_file

        temp = self._temp_name(text.path)
        target = self.physical(text.path)
        try:
            try:
                write_file(temp, text.data, self.fsync)
            except FileExistsError:
                remove_tree(temp)  # left by a dead process with our pid
                write_file(temp, text.data, self.fsync)
            pause_point("after-write")
            pause_point("before-rename")
            os.rename(temp, target)
        except IsADirectoryError:
            remove_tree(temp)
            self.db.register(before, checked=True)
            data = text.data
            self._add_item(
                text.path,
                lambda temp: write_file(temp, data, self.fsync),
                None,
                text.references,
                text.ca,
            )
            return None
        except BaseException:
            remove_tree(temp)
            raise
        self._placed()
        nar_hash, nar_size = file_nar_hash(text.data)
        return PathInfo(
            str(text.path),
            nar_hash,
            nar_size,
            text.references,
            None,
            int(time.time()),
            text.ca,
        )

    def _placed(self) -> None:
        """Flush the store directory after a rename, or count it for the
        batch to flush once."""
        if self._batch is not None:
            self._batch.placed += 1
        elif self.fsync:
            from store.ingest import fsync

            fsync(self.real_store_dir)

    def _temp_name(self, path: StorePath) -> str:
        """Return the physical temporary name this process writes ``path`` under."""
        return os.path.join(
            self.real_store_dir, f"{TEMP_PREFIX}{os.getpid()}-{path.hash_part}"
        )

    # -- Adding trees ------------------------------------------------------------

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
        from store.hash import ALGORITHMS
        from store.ingest import copy_source, hash_source

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
            lambda temp: copy_source(source, temp),
            (nar_hash, nar_size),
            frozenset(),
            ca,
        )
        return path

    def _add_item(
        self,
        path: StorePath,
        write: Callable[[str], tuple[Hash, int] | None],
        expected: tuple[Hash, int] | None,
        references: frozenset[str],
        ca: str | None,
    ) -> None:
        """Write (with ``write``), check and register ``path``, unless valid."""
        text = str(path)
        with self._gc_shared.hold():
            self._temp_roots().add(text)
            if self.is_valid(text):
                return
            locks = PathLocks([self.lock_file_of(text)])
            try:
                if self.is_valid(text):
                    return
                pause_point("locked")
                nar_hash, nar_size = self._write_item(path, write, expected)
                pause_point("before-register")
                info = PathInfo(
                    text, nar_hash, nar_size, references, None, int(time.time()), ca
                )
                try:
                    self.db.register([info])
                except BaseException:
                    from store.canonical import remove_tree

                    remove_tree(self.physical(path))
                    raise
                pause_point("after-register")
            finally:
                # In a batch, the item is not valid for others until the
                # commit: keep it locked until then.
                if self._batch is not None:
                    self._batch.locks.append(locks)
                else:
                    locks.release()

    def _write_item(
        self,
        path: StorePath,
        write: Callable[[str], tuple[Hash, int] | None],
        expected: tuple[Hash, int] | None,
    ) -> tuple[Hash, int]:
        """Write ``path`` under its temporary name, then move it into place.

        ``write`` returns the NAR hash and size of what it wrote, or
        ``None`` to have the written tree hashed.  The caller holds the path
        lock.  Returns the NAR hash and size.
        """
        from store import nar
        from store.canonical import canonicalise, remove_tree
        from store.ingest import fsync_tree

        target = self.physical(path)
        if os.path.lexists(target):
            logger.info("removing invalid '%s' before adding it", path)
            remove_tree(target)
        temp = self._temp_name(path)
        remove_tree(temp)  # left by a dead process with our pid
        try:
            written = write(temp)
            pause_point("after-write")
            canonicalise(temp)
            nar_hash, nar_size = written or nar.hash_path(temp)
            if expected is not None and (nar_hash, nar_size) != expected:
                raise StoreError(
                    f"cannot add '{path}': its source changed while it was copied",
                    "retry once the source is no longer being modified",
                )
            if self.fsync:
                fsync_tree(temp)
            pause_point("before-rename")
            os.rename(temp, target)
        except BaseException:
            remove_tree(temp)
            raise
        self._placed()
        return nar_hash, nar_size

    @contextmanager
    def adding(self, path: StorePath | None) -> Iterator[Adding]:
        """Give a fresh temporary name in the store, recorded in ``adding/``
        (for builds and imports, which hold it longer than one add).

        On error the temporary entry is removed; if the process dies, the
        record's lock dies with it and :meth:`recover` cleans up.
        """
        from store.canonical import remove_tree

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
        items they were adding.  Return what was removed.

        This needs the GC lock exclusive, so that no add is in progress: it
        is taken without waiting, or already held through :meth:`gc_lock`.
        While other processes add, nothing is done; the next open of the
        store or the next collection does it.
        """
        if self._exclusive_holds:
            return self._recover_locked()
        try:
            lock = lock_file(self.state_file("gc.lock"), wait=False)
        except LockBusyError:
            logger.debug("leaving crash recovery for later: the store is in use")
            return []
        with held(lock):
            return self._recover_locked()

    def _recover_locked(self) -> list[str]:
        removed = self._recover_records()
        with abandoned_roots(self.state_file("temproots")) as dead:
            for pid, paths in dead:
                removed += self._recover_roots(pid, paths)
        return removed

    def _recover_records(self) -> list[str]:
        """Clean up after dead builds and imports, from their ``adding/`` records."""
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
        from store.canonical import remove_tree

        removed: list[str] = []
        temp = os.path.join(self.real_store_dir, temp_name)
        if os.path.lexists(temp):
            remove_tree(temp)
            removed.append(temp)
        if base_name:
            removed += self._remove_invalid([os.path.join(self.store_dir, base_name)])
        return removed

    def _recover_roots(self, pid: int, paths: list[str]) -> list[str]:
        """Clean up after the dead process ``pid`` that listed ``paths``."""
        removed: list[str] = []
        prefix = self.store_dir + "/"
        mine = [
            p for p in paths if p.startswith(prefix) and "/" not in p[len(prefix) :]
        ]
        for path in mine:
            hash_part = path[len(prefix) :][:32]
            temp = os.path.join(self.real_store_dir, f"{TEMP_PREFIX}{pid}-{hash_part}")
            if os.path.lexists(temp):
                from store.canonical import remove_tree

                remove_tree(temp)
                removed.append(temp)
            lock = self.lock_file_of(path)
            if os.path.lexists(lock) and try_remove_stale_lock(lock):
                removed.append(lock)
        valid = self.db.query_valid(mine)
        return removed + self._remove_invalid(sorted(set(mine) - valid))

    def _remove_invalid(self, paths: list[str]) -> list[str]:
        """Remove those of ``paths`` on disk but not valid, unless locked."""
        removed: list[str] = []
        for path in paths:
            physical = self.physical(path)
            if not os.path.lexists(physical) or self.holds_state(physical):
                continue
            try:
                from store.canonical import remove_tree

                with self.lock_paths([path], wait=False):
                    if not self.is_valid(path):
                        remove_tree(self.physical(path))
                        removed.append(self.physical(path))
            except LockBusyError:
                pass
        return removed

    def holds_state(self, physical_path: str) -> bool:
        """Tell whether ``physical_path`` is the state directory or one of
        its parents on disk, symlinks resolved (but a final symlink, which
        removing would not follow).

        The configuration keeps the two directories apart by name; this
        catches a symlink that puts the state inside the store anyway.
        """
        parent, name = os.path.split(os.path.abspath(physical_path))
        entry = os.path.join(os.path.realpath(parent), name)
        state = os.path.realpath(self.real_state_dir)
        return is_within(state, entry)

    def trash(self, physical_path: str) -> int:
        """Remove an item from disk: rename it to a temporary name, then
        delete it, so that it vanishes at once.  Return the bytes freed.

        :raises StoreError: when ``physical_path`` holds the state directory.
        """
        from store.canonical import remove_tree

        if self.holds_state(physical_path):
            raise StoreError(
                f"refusing to delete '{physical_path}': it holds the state "
                f"directory '{self.real_state_dir}'",
                "move the state directory out of the store directory",
            )
        with self.adding(None) as entry:
            try:
                os.rename(physical_path, entry.temp)
            except FileNotFoundError:
                return 0
            return remove_tree(entry.temp)


def _check_references(text: _Text, valid: set[str], earlier: set[str]) -> None:
    """Refuse ``text`` if it refers to something neither valid nor ``earlier``."""
    missing = text.references - valid - earlier
    if missing:
        raise StoreError(
            f"cannot add '{text.path}': its reference '{min(missing)}' is not valid",
            "add the referenced items first",
        )
