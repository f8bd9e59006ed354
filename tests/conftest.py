"""Shared fixtures: stores in ``tmp_path`` and small trees to add to them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from store.local import LocalStore


def make_tree(path: Path) -> Path:
    """Create a small tree: a file, an executable, a symlink, an empty dir."""
    (path / "bin").mkdir(parents=True)
    (path / "empty").mkdir()
    (path / "README").write_text("a small tree\n")
    script = path / "bin" / "hello"
    script.write_text("#!/bin/sh\necho hello\n")
    script.chmod(0o755)
    os.symlink("bin/hello", path / "link")
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A small tree under ``tmp_path/src/tree``."""
    return make_tree(tmp_path / "src" / "tree")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LocalStore]:
    """A store whose store and state directories are under ``tmp_path``."""
    local = LocalStore(str(tmp_path / "store"), str(tmp_path / "state"))
    yield local
    local.close()


@pytest.fixture
def nix_store(tmp_path: Path) -> Iterator[LocalStore]:
    """A chroot store named ``/nix/store``, physically under ``tmp_path/root``."""
    local = LocalStore("/nix/store", "/nix/var/nix", root=str(tmp_path / "root"))
    yield local
    local.close()


@pytest.fixture
def clean_tmp_path(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path``, emptied at the end by an iterative walk: pytest removes
    old temporary directories recursively and fails on deep trees."""
    from store.canonical import remove_tree

    yield tmp_path
    for entry in tmp_path.iterdir():
        remove_tree(str(entry))
