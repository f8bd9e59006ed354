"""Garbage collection: roots (permanent, indirect, temporary), dry runs,
deleting specific paths, and the order of deletion."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from store.errors import StoreError
from store.gc import GCError, collect_garbage, find_roots
from store.local import LocalStore

TEMP_ROOT_HOLDER = """
import sys, time
from store.local import LocalStore
store = LocalStore(sys.argv[1], sys.argv[2])
store.add_temp_root(sys.argv[3])
print("rooted", flush=True)
time.sleep(60)
"""


def closure(store: LocalStore) -> tuple[str, str, str]:
    """Add a -> b -> c (a refers to b, b to c); return (a, b, c)."""
    c = str(store.add_text("c", "leaf"))
    b = str(store.add_text("b", f"needs {c}", [c]))
    a = str(store.add_text("a", f"needs {b}", [b]))
    return a, b, c


def fresh(store: LocalStore) -> LocalStore:
    """Drop the temporary roots this process took while adding."""
    store.clear_temp_roots()
    return store


def test_unrooted_items_are_deleted_with_freed_size(
    store: LocalStore, tree: Path
) -> None:
    a, b, c = closure(fresh(store))
    src = str(store.add_path(str(tree)))
    fresh(store)
    result = collect_garbage(store)
    assert set(result.deleted) == {a, b, c, src}
    assert result.deleted.index(a) < result.deleted.index(b) < result.deleted.index(c)
    assert result.bytes_freed > 0
    assert "4 store paths deleted" in result.summary()
    assert store.query_valid([a, b, c, src]) == set()
    assert not any(os.path.lexists(store.physical(p)) for p in (a, b, c, src))


def test_indirect_root_keeps_closure(store: LocalStore, tmp_path: Path) -> None:
    a, b, c = closure(store)
    other = str(store.add_text("other", "x"))
    fresh(store)
    link = str(tmp_path / "result")
    store.add_permanent_root(link, b)
    assert os.readlink(link) == b
    roots = find_roots(store)
    assert roots[b] == {link}

    dry = collect_garbage(store, dry_run=True)
    assert set(dry.deleted) == {a, other}
    assert store.is_valid(a)

    assert set(collect_garbage(store).deleted) == {a, other}
    assert store.query_valid([a, b, c]) == {b, c}

    # Removing the user's link makes the auto root stale; GC drops it.
    os.unlink(link)
    assert set(collect_garbage(store).deleted) == {b, c}
    assert os.listdir(store.state_file("gcroots", "auto")) == []


def test_direct_symlink_in_gcroots(store: LocalStore) -> None:
    a, b, c = closure(fresh(store))
    fresh(store)
    os.symlink(a + "/sub/file", store.state_file("gcroots", "mine"))
    assert collect_garbage(store).deleted == []


def test_delete_refuses_live_items_naming_the_root(
    store: LocalStore, tmp_path: Path
) -> None:
    a, b, c = closure(store)
    fresh(store)
    store.add_permanent_root(str(tmp_path / "keep"), a)
    with pytest.raises(GCError, match="kept by the root") as error:
        collect_garbage(store, delete=[c])
    assert str(tmp_path / "keep") in error.value.message
    assert store.is_valid(c)


def test_delete_refuses_referenced_items_and_deletes_dead_ones(
    store: LocalStore,
) -> None:
    a, b, c = closure(fresh(store))
    fresh(store)
    with pytest.raises(GCError, match=f"still referenced by '{b}'"):
        collect_garbage(store, delete=[c])
    result = collect_garbage(store, delete=[a, b])
    assert result.deleted == [a, b]
    assert store.query_valid([a, b, c]) == {c}


def test_temporary_roots_of_live_processes(store: LocalStore) -> None:
    a, b, c = closure(fresh(store))
    fresh(store)
    child = subprocess.Popen(
        [sys.executable, "-c", TEMP_ROOT_HOLDER, store.store_dir, store.state_dir, b],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "rooted\n"
        assert collect_garbage(store).deleted == [a]
    finally:
        child.kill()
        child.wait()
    # The dead process's roots file is ignored and removed.
    assert set(collect_garbage(store).deleted) == {b, c}
    assert os.listdir(store.state_file("temproots")) in ([], [str(os.getpid())])


def test_own_temporary_roots_protect_added_items(store: LocalStore) -> None:
    a, b, c = closure(store)
    assert collect_garbage(store).deleted == []
    assert store.query_valid([a, b, c]) == {a, b, c}


def test_invalid_entries_are_collected(store: LocalStore) -> None:
    junk = f"{store.store_dir}/{'a' * 32}-junk"
    os.makedirs(store.physical(junk))
    assert collect_garbage(store, dry_run=True).deleted == [junk]
    assert collect_garbage(store).deleted == [junk]
    assert not os.path.exists(store.physical(junk))


def test_chroot_store_gc(nix_store: LocalStore, tmp_path: Path) -> None:
    a, b, c = closure(nix_store)
    fresh(nix_store)
    nix_store.add_permanent_root(str(tmp_path / "r"), b)
    assert collect_garbage(nix_store).deleted == [a]
    assert os.path.isfile(nix_store.physical(c))


def test_profiles_directory_holds_roots(store: LocalStore) -> None:
    a, b, c = closure(fresh(store))
    fresh(store)
    profiles = store.state_file("profiles")
    os.makedirs(profiles)
    os.symlink(b, os.path.join(profiles, "default-1-link"))
    os.symlink("default-1-link", os.path.join(profiles, "default"))
    assert collect_garbage(store).deleted == [a]


def test_state_directory_linked_into_the_store_is_never_collected(
    tmp_path: Path,
) -> None:
    # The configuration refuses overlapping names; a symlink still puts the
    # state directory physically in the store directory.
    (tmp_path / "store" / "var").mkdir(parents=True)
    os.symlink(tmp_path / "store" / "var", tmp_path / "state")
    with LocalStore(str(tmp_path / "store"), str(tmp_path / "state")) as store:
        dead = str(store.add_text("dead", "x"))
        result = collect_garbage(fresh(store))
        assert result.deleted == [dead]
        assert os.path.exists(tmp_path / "store" / "var" / "db" / "db.sqlite")
        assert store.db.all_valid() == set()
        with pytest.raises(StoreError, match="holds the state directory"):
            store.trash(str(tmp_path / "store" / "var"))
        assert os.path.isdir(tmp_path / "store" / "var" / "db")
