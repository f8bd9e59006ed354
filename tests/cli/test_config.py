"""Tests of where the store lives: options, environment and defaults."""

from __future__ import annotations

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
