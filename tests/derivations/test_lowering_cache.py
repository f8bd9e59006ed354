"""Tests of the persistent lowering cache: a second evaluation in a new
process lowers nothing, a damaged or foreign file is ignored and rewritten,
stale entries are not used, and concurrent writers lose nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgpack
import pytest

from derivations.lowering_cache import CACHE_FILE, SCHEMA, VERSION, LoweringCache
from store.local import LocalStore

EVALUATE = """
import json, sys
from store.local import LocalStore
from derivations.file_like import computed_file, file_union, local_file, mixed_text_file, plain_file, program_file
from derivations.gexp import gexp, with_imported_modules
from derivations.lowering import lower_object, lowering_stats
from derivations.monad import run_with_store

store = LocalStore(sys.argv[1], sys.argv[2])
count = int(sys.argv[3])
dep = computed_file("dep", gexp("os.mkdir($out)\\nos.mkdir(${output:lib})"))
files = [(f"f/{i}", plain_file(f"f{i}", f"content {i}\\n")) for i in range(count)]
files.append(("dep", dep))
files.append(("local", local_file(sys.argv[4])))
files.append(("mixed", mixed_text_file("mixed", "lib=", dep)))
files.append(("prog", program_file("prog", with_imported_modules(["store.base32"], gexp("print(1)")))))
top = file_union("config", files)
result = run_with_store(store, lower_object(top), system="x86_64-linux")
stats = lowering_stats(store)
print(json.dumps({"path": result.path, "hits": stats.hits, "misses": stats.misses,
                  "stale": stats.stale, "damaged": stats.damaged}))
"""


def evaluate(
    tmp_path: Path, store: str = "store", state: str = "state", count: int = 20
) -> dict[str, Any]:
    """Evaluate the configuration in a new process; return its report."""
    local = tmp_path / "local.txt"
    if not local.exists():
        local.write_text("a local file\n")
    output = subprocess.run(
        [
            sys.executable,
            "-c",
            EVALUATE,
            str(tmp_path / store),
            str(tmp_path / state),
            str(count),
            str(local),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    report: dict[str, Any] = json.loads(output)
    return report


def cache_file(tmp_path: Path, state: str = "state") -> Path:
    return tmp_path / state / Path(*CACHE_FILE)


def test_second_evaluation_lowers_nothing(tmp_path: Path) -> None:
    first = evaluate(tmp_path)
    assert first["hits"] == 0
    assert first["misses"] >= 25  # the union, 20 files, dep, local, mixed, program...
    assert cache_file(tmp_path).is_file()

    second = evaluate(tmp_path)
    assert second["path"] == first["path"]
    assert second["misses"] == 0
    assert second["hits"] == 1


def test_a_change_lowers_only_what_changed(tmp_path: Path) -> None:
    first = evaluate(tmp_path, count=20)
    changed = evaluate(tmp_path, count=21)
    assert changed["path"] != first["path"]
    # The union and the new file are lowered; the other files come from the cache.
    assert changed["misses"] == 2
    assert changed["hits"] == first["misses"] - 1


@pytest.mark.parametrize(
    "damage",
    [
        b"\xc1 not msgpack at all",
        msgpack.packb({"schema": "something-else", "version": VERSION}),
        msgpack.packb({"schema": SCHEMA, "version": VERSION + 1, "entries": {}}),
        msgpack.packb(
            {"schema": SCHEMA, "version": VERSION, "store_dir": "x", "entries": []}
        ),
        b"",
    ],
    ids=["garbage", "wrong-schema", "wrong-version", "wrong-store-and-shape", "empty"],
)
def test_damaged_cache_is_ignored_and_rewritten(tmp_path: Path, damage: bytes) -> None:
    first = evaluate(tmp_path)
    cache_file(tmp_path).write_bytes(damage)

    again = evaluate(tmp_path)
    assert again["path"] == first["path"]
    assert again["damaged"] is True
    assert again["hits"] == 0

    top = msgpack.unpackb(cache_file(tmp_path).read_bytes(), strict_map_key=False)
    assert top["schema"] == SCHEMA and len(top["entries"]) == first["misses"]
    assert evaluate(tmp_path)["hits"] == 1


def test_malformed_entry_poisons_the_whole_file(tmp_path: Path) -> None:
    first = evaluate(tmp_path)
    top = msgpack.unpackb(cache_file(tmp_path).read_bytes(), strict_map_key=False)
    key = next(iter(top["entries"]))
    top["entries"][key] = ["drv", "/not/in/the/store"]
    cache_file(tmp_path).write_bytes(msgpack.packb(top, use_bin_type=True))

    again = evaluate(tmp_path)
    assert again["damaged"] is True and again["path"] == first["path"]


def test_entries_for_another_store_are_stale(tmp_path: Path) -> None:
    first = evaluate(tmp_path, store="store", state="state")
    (tmp_path / "fresh" / "cache").mkdir(parents=True)
    shutil.copy(cache_file(tmp_path), cache_file(tmp_path, "fresh"))

    # Same store directory, fresh database: nothing the file names is valid.
    shutil.rmtree(tmp_path / "store")
    fresh = evaluate(tmp_path, store="store", state="fresh")
    assert fresh["path"] == first["path"]
    assert fresh["hits"] == 0
    assert fresh["stale"] >= 1
    assert fresh["misses"] == first["misses"]


def test_invalidated_item_is_not_used(tmp_path: Path) -> None:
    first = evaluate(tmp_path)
    store = LocalStore(str(tmp_path / "store"), str(tmp_path / "state"))
    # Forget the top derivation as garbage collection would: no referrers.
    with store.db.transaction() as connection:
        connection.execute("DELETE FROM ValidPaths WHERE path = ?", (first["path"],))
    store.close()

    again = evaluate(tmp_path)
    assert again["path"] == first["path"]
    assert again["stale"] == 1
    assert again["misses"] == 1  # only the union; its inputs come from the cache


def test_concurrent_writers_lose_no_entries(tmp_path: Path) -> None:
    script = """
import sys
from store.local import LocalStore
from derivations.lowering_cache import LoweringCache
store = LocalStore(sys.argv[1], sys.argv[2])
writer = int(sys.argv[3])
cache = LoweringCache(store)
for index in range(30):
    path = str(store.add_text(f"w{writer}-{index}", "x"))
    cache.record(bytes([writer, index]) * 16, "path", path)
    cache.save()
"""
    LocalStore(str(tmp_path / "store"), str(tmp_path / "state")).close()
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                script,
                str(tmp_path / "store"),
                str(tmp_path / "state"),
                str(writer),
            ]
        )
        for writer in range(4)
    ]
    assert all(process.wait() == 0 for process in processes)
    top = msgpack.unpackb(cache_file(tmp_path).read_bytes(), strict_map_key=False)
    assert len(top["entries"]) == 4 * 30

    store = LocalStore(str(tmp_path / "store"), str(tmp_path / "state"))
    cache = LoweringCache(store)
    assert cache.lookup(bytes([3, 29]) * 16) == (
        "path",
        str(store.parse_path(top["entries"][bytes([3, 29]) * 16][1])),
    )
    assert not any(
        name.startswith(".lowering-")
        for name in os.listdir(cache_file(tmp_path).parent)
    )
