"""The store database: schema, pragmas, registration and queries."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from store.database import SCHEMA_VERSION, Database, DatabaseError, PathInfo
from store.hash import hash_bytes

A = "/s/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-a"
B = "/s/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-b"
C = "/s/cccccccccccccccccccccccccccccccc-c"


def info(path: str, *refs: str, deriver: str | None = None) -> PathInfo:
    return PathInfo(
        path, hash_bytes("sha256", path.encode()), 8, frozenset(refs), deriver, 1
    )


@pytest.fixture
def db(tmp_path: Path) -> Database:
    return Database(str(tmp_path / "db.sqlite"))


def test_durable_database_syncs_every_commit(tmp_path: Path) -> None:
    durable = Database(str(tmp_path / "durable.sqlite"), durable=True)
    assert durable.connection.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_pragmas_and_schema_version(db: Database) -> None:
    run = db.connection.execute
    assert run("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert run("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL, as Nix
    assert run("PRAGMA foreign_keys").fetchone()[0] == 1
    assert run("PRAGMA busy_timeout").fetchone()[0] > 0
    assert run("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    tables = {r[0] for r in run("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"ValidPaths", "Refs", "DerivationOutputs"} <= tables


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    filename = str(tmp_path / "db.sqlite")
    Database(filename).close()
    connection = sqlite3.connect(filename)
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    connection.close()
    with pytest.raises(DatabaseError, match="newer"):
        Database(filename)


def test_register_and_query(db: Database) -> None:
    db.register([info(A), info(B, A, B, deriver=C)])
    assert db.query_valid([A, B, C]) == {A, B}
    assert db.references(B) == {A, B}
    assert db.referrers([A]) == {B}
    assert db.closure([B]) == {A, B}
    assert db.referrer_closure([A]) == {A, B}
    assert db.deriver(B) == C
    got = db.path_info(B)
    assert got == info(B, A, B, deriver=C)
    assert db.path_info(C) is None


def test_registration_with_an_invalid_reference_registers_nothing(db: Database) -> None:
    with pytest.raises(DatabaseError, match="is not valid"):
        db.register([info(A), info(B, C)])
    assert db.query_valid([A, B]) == set()


def test_references_cannot_be_invalidated_before_referrers(db: Database) -> None:
    db.register([info(A), info(B, A)])
    with pytest.raises(DatabaseError, match="still refers"):
        db.invalidate([A])
    assert db.query_valid([A, B]) == {A, B}
    db.invalidate([A, B])
    assert db.query_valid([A, B]) == set()
    assert db.connection.execute("SELECT count(*) FROM Refs").fetchone()[0] == 0


def test_derivation_outputs(db: Database) -> None:
    db.register([info(C)])
    db.register_outputs(C, {"out": A, "lib": B})
    assert db.derivation_outputs([C]) == {C: {"out": A, "lib": B}}
    assert db.derivers_of_outputs([B]) == {C}
    with pytest.raises(DatabaseError, match="not valid"):
        db.register_outputs(A, {"out": B})


def test_query_valid_is_one_query_for_many_paths(db: Database) -> None:
    many = [f"/s/{i:032d}-x" for i in range(5000)]
    db.register([info(p) for p in many[::2]])
    statements: list[str] = []
    db.connection.set_trace_callback(statements.append)
    assert db.query_valid(many) == set(many[::2])
    assert len(statements) == 1


def test_a_batch_may_refer_forward_and_repeat_items(db: Database) -> None:
    db.register([info(A, B, C), info(B, C), info(C), info(C)])
    assert db.references(A) == {B, C}
    assert db.closure([A]) == {A, B, C}


def test_reregistering_replaces_references(db: Database) -> None:
    db.register([info(B), info(C), info(A, B)])
    db.register([info(A, C)])
    assert db.references(A) == {C}


def test_a_registration_inside_an_open_transaction_fails_alone(
    db: Database, tmp_path: Path
) -> None:
    other = Database(str(tmp_path / "db.sqlite"))
    db.begin()
    db.register([info(A)])
    with pytest.raises(DatabaseError):
        db.register([info(B, C)])
    assert db.query_valid([A, B]) == {A}
    assert other.query_valid([A]) == set()
    db.commit()
    assert other.query_valid([A, B]) == {A}


def test_query_valid_with_few_and_many_paths(db: Database) -> None:
    many = [f"/s/{index:032d}-x" for index in range(40)]
    db.register([info(p) for p in many[::2]])
    assert db.query_valid(many[:3]) == {many[0], many[2]}
    assert db.query_valid(many) == set(many[::2])


def test_a_registration_failing_half_way_spoils_the_transaction(
    db: Database, tmp_path: Path
) -> None:
    db.begin()
    db.register([info(A)])
    # The caller wrongly claims the references were checked: the row of B is
    # written before its missing reference is found.
    with pytest.raises(DatabaseError, match="is not valid"):
        db.register([info(B, C)], checked=True)
    with pytest.raises(DatabaseError, match="nothing of the batch"):
        db.commit()
    assert not db.connection.in_transaction
    assert Database(str(tmp_path / "db.sqlite")).query_valid([A, B]) == set()


def _open(filename: str) -> str:
    """Open ``filename`` as a store database; return the error, if any."""
    try:
        Database(filename).close()
    except DatabaseError as error:
        return str(error)
    return ""


def test_processes_creating_one_database_at_once_all_open_it(tmp_path: Path) -> None:
    # Switching a new database to WAL fails at once, without waiting, in
    # all but one of several processes doing it together.
    context = multiprocessing.get_context("fork")
    with context.Pool(4) as pool:
        for round_ in range(25):
            filename = str(tmp_path / f"db{round_}.sqlite")
            assert pool.map(_open, [filename] * 4) == [""] * 4
            assert Database(filename).connection.execute(
                "PRAGMA journal_mode"
            ).fetchone() == ("wal",)
