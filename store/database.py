"""Keep the set of valid store items in SQLite, with their metadata.

An item is *valid* when it has a row in ``ValidPaths``; only valid items may
be used, referenced or kept by roots.  The schema follows Nix's
``libstore/schema.sql``::

    ValidPaths(id, path UNIQUE, hash, registrationTime, deriver, narSize, ca)
    Refs(referrer -> ValidPaths.id ON DELETE CASCADE,
         reference -> ValidPaths.id ON DELETE RESTRICT)
    DerivationOutputs(drv -> ValidPaths.id ON DELETE CASCADE, id, path)

``hash`` is ``sha256:<base16>`` of the item's NAR, as Nix writes it.  The
restriction on ``Refs.reference`` makes it impossible to invalidate an item
that a valid item still refers to: the closure of a valid item is valid.

The database runs in WAL mode with a busy timeout and foreign keys on, and
``synchronous=NORMAL`` as Nix's defaults have it (``FULL`` when the store
flushes items): a killed process never loses a committed transaction, and a
power failure may lose the last ones but never corrupts the database.
Every write is one explicit ``BEGIN IMMEDIATE`` transaction, so an item and
its references become valid together or not at all.  A write made while a
transaction is open (a batch of adds, :meth:`Database.begin`) joins it and
becomes durable, visible to other connections, only when it commits.  A
registration there checks its references before writing, so that it fails
alone; one that fails half-way anyway spoils the transaction, and other
writes are savepoints.  The schema version is SQLite's ``user_version``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from store.errors import StoreError
from store.hash import Hash

__all__ = ["SCHEMA_VERSION", "Database", "DatabaseError", "PathInfo"]

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 600_000

_FEW = 16
"""Up to this many paths are passed as parameters, more as one JSON array."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ValidPaths (
    id               INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    path             TEXT UNIQUE NOT NULL,
    hash             TEXT NOT NULL,
    registrationTime INTEGER NOT NULL,
    deriver          TEXT,
    narSize          INTEGER,
    ca               TEXT
);
CREATE TABLE IF NOT EXISTS Refs (
    referrer  INTEGER NOT NULL,
    reference INTEGER NOT NULL,
    PRIMARY KEY (referrer, reference),
    FOREIGN KEY (referrer) REFERENCES ValidPaths(id) ON DELETE CASCADE,
    FOREIGN KEY (reference) REFERENCES ValidPaths(id) ON DELETE RESTRICT
);
CREATE INDEX IF NOT EXISTS IndexReferrer ON Refs(referrer);
CREATE INDEX IF NOT EXISTS IndexReference ON Refs(reference);
CREATE TABLE IF NOT EXISTS DerivationOutputs (
    drv  INTEGER NOT NULL,
    id   TEXT NOT NULL,
    path TEXT NOT NULL,
    PRIMARY KEY (drv, id),
    FOREIGN KEY (drv) REFERENCES ValidPaths(id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS IndexDerivationOutputs ON DerivationOutputs(path);
"""


class DatabaseError(StoreError):
    """Report a database that is unusable or a registration it refuses."""

    def __init__(self, message: str, hint: str | None = None, path: str = "") -> None:
        super().__init__(message, hint)
        self.path = path


@dataclass(frozen=True)
class PathInfo:
    """The metadata of a valid store item (a ``ValidPaths`` row and its refs)."""

    path: str
    """The store path, in the logical store directory."""

    nar_hash: Hash
    """The sha256 of the item's NAR."""

    nar_size: int
    """The size in bytes of the item's NAR."""

    references: frozenset[str]
    """The store paths the item refers to, possibly itself."""

    deriver: str | None = None
    """The derivation that built the item, if known."""

    registration_time: int = 0
    """When the item became valid, in seconds since the epoch."""

    ca: str | None = None
    """The content address (``fixed:r:sha256:...``, ``text:sha256:...``)."""


def _json(paths: Iterable[str]) -> str:
    """Encode ``paths`` for ``json_each``, to pass many paths as one parameter."""
    return json.dumps(list(paths))


class Database:
    """One connection to a store database, creating its schema if needed.

    :param filename: the physical path of the SQLite file.
    :param durable: sync every commit to disk (``synchronous=FULL``).
    """

    def __init__(self, filename: str, *, durable: bool = False) -> None:
        self.durable = durable
        self.spoiled = False
        """Whether a write failed half-way in the transaction of :meth:`begin`."""
        self.filename = filename
        try:
            self.connection = sqlite3.connect(
                filename, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None
            )
            self._configure()
            self._migrate()
        except sqlite3.DatabaseError as error:
            raise DatabaseError(
                f"cannot open the store database '{filename}': {error}",
                "check that the state directory is writable and not corrupt",
            ) from None
        self.filename = filename

    def _configure(self) -> None:
        """Set WAL, durability, the busy timeout and foreign keys."""
        run = self.connection.execute
        run(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self._enter_wal_mode()
        run(f"PRAGMA synchronous = {'FULL' if self.durable else 'NORMAL'}")
        run("PRAGMA foreign_keys = ON")

    def _enter_wal_mode(self) -> None:
        """Switch the database to WAL, waiting for others doing the same.

        SQLite answers "database is locked" at once, without its busy
        handler, to a connection changing the journal mode while another
        one holds the file; two processes opening a new store meet this.
        """
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        pause = 0.001
        while True:
            try:
                self.connection.execute("PRAGMA journal_mode = WAL").fetchall()
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    def _migrate(self) -> None:
        """Create the schema on first use; refuse a newer one."""
        # An up-to-date database is opened without waiting for writers.
        (version,) = self.connection.execute("PRAGMA user_version").fetchone()
        if version == SCHEMA_VERSION:
            return
        with self.transaction():
            (version,) = self.connection.execute("PRAGMA user_version").fetchone()
            if version > SCHEMA_VERSION:
                raise DatabaseError(
                    f"the store database '{self.connection}' has schema version "
                    f"{version}, newer than {SCHEMA_VERSION}",
                    "use a newer pyguix with this store",
                )
            if version < SCHEMA_VERSION:
                for statement in _SCHEMA.split(";"):
                    self.connection.execute(statement)
                self.connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Run the block in one ``BEGIN IMMEDIATE`` transaction, or in a
        savepoint of the transaction already open."""
        run = self.connection.execute
        if self.connection.in_transaction:
            run("SAVEPOINT pyguix_write")
            try:
                yield self.connection
            except BaseException:
                run("ROLLBACK TO pyguix_write")
                run("RELEASE pyguix_write")
                raise
            run("RELEASE pyguix_write")
            return
        run("BEGIN IMMEDIATE")
        try:
            yield self.connection
        except BaseException:
            run("ROLLBACK")
            raise
        run("COMMIT")

    def begin(self) -> None:
        """Open a transaction that later writes join, until :meth:`commit`.

        It takes SQLite's write lock at once: other writers wait (up to the
        busy timeout) until it ends, readers do not.
        """
        self.connection.execute("BEGIN IMMEDIATE")
        self.spoiled = False

    def commit(self) -> None:
        """Commit the transaction opened by :meth:`begin`.

        :raises DatabaseError: when a registration failed half-way in it;
            the whole transaction is abandoned then.
        """
        if self.spoiled:
            self.rollback()
            raise DatabaseError(
                f"a registration failed in a batch on '{self.filename}'; "
                "nothing of the batch was registered",
                "look for the error reported before this one, then retry",
            )
        self.connection.execute("COMMIT")

    def rollback(self) -> None:
        """Abandon the transaction opened by :meth:`begin`, if still open."""
        self.spoiled = False
        if self.connection.in_transaction:
            self.connection.execute("ROLLBACK")

    def close(self) -> None:
        """Close the connection."""
        self.connection.close()

    # -- Queries --------------------------------------------------------------

    def query_valid(self, paths: Iterable[str]) -> set[str]:
        """Return those of ``paths`` that are valid, in one query."""
        chosen = list(paths)
        if len(chosen) <= _FEW:
            marks = ", ".join("?" * len(chosen))
            sql = f"SELECT path FROM ValidPaths WHERE path IN ({marks})"
            return {row[0] for row in self.connection.execute(sql, chosen)}
        rows = self.connection.execute(
            "SELECT path FROM ValidPaths WHERE path IN (SELECT value FROM json_each(?))",
            (_json(chosen),),
        )
        return {row[0] for row in rows}

    def all_valid(self) -> set[str]:
        """Return every valid path."""
        return {
            row[0] for row in self.connection.execute("SELECT path FROM ValidPaths")
        }

    def path_info(self, path: str) -> PathInfo | None:
        """Return the metadata of ``path``, or ``None`` if it is not valid."""
        row = self.connection.execute(
            "SELECT id, hash, registrationTime, deriver, narSize, ca "
            "FROM ValidPaths WHERE path = ?",
            (path,),
        ).fetchone()
        if row is None:
            return None
        ident, nar_hash, time, deriver, size, ca = row
        return PathInfo(
            path=path,
            nar_hash=Hash.from_string(nar_hash),
            nar_size=size or 0,
            references=frozenset(self._references_of_id(ident)),
            deriver=deriver or None,
            registration_time=time,
            ca=ca or None,
        )

    def _references_of_id(self, ident: int) -> list[str]:
        rows = self.connection.execute(
            "SELECT v.path FROM Refs r JOIN ValidPaths v ON r.reference = v.id "
            "WHERE r.referrer = ?",
            (ident,),
        )
        return [row[0] for row in rows]

    def references(self, path: str) -> set[str]:
        """Return the paths ``path`` refers to."""
        rows = self.connection.execute(
            "SELECT v.path FROM Refs r JOIN ValidPaths v ON r.reference = v.id "
            "WHERE r.referrer = (SELECT id FROM ValidPaths WHERE path = ?)",
            (path,),
        )
        return {row[0] for row in rows}

    def referrers(self, paths: Iterable[str]) -> set[str]:
        """Return the valid paths that refer to any of ``paths``."""
        rows = self.connection.execute(
            "SELECT v.path FROM Refs r JOIN ValidPaths v ON r.referrer = v.id "
            "WHERE r.reference IN (SELECT id FROM ValidPaths "
            "WHERE path IN (SELECT value FROM json_each(?)))",
            (_json(paths),),
        )
        return {row[0] for row in rows}

    def closure(self, paths: Iterable[str]) -> set[str]:
        """Return the valid ``paths`` and everything they refer to, transitively."""
        rows = self.connection.execute(
            "WITH RECURSIVE closure(id) AS ("
            " SELECT id FROM ValidPaths WHERE path IN (SELECT value FROM json_each(?))"
            " UNION SELECT r.reference FROM Refs r JOIN closure c ON r.referrer = c.id)"
            " SELECT v.path FROM closure c JOIN ValidPaths v ON v.id = c.id",
            (_json(paths),),
        )
        return {row[0] for row in rows}

    def referrer_closure(self, paths: Iterable[str]) -> set[str]:
        """Return the valid ``paths`` and every item referring to them, transitively."""
        rows = self.connection.execute(
            "WITH RECURSIVE closure(id) AS ("
            " SELECT id FROM ValidPaths WHERE path IN (SELECT value FROM json_each(?))"
            " UNION SELECT r.referrer FROM Refs r JOIN closure c ON r.reference = c.id)"
            " SELECT v.path FROM closure c JOIN ValidPaths v ON v.id = c.id",
            (_json(paths),),
        )
        return {row[0] for row in rows}

    def deriver(self, path: str) -> str | None:
        """Return the recorded deriver of ``path``."""
        row = self.connection.execute(
            "SELECT deriver FROM ValidPaths WHERE path = ?", (path,)
        ).fetchone()
        return row[0] or None if row else None

    def derivation_outputs(self, drv_paths: Iterable[str]) -> dict[str, dict[str, str]]:
        """Return the registered outputs of each of ``drv_paths``, by output name."""
        rows = self.connection.execute(
            "SELECT v.path, o.id, o.path FROM DerivationOutputs o "
            "JOIN ValidPaths v ON o.drv = v.id "
            "WHERE v.path IN (SELECT value FROM json_each(?))",
            (_json(drv_paths),),
        )
        outputs: dict[str, dict[str, str]] = {}
        for drv, name, path in rows:
            outputs.setdefault(drv, {})[name] = path
        return outputs

    def derivers_of_outputs(self, paths: Iterable[str]) -> set[str]:
        """Return the valid derivations that list any of ``paths`` as an output."""
        rows = self.connection.execute(
            "SELECT v.path FROM DerivationOutputs o JOIN ValidPaths v ON o.drv = v.id "
            "WHERE o.path IN (SELECT value FROM json_each(?))",
            (_json(paths),),
        )
        return {row[0] for row in rows}

    def edges(self, paths: Iterable[str]) -> list[tuple[str, str]]:
        """Return the (referrer, reference) pairs among ``paths``."""
        rows = self.connection.execute(
            "WITH chosen(id, path) AS (SELECT id, path FROM ValidPaths "
            " WHERE path IN (SELECT value FROM json_each(?))) "
            "SELECT a.path, b.path FROM Refs r "
            "JOIN chosen a ON r.referrer = a.id JOIN chosen b ON r.reference = b.id",
            (_json(paths),),
        )
        return [(row[0], row[1]) for row in rows]

    # -- Updates --------------------------------------------------------------

    def register(self, infos: Sequence[PathInfo], *, checked: bool = False) -> None:
        """Make ``infos`` valid with their references, in one transaction.

        Registering an already valid path updates its metadata (as Nix's
        ``registerValidPaths``).  Every row goes in before any reference, so
        ``infos`` may refer to each other in any order.

        Inside a transaction opened by :meth:`begin`, references are checked
        first and the rows written without a savepoint (which would cost as
        much as a commit); a write that fails anyway spoils the transaction,
        which :meth:`commit` then abandons.

        :param checked: the caller has checked that every reference is valid
            or among ``infos``.
        :raises DatabaseError: when a reference is neither valid nor among
            ``infos``; nothing is registered then.
        """
        infos = list({info.path: info for info in infos}.values())
        if not infos:
            return
        if not self.connection.in_transaction:
            with self.transaction() as db:
                self._write(db, infos)
            return
        if not checked:
            self._check_references(infos)
        try:
            self._write(self.connection, infos)
        except BaseException:
            self.spoiled = True
            raise

    def _write(self, db: sqlite3.Connection, infos: list[PathInfo]) -> None:
        """Write the rows of ``infos``, then their references."""
        idents = [self._upsert(db, info) for info in infos]
        db.executemany("DELETE FROM Refs WHERE referrer = ?", [(i,) for i in idents])
        pairs = [
            (ident, reference)
            for ident, info in zip(idents, infos, strict=True)
            for reference in info.references
        ]
        found = db.executemany(
            "INSERT INTO Refs (referrer, reference) "
            "SELECT ?, id FROM ValidPaths WHERE path = ?",
            pairs,
        )
        if found.rowcount != len(pairs):
            self._check_references(infos)
            raise AssertionError("a reference went missing during registration")

    def _check_references(self, infos: list[PathInfo]) -> None:
        """Raise for the first info with a reference neither valid nor in ``infos``."""
        listed = {info.path for info in infos}
        wanted = {r for info in infos for r in info.references} - listed
        valid = self.query_valid(wanted)
        for info in infos:
            missing = sorted(info.references - listed - valid)
            if missing:
                raise DatabaseError(
                    f"cannot register '{info.path}': its reference '{missing[0]}' "
                    "is not valid",
                    "add or register the references first, or in the same batch",
                    info.path,
                )

    def _upsert(self, db: sqlite3.Connection, info: PathInfo) -> int:
        """Insert or update the row of ``info``; return its id."""
        row = db.execute(
            "INSERT INTO ValidPaths (path, hash, registrationTime, deriver, "
            "narSize, ca) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (path) DO UPDATE SET hash = excluded.hash, "
            "registrationTime = excluded.registrationTime, "
            "deriver = excluded.deriver, narSize = excluded.narSize, "
            "ca = excluded.ca RETURNING id",
            (
                info.path,
                info.nar_hash.to_string("base16"),
                info.registration_time,
                info.deriver,
                info.nar_size,
                info.ca,
            ),
        ).fetchone()
        ident: int = row[0]
        return ident

    def register_outputs(self, drv_path: str, outputs: dict[str, str]) -> None:
        """Record ``outputs`` (name to path) of the valid derivation ``drv_path``."""
        with self.transaction() as db:
            row = db.execute(
                "SELECT id FROM ValidPaths WHERE path = ?", (drv_path,)
            ).fetchone()
            if row is None:
                raise DatabaseError(
                    f"cannot record outputs of '{drv_path}': it is not valid",
                    "add the derivation to the store first",
                    drv_path,
                )
            db.executemany(
                "INSERT OR REPLACE INTO DerivationOutputs (drv, id, path) "
                "VALUES (?, ?, ?)",
                [(row[0], name, path) for name, path in sorted(outputs.items())],
            )

    def invalidate(self, paths: Sequence[str]) -> None:
        """Make ``paths`` invalid in one transaction, referrers first.

        :raises DatabaseError: if a valid path outside ``paths`` still refers
            to one of them; nothing is invalidated then.
        """
        with self.transaction() as db:
            chosen = "(SELECT value FROM json_each(?))"
            db.execute(
                "DELETE FROM Refs WHERE referrer IN "
                f"(SELECT id FROM ValidPaths WHERE path IN {chosen})",
                (_json(paths),),
            )
            try:
                db.execute(
                    f"DELETE FROM ValidPaths WHERE path IN {chosen}", (_json(paths),)
                )
            except sqlite3.IntegrityError:
                outside = self.referrers(paths) - set(paths)
                raise DatabaseError(
                    f"cannot invalidate '{min(paths)}' and others: "
                    f"'{min(outside) if outside else '?'}' still refers to them",
                    "invalidate their referrers too",
                    min(paths),
                ) from None
