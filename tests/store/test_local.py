"""The local store: adding items (recursive, flat, text), chroot stores,
canonical metadata and queries, checked against paths Nix 2.8 computes."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from store import nar
from store.errors import InvalidPathError, StoreError
from store.local import LocalStore

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
