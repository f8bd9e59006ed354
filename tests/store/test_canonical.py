"""Canonical metadata of store items and removal of read-only trees."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from store.canonical import (
    CANONICAL_MTIME,
    UnsupportedFileError,
    canonicalise,
    remove_tree,
    walk_up,
)
from store.ingest import fsync_tree


def test_only_the_owner_exec_bit_survives(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir(mode=0o700)
    for name, mode in [("a", 0o4755), ("b", 0o600), ("c", 0o100), ("e", 0o654)]:
        (tmp_path / "d" / name).write_text(name)
        os.chmod(tmp_path / "d" / name, mode)
    canonicalise(str(tmp_path / "d"))
    modes = {n: stat.S_IMODE(os.lstat(tmp_path / "d" / n).st_mode) for n in "abce"}
    assert modes == {"a": 0o555, "b": 0o444, "c": 0o555, "e": 0o444}
    assert stat.S_IMODE(os.lstat(tmp_path / "d").st_mode) == 0o555
    assert os.lstat(tmp_path / "d").st_mtime == 1


def test_symlink_mtime_is_set_without_following(tmp_path: Path) -> None:
    (tmp_path / "target").write_text("x")
    os.symlink("target", tmp_path / "link")
    canonicalise(str(tmp_path / "link"))
    assert os.lstat(tmp_path / "link").st_mtime == 1
    assert os.lstat(tmp_path / "target").st_mtime != 1


def test_fifo_is_refused(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    os.mkfifo(tmp_path / "d" / "fifo")
    with pytest.raises(UnsupportedFileError, match="unsupported file type"):
        canonicalise(str(tmp_path / "d"))


def test_remove_tree_removes_read_only_trees(tmp_path: Path) -> None:
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "d" / "e" / "f").write_bytes(b"x" * 1000)
    canonicalise(str(tmp_path / "d"))
    assert remove_tree(str(tmp_path / "d")) == 1000
    assert not (tmp_path / "d").exists()
    assert remove_tree(str(tmp_path / "d")) == 0


def test_trees_deeper_than_the_recursion_limit(tmp_path: Path) -> None:
    top = deepest = str(tmp_path / "top")
    os.mkdir(top)
    for _ in range(1100):
        deepest += "/d"
        os.mkdir(deepest)
    Path(deepest, "leaf").write_text("deep\n")

    try:
        canonicalise(top)
        assert stat.S_IMODE(os.lstat(deepest).st_mode) == 0o555
        assert os.lstat(deepest).st_mtime == CANONICAL_MTIME
        assert os.lstat(top).st_mtime == CANONICAL_MTIME
        fsync_tree(top)
        assert [name for name, _ in walk_up(deepest)] == [deepest + "/leaf", deepest]
    finally:
        assert remove_tree(top) == len("deep\n")
    assert not os.path.lexists(top)
