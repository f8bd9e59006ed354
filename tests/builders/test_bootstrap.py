"""The bootstrap interpreter's paths and their cache in a state directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.builds import python_derivation as pydrv

from builders import bootstrap
from builders.bootstrap import CACHE_FILE, interpreter_paths
from builders.build import build_derivation
from builders.linux import namespaces_unavailable_reason
from store.local import LocalStore

needs_namespaces = pytest.mark.skipif(
    namespaces_unavailable_reason() is not None,
    reason=f"no namespaces here: {namespaces_unavailable_reason()}",
)


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget the paths this process knows, so the next call finds them."""
    monkeypatch.setattr(bootstrap, "_found", None)


@pytest.fixture
def cache_file(tmp_path: Path) -> Path:
    return tmp_path.joinpath("state", *CACHE_FILE)


def without_ldd(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Make ``ldd`` impossible to run, so only the cache can answer."""
    empty = tmp_path / "no-programs"
    empty.mkdir(exist_ok=True)
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setattr(bootstrap, "_found", None)


def test_the_paths_are_written_then_read_back_without_ldd(
    fresh: None, cache_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    computed = interpreter_paths(str(cache_file))
    record = json.loads(cache_file.read_text())
    assert record["paths"] == computed
    assert record["identity"] == bootstrap.interpreter_identity()
    assert bootstrap.interpreter_executable() in record["inputs"]

    without_ldd(monkeypatch, tmp_path)
    assert interpreter_paths(str(cache_file)) == computed


def test_a_changed_input_makes_the_cache_stale(
    fresh: None, cache_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    computed = interpreter_paths(str(cache_file))
    record = json.loads(cache_file.read_text())
    first_input = sorted(record["inputs"])[0]
    record["inputs"][first_input][0] += 1
    record["paths"] = ["/not-the-interpreter"]
    cache_file.write_text(json.dumps(record))

    # Stale: ldd must run again, and cannot here.
    without_ldd(monkeypatch, tmp_path)
    with pytest.raises(FileNotFoundError):
        interpreter_paths(str(cache_file))

    monkeypatch.undo()
    monkeypatch.setattr(bootstrap, "_found", None)
    assert interpreter_paths(str(cache_file)) == computed
    assert json.loads(cache_file.read_text())["paths"] == computed


@pytest.mark.parametrize(
    "damage",
    [
        lambda record: "{not json",
        lambda record: json.dumps({**record, "identity": "/other/python cpython-3.0"}),
        lambda record: json.dumps({key: record[key] for key in ("paths", "identity")}),
        lambda record: json.dumps([record]),
    ],
    ids=["not-json", "other-interpreter", "no-inputs", "not-a-map"],
)
def test_a_damaged_or_foreign_cache_is_recomputed(
    fresh: None, cache_file: Path, damage: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    computed = interpreter_paths(str(cache_file))
    record = json.loads(cache_file.read_text())
    assert callable(damage)
    cache_file.write_text(damage(record))

    monkeypatch.setattr(bootstrap, "_found", None)
    assert interpreter_paths(str(cache_file)) == computed
    assert json.loads(cache_file.read_text())["paths"] == computed


def test_an_unwritable_cache_is_no_error(fresh: None, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    paths = interpreter_paths(str(blocker / "cache" / "interpreter-paths.json"))
    executable = bootstrap.interpreter_executable()
    assert any(executable == p or executable.startswith(p + "/") for p in paths)


@needs_namespaces
def test_a_build_keeps_the_paths_in_its_state_directory(
    fresh: None, tmp_path: Path
) -> None:
    store = LocalStore(str(tmp_path / "store"), str(tmp_path / "state"))
    drv = pydrv(store, "cached-paths", "open(out, 'w').write('ok')")
    build_derivation(store, drv)
    record = json.loads(Path(store.state_file(*CACHE_FILE)).read_text())
    assert record["paths"] == interpreter_paths()


def test_the_user_cache_follows_xdg_cache_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert bootstrap.user_cache_file() == str(tmp_path / "pyguix" / CACHE_FILE[-1])

    monkeypatch.setenv("XDG_CACHE_HOME", "")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    expected = tmp_path / "home" / ".cache" / "pyguix" / CACHE_FILE[-1]
    assert bootstrap.user_cache_file() == str(expected)

    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    assert bootstrap.user_cache_file() is None
