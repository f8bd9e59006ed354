"""``pyguix store optimise``: identical files of valid items become hard links
of one file in ``STORE/.links``; items keep their NAR; the collector drops
links no item uses."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from store.canonical import remove_tree
from store.local import LocalStore
from store.optimise import LINKS_DIR, optimise_store
from store.verify import verify_store


def tree(root: Path, files: dict[str, bytes], executable: tuple[str, ...] = ()) -> Path:
    """Write ``files`` under ``root``; mark ``executable`` ones so."""
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if name in executable:
            path.chmod(0o755)
    return root


def inode(path: str) -> int:
    return os.lstat(path).st_ino


def test_identical_files_share_one_inode_and_items_keep_their_nar(
    store: LocalStore, tmp_path: Path
) -> None:
    big = os.urandom(100_000)
    first = store.add_path(str(tree(tmp_path / "first", {"a": big, "same": b"x\n"})))
    second = store.add_path(
        str(tree(tmp_path / "second", {"sub/b": big, "tool": b"x\n"}, ("tool",)))
    )
    hashes = {p: store.query_path_info(str(p)).nar_hash for p in (first, second)}

    result = optimise_store(store)

    # The big file is stored once; the executable copy of "x" stays apart.
    assert (result.files_linked, result.bytes_freed) == (1, len(big))
    assert inode(f"{first}/a") == inode(f"{second}/sub/b")
    assert inode(f"{first}/same") != inode(f"{second}/tool")
    assert verify_store(store, check_contents=True).problems == []
    for path, nar_hash in hashes.items():
        from store import nar

        assert nar.hash_path(str(path))[0] == nar_hash

    # Directories are read-only again, and a second run finds nothing to do.
    assert not stat.S_IMODE(os.lstat(f"{second}/sub").st_mode) & 0o222
    assert optimise_store(store).files_linked == 0


def test_a_single_file_item_is_linked_too(store: LocalStore, tmp_path: Path) -> None:
    text = store.add_text("notes", "the same words\n")
    tree_item = store.add_path(
        str(tree(tmp_path / "docs", {"notes": b"the same words\n"}))
    )

    assert optimise_store(store).files_linked == 1
    assert inode(str(text)) == inode(f"{tree_item}/notes")
    assert verify_store(store, check_contents=True).problems == []


def test_the_collector_keeps_used_links_and_frees_the_rest(tmp_path: Path) -> None:
    data = os.urandom(50_000)
    pyguix = _command(tmp_path)
    kept = pyguix("store", "add", str(tree(tmp_path / "kept", {"f": data}))).strip()
    pyguix("store", "add", str(tree(tmp_path / "dropped", {"g": data})))
    pyguix("store", "add", str(tree(tmp_path / "lonely", {"h": b"only here\n"})))
    pyguix("gc", "--add-root", str(tmp_path / "root"), kept)
    pyguix("store", "optimise")
    links = tmp_path / "store" / LINKS_DIR
    assert len(os.listdir(links)) == 2

    # The shared data stays, used by the kept item; the lonely file's link
    # goes, and with it the only bytes freed.
    deleted = pyguix("gc").split()
    assert sorted(Path(path).name.split("-", 1)[1] for path in deleted) == [
        "dropped",
        "lonely",
    ]
    assert len(os.listdir(links)) == 1
    assert Path(kept, "f").read_bytes() == data
    assert pyguix("store", "verify", "--check-contents") == ""


def _command(tmp_path: Path) -> Callable[..., str]:
    """Return a function running ``pyguix ARGS`` on a store under ``tmp_path``."""
    where = [
        "--store-dir",
        str(tmp_path / "store"),
        "--state-dir",
        str(tmp_path / "state"),
    ]

    def pyguix(*args: str) -> str:
        command = [sys.executable, "-m", "pyguix", *where, *args]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        return done.stdout

    return pyguix


def test_the_command_reports_what_it_saved(tmp_path: Path) -> None:
    source = tree(tmp_path / "src", {"one": b"dup" * 1000, "two": b"dup" * 1000})
    pyguix = _command(tmp_path)

    pyguix("store", "add", str(source))
    assert pyguix("store", "optimise") == "1 files linked, 0.00 MiB freed\n"
    assert pyguix("store", "optimise") == "0 files linked, 0.00 MiB freed\n"


def test_deep_item_is_optimised(tmp_path: Path) -> None:
    deepest = str(tmp_path / "deep")
    os.mkdir(deepest)
    for _ in range(1100):
        deepest += "/d"
        os.mkdir(deepest)
    Path(deepest, "leaf").write_bytes(b"shared\n")
    store = LocalStore(str(tmp_path / "store"), str(tmp_path / "state"), fsync=True)
    deep = store.add_path(str(tmp_path / "deep"))
    store.add_path(str(tree(tmp_path / "flat", {"leaf": b"shared\n"})))
    try:
        assert optimise_store(store).files_linked == 1
        assert verify_store(store, check_contents=True).problems == []
    finally:
        remove_tree(store.physical(deep))
        remove_tree(str(tmp_path / "deep"))
        store.close()
