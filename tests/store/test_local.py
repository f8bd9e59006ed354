"""The local store: adding items (recursive, flat, text), chroot stores,
canonical metadata and queries, checked against paths Nix 2.8 computes."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from store import nar
from store.errors import InvalidPathError, StoreError
from store.local import LocalStore
from store.locks import LockBusyError, lock_file
from store.paths import make_text_path
from store.verify import verify_store

FIXTURES = Path(__file__).parents[2] / "fixtures" / "export"


def write_export_tree(path: Path) -> Path:
    """Recreate the tree that fixtures/export/generate.sh adds with Nix."""
    (path / "bin").mkdir(parents=True)
    (path / "empty").mkdir()
    (path / "README").write_text("hello from the export vector\n")
    (path / "bin" / "hi").write_text("#!/bin/sh\necho hi\n")
    (path / "bin" / "hi").chmod(0o755)
    os.symlink("bin/hi", path / "link")
    return path


def test_add_path_gives_nix_path_and_hash(
    nix_store: LocalStore, tmp_path: Path
) -> None:
    expected = json.loads((FIXTURES / "expected.json").read_text())
    source = write_export_tree(tmp_path / "export-src")
    path = nix_store.add_path(str(source))
    assert str(path) == expected["source"]
    info = nix_store.query_path_info(path)
    assert info is not None
    assert info.nar_hash.to_string() == expected["source_nar_hash"]
    assert info.nar_size == expected["source_nar_size"]
    assert info.ca == "fixed:r:" + expected["source_nar_hash"]


def test_add_text_gives_nix_path(nix_store: LocalStore, tmp_path: Path) -> None:
    expected = json.loads((FIXTURES / "expected.json").read_text())
    source = nix_store.add_path(str(write_export_tree(tmp_path / "export-src")))
    text = nix_store.add_text("export-text", f"uses {source}/bin/hi\n", [source])
    assert str(text) == expected["text"]
    assert nix_store.query_references(text) == set(expected["text_references"])
    assert nix_store.query_referrers(source) == {str(text)}
    assert nix_store.query_requisites([text]) == {str(text), str(source)}


def test_chroot_store_keeps_items_under_root(
    nix_store: LocalStore, tree: Path, tmp_path: Path
) -> None:
    path = nix_store.add_path(str(tree))
    assert str(path).startswith("/nix/store/")
    physical = nix_store.physical(path)
    assert physical == str(tmp_path / "root") + str(path)
    assert os.path.isdir(physical)
    assert (tmp_path / "root" / "nix" / "var" / "nix" / "db" / "db.sqlite").exists()


def test_items_are_canonical(store: LocalStore, tree: Path) -> None:
    physical = store.physical(store.add_path(str(tree)))
    for directory, dirs, files in os.walk(physical):
        for name in [*dirs, *files, "."]:
            info = os.lstat(os.path.join(directory, name))
            assert info.st_mtime == 1
            if stat.S_ISDIR(info.st_mode):
                assert stat.S_IMODE(info.st_mode) == 0o555
    assert stat.S_IMODE(os.lstat(f"{physical}/bin/hello").st_mode) == 0o555
    assert stat.S_IMODE(os.lstat(f"{physical}/README").st_mode) == 0o444
    assert os.readlink(f"{physical}/link") == "bin/hello"
    assert nar.dump_bytes(physical) == nar.dump_bytes(tree)


def test_flat_add_hashes_contents(nix_store: LocalStore, tree: Path) -> None:
    # nix-store --add-fixed sha256 of a file holding "a small tree\n".
    path = nix_store.add_path(str(tree / "README"), recursive=False)
    assert nix_store.is_valid(path)
    info = nix_store.query_path_info(path)
    assert (
        info is not None and info.ca is not None and info.ca.startswith("fixed:sha256:")
    )
    with pytest.raises(StoreError, match="not a regular file"):
        nix_store.add_path(str(tree), recursive=False)


def test_dry_run_writes_nothing(store: LocalStore, tree: Path) -> None:
    path = store.add_path(str(tree), dry_run=True)
    assert not store.is_valid(path)
    assert not os.path.lexists(store.physical(path))
    assert store.add_path(str(tree)) == path


def test_readding_a_valid_item_does_not_copy(store: LocalStore, tree: Path) -> None:
    path = store.add_path(str(tree))
    before = os.lstat(store.physical(path)).st_ino
    assert store.add_path(str(tree)) == path
    assert os.lstat(store.physical(path)).st_ino == before


def test_invalid_item_on_disk_is_replaced(store: LocalStore, tree: Path) -> None:
    path = store.add_path(str(tree), dry_run=True)
    os.makedirs(store.physical(path))
    Path(store.physical(path), "junk").write_text("junk")
    store.add_path(str(tree))
    assert sorted(os.listdir(store.physical(path))) == [
        "README",
        "bin",
        "empty",
        "link",
    ]


def test_text_with_invalid_reference_is_refused(store: LocalStore) -> None:
    missing = f"{store.store_dir}/{'a' * 32}-missing"
    with pytest.raises(StoreError, match="is not valid"):
        store.add_text("t", "x", [missing])


def test_parse_path_checks_the_store(store: LocalStore) -> None:
    with pytest.raises(InvalidPathError, match="not in the store"):
        store.parse_path("/elsewhere/" + "a" * 32 + "-x")


def test_query_valid_batch(store: LocalStore) -> None:
    paths = [str(store.add_text(f"t{i}", str(i))) for i in range(20)]
    absent = [f"{store.store_dir}/{'b' * 32}-absent"]
    assert store.query_valid(paths + absent) == set(paths)


def test_derivation_outputs_and_requisites_with_outputs(store: LocalStore) -> None:
    out = store.add_text("out", "built")
    drv = store.add_text("x.drv", "Derive(...)")
    store.register_derivation_outputs(str(drv), {"out": str(out)})
    assert store.query_derivation_outputs(str(drv)) == {"out": str(out)}
    assert store.query_requisites([drv]) == {str(drv)}
    assert store.query_requisites([drv], include_outputs=True) == {str(drv), str(out)}


def test_temporary_files_do_not_remain(store: LocalStore, tree: Path) -> None:
    store.add_path(str(tree))
    store.add_text("t", "x")
    names = os.listdir(store.real_store_dir)
    assert not [n for n in names if n.startswith(".") or n.endswith(".lock")]
    assert os.listdir(store.state_file("adding")) == []


def test_single_file_and_symlink_items(store: LocalStore, tree: Path) -> None:
    link = store.physical(store.add_path(str(tree / "link")))
    assert os.readlink(link) == "bin/hello"
    script = store.physical(store.add_path(str(tree / "bin" / "hello")))
    assert stat.S_IMODE(os.lstat(script).st_mode) == 0o555
    assert nar.dump_bytes(script) == nar.dump_bytes(tree / "bin" / "hello")


def test_bad_names_are_refused(store: LocalStore, tree: Path) -> None:
    with pytest.raises(InvalidPathError, match="character"):
        store.add_path(str(tree), name="has space")


# -- Texts, one at a time and in batches ---------------------------------------


def test_text_is_canonical_and_hashed_as_on_disk(store: LocalStore) -> None:
    path = store.add_text("hello.txt", "hello\n" * 100)
    physical = store.physical(path)
    info = os.lstat(physical)
    assert stat.S_IMODE(info.st_mode) == 0o444 and info.st_mtime == 1
    recorded = store.query_path_info(path)
    assert recorded is not None
    assert nar.hash_path(physical) == (recorded.nar_hash, recorded.nar_size)


def test_add_texts_gives_the_paths_of_add_text(
    store: LocalStore, tmp_path: Path
) -> None:
    single = LocalStore(store.store_dir, store.state_dir, root=str(tmp_path / "r2"))
    first = single.add_text("a", "alpha")
    second = single.add_text("b", f"needs {first}", [first])
    first_b, second_b = store.add_texts(
        [("a", "alpha", []), ("b", f"needs {first}".encode(), [str(first)])]
    )
    assert (first_b.base_name, second_b.base_name) == (
        first.base_name,
        second.base_name,
    )
    assert store.query_references(second_b) == {str(first_b)}
    info = store.query_path_info(second_b)
    assert info is not None and info.ca is not None and info.ca.startswith("text:")
    assert nar.hash_path(store.physical(second_b)) == (info.nar_hash, info.nar_size)


def test_add_texts_may_refer_to_earlier_items_only(store: LocalStore) -> None:
    first = store.add_text("x", "dry", [])
    items: list[tuple[str, str, list[str]]] = [("n0", "zero", [])]

    def path_of(name: str, text: str, refs: list[str]) -> str:
        digest = hashlib.sha256(text.encode()).digest()
        return str(make_text_path(name, digest, refs, store.store_dir))

    for index in range(1, 50):
        previous = path_of(*items[-1])
        items.append((f"n{index}", f"after {previous}", [previous, str(first)]))
    paths = store.add_texts(items)
    assert [str(p) for p in paths] == [path_of(*item) for item in items]
    assert store.query_requisites([paths[-1]]) == {str(p) for p in paths} | {str(first)}

    # A reference to a later item is refused before anything is written.
    late = path_of("late", "late", [])
    with pytest.raises(StoreError, match="is not valid"):
        store.add_texts([("early", "early", [late]), ("late", "late", [])])
    assert not os.path.lexists(store.physical(late))
    assert not store.is_valid(late)


def test_add_texts_with_a_missing_reference_adds_nothing(store: LocalStore) -> None:
    missing = f"{store.store_dir}/{'a' * 32}-missing"
    before = set(os.listdir(store.real_store_dir))
    with pytest.raises(StoreError, match="is not valid"):
        store.add_texts([("fine", "fine", []), ("bad", "bad", [missing])])
    assert set(os.listdir(store.real_store_dir)) == before
    assert store.db.all_valid() == set()


def test_add_texts_keeps_valid_items(store: LocalStore) -> None:
    kept = store.add_text("kept", "kept")
    inode = os.lstat(store.physical(kept)).st_ino
    paths = store.add_texts(
        [("kept", "kept", []), ("new", "new", []), ("new", "new", [])]
    )
    assert paths[0] == kept and paths[1] == paths[2]
    assert os.lstat(store.physical(kept)).st_ino == inode
    assert store.query_valid(paths) == {str(p) for p in paths}


def test_batch_is_valid_for_others_when_it_ends(
    store: LocalStore, tmp_path: Path
) -> None:
    other = LocalStore(str(tmp_path / "store"), str(tmp_path / "state"))
    with store.batch():
        inside = store.add_text("inside", "inside")
        nested = store.add_texts([("nested", "nested", [str(inside)])])[0]
        assert store.query_valid([inside, nested]) == {str(inside), str(nested)}
        assert os.path.isfile(store.physical(inside))
        assert other.query_valid([inside, nested]) == set()
    assert other.query_valid([inside, nested]) == {str(inside), str(nested)}
    assert other.query_references(nested) == {str(inside)}


def test_batch_registers_what_was_added_before_an_error(store: LocalStore) -> None:
    with pytest.raises(RuntimeError), store.batch():
        done = store.add_text("done", "done")
        with pytest.raises(StoreError):
            store.add_text("bad", "bad", [f"{store.store_dir}/{'b' * 32}-gone"])
        raise RuntimeError("the caller failed")
    assert store.is_valid(done)
    assert verify_store(store, check_contents=True).problems == []


def test_gc_lock_is_held_per_add_or_batch(store: LocalStore) -> None:
    gc_lock = store.state_file("gc.lock")
    store.add_text("one", "one")
    lock_file(gc_lock, wait=False).release()  # not held between adds
    with store.batch():
        store.add_text("two", "two")
        with pytest.raises(LockBusyError):
            lock_file(gc_lock, wait=False)
    lock_file(gc_lock, wait=False).release()


def test_text_replaces_a_junk_directory(store: LocalStore) -> None:
    path = store.add_texts([("junk", "contents", [])])[0]
    store.db.invalidate([str(path)])
    os.chmod(store.physical(path), 0o644)
    os.unlink(store.physical(path))
    os.makedirs(store.physical(path) + "/inside")
    assert store.add_text("junk", "contents") == path
    assert Path(store.physical(path)).read_text() == "contents"
    assert verify_store(store, check_contents=True).problems == []


def test_recovery_waits_for_adders_to_finish(store: LocalStore, tmp_path: Path) -> None:
    temp = os.path.join(store.real_store_dir, ".tmp-999999999-" + "c" * 32)
    Path(temp).write_text("left by a crash")
    roots = store.state_file("temproots", "999999999")
    Path(roots).write_bytes(f"{store.store_dir}/{'c' * 32}-x\0".encode())
    with store.batch():
        # The store is in use: opening it leaves recovery for later.
        LocalStore(str(tmp_path / "store"), str(tmp_path / "state")).close()
        assert os.path.exists(temp)
    assert store.recover() == [temp]
    assert not os.path.exists(roots)


def test_recovery_removes_what_a_killed_adder_listed(
    store: LocalStore, tmp_path: Path
) -> None:
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from store.local import LocalStore\n"
            "store = LocalStore(sys.argv[1], sys.argv[2])\n"
            "store.add_temp_roots([sys.argv[3]])\n"
            "print('rooted', flush=True)\n"
            "time.sleep(60)\n",
            store.store_dir,
            store.state_dir,
            f"{store.store_dir}/{'d' * 32}-half",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdout.readline() == "rooted\n"
    half = store.physical(f"{store.store_dir}/{'d' * 32}-half")
    temp = os.path.join(store.real_store_dir, f".tmp-{child.pid}-{'d' * 32}")
    Path(half).write_text("renamed, never registered")
    Path(temp).write_text("written, never renamed")
    assert store.recover() == []  # the adder is alive
    child.kill()
    child.wait()
    assert sorted(store.recover()) == sorted([temp, half])
    assert not os.path.exists(store.state_file("temproots", str(child.pid)))


def test_outputs_and_their_record_are_registered_together(
    store: LocalStore,
) -> None:
    from store.database import DatabaseError, PathInfo
    from store.hash import hash_bytes

    drv = str(store.add_text("x.drv", "Derive()"))
    output = f"{store.store_dir}/{'1' * 32}-x"
    os.makedirs(store.physical(store.store_dir), exist_ok=True)
    with open(store.physical(output), "wb") as file:
        file.write(b"built")
    info = PathInfo(output, hash_bytes("sha256", b"nar"), 3, frozenset(), drv)

    # A record for a derivation that is not valid fails the whole
    # registration: the output does not become valid without it.
    missing_drv = f"{store.store_dir}/{'2' * 32}-y.drv"
    with pytest.raises(DatabaseError):
        store.register_valid_paths([info], {missing_drv: {"out": output}})
    assert not store.is_valid(output)

    store.register_valid_paths([info], {drv: {"out": output}})
    assert store.is_valid(output)
    assert store.query_derivation_outputs(drv) == {"out": output}
