"""Tests of where the store lives: options, environment and defaults."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pyguix.config import DEFAULT_STATE_DIR, DEFAULT_STORE_DIR, resolve
from store.errors import PyguixError


def test_options_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYGUIX_STORE_DIR", "/env/store")
    monkeypatch.setenv("PYGUIX_STATE_DIR", "/env/state")
    monkeypatch.setenv("PYGUIX_ROOT", "/env/root")
    config = resolve("/opt/store", "/opt/state", "/opt/root")
    assert (config.store_dir, config.state_dir, config.root) == (
        "/opt/store",
        "/opt/state",
        "/opt/root",
    )


def test_environment_wins_over_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYGUIX_STORE_DIR", "/env/store/")
    monkeypatch.setenv("PYGUIX_STATE_DIR", "/env/state")
    monkeypatch.setenv("PYGUIX_ROOT", "/env/root")
    config = resolve()
    assert (config.store_dir, config.state_dir, config.root) == (
        "/env/store",
        "/env/state",
        "/env/root",
    )


def test_defaults_are_pyguix_own(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PYGUIX_STORE_DIR", "PYGUIX_STATE_DIR", "PYGUIX_ROOT"):
        monkeypatch.delenv(name, raising=False)
    config = resolve()
    assert config.store_dir == DEFAULT_STORE_DIR
    assert config.state_dir == DEFAULT_STATE_DIR
    assert config.store_dir not in ("/gnu/store", "/nix/store")


@pytest.mark.parametrize("which", ["store", "state"])
def test_relative_directories_are_refused(which: str) -> None:
    options = {"store_dir": "/s", "state_dir": "/t", "root": "/r"}
    options[f"{which}_dir"] = "relative/dir"
    with pytest.raises(PyguixError, match=f"{which} directory 'relative/dir'"):
        resolve(**options)


@pytest.mark.parametrize(
    ("store_dir", "state_dir", "message"),
    [
        ("/", "/var/pyguix", "the store directory cannot be '/'"),
        ("/s", "/s", "state directory '/s' is inside the store directory '/s'"),
        ("/s", "/s/state", "state directory '/s/state' is inside the store"),
        ("/s/", "/s/./var", "state directory '/s/var' is inside the store"),
        ("/t/store", "/t", "store directory '/t/store' is inside the state"),
    ],
    ids=["store-is-root", "same", "state-in-store", "unnormalised", "store-in-state"],
)
def test_overlapping_directories_are_refused(
    store_dir: str, state_dir: str, message: str
) -> None:
    with pytest.raises(PyguixError, match=message) as caught:
        resolve(store_dir, state_dir, "/r")
    assert caught.value.hint is not None and "apart" in caught.value.hint


def test_overlap_from_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYGUIX_STORE_DIR", "/env/store")
    monkeypatch.setenv("PYGUIX_STATE_DIR", "/env/store/var")
    with pytest.raises(PyguixError, match="inside the store directory"):
        resolve(root="/r")


def test_neighbours_with_a_common_prefix_are_accepted() -> None:
    config = resolve("/x/store", "/x/store-state", "/r")
    assert (config.store_dir, config.state_dir) == ("/x/store", "/x/store-state")


@pytest.mark.parametrize(
    "where",
    [
        ["--store-dir", "STORE", "--state-dir", "STORE/state"],
        ["--store-dir", "/", "--root", "STORE"],
    ],
    ids=["state-in-store", "store-is-root"],
)
def test_gc_with_overlapping_directories_touches_nothing(
    tmp_path: Path, where: list[str]
) -> None:
    store = tmp_path / "store"
    options = [arg.replace("STORE", str(store)) for arg in where]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYGUIX_")}
    result = subprocess.run(
        [sys.executable, "-m", "pyguix", *options, "gc"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert [line.split(":")[0] for line in lines] == ["error", "hint"], lines
    assert not store.exists()
