"""``pyguix log``: the log of a derivation, or of an output through its
deriver, from a real local store; errors for missing logs and unknown paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from builders.logs import open_build_log
from pyguix import cli
from store.local import LocalStore, PathInfo
from store.nar import hash_path
from store.paths import make_text_path

STORE_DIR = "/pyguix/store"
STATE_DIR = "/var/pyguix"


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(STORE_DIR, STATE_DIR, root=str(tmp_path))


@pytest.fixture(autouse=True)
def log_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """Map ``log`` in the command table until pyguix/cli.py does."""
    monkeypatch.setitem(
        cli.COMMANDS, "log", ("pyguix.commands.log", "Print the build log.")
    )


def run(
    tmp_path: Path, capfdbinary: pytest.CaptureFixture[bytes], *args: str
) -> tuple[int, bytes, str]:
    options = [
        "--store-dir",
        STORE_DIR,
        "--state-dir",
        STATE_DIR,
        "--root",
        str(tmp_path),
    ]
    with pytest.raises(SystemExit) as exited:
        cli.main([*options, "log", *args])
    out, err = capfdbinary.readouterr()
    return int(exited.value.code or 0), out, err.decode()


def built(store: LocalStore, tmp_path: Path) -> tuple[str, str]:
    """Add a .drv and register an output it built; return both paths."""
    drv = str(store.add_text("hello.drv", "Derive([])"))
    out = str(make_text_path("hello", b"\0" * 32, frozenset(), STORE_DIR))
    os.makedirs(store.physical(out))
    Path(store.physical(out), "greeting").write_text("hello\n")
    nar_hash, nar_size = hash_path(store.physical(out))
    store.register_valid_paths([PathInfo(out, nar_hash, nar_size, frozenset(), drv)])
    return drv, out


def test_log_of_derivation_and_of_its_output(
    store: LocalStore, tmp_path: Path, capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    drv, out = built(store, tmp_path)
    with open_build_log(store.physical(STATE_DIR), drv) as log:
        log.write(b"building hello\n\xff binary too\n")

    assert run(tmp_path, capfdbinary, drv) == (
        0,
        b"building hello\n\xff binary too\n",
        "",
    )
    assert run(tmp_path, capfdbinary, out)[:2] == (
        0,
        b"building hello\n\xff binary too\n",
    )


def test_missing_log_names_derivation_and_hints_rebuild(
    store: LocalStore, tmp_path: Path, capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    drv, out = built(store, tmp_path)

    status, stdout, stderr = run(tmp_path, capfdbinary, out)

    assert status == 1 and stdout == b""
    assert (
        f"error: no build log is stored for '{drv}' (the deriver of '{out}')" in stderr
    )
    assert "hint: build it again to regenerate its log" in stderr


def test_output_without_deriver_is_an_error(
    store: LocalStore, tmp_path: Path, capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    source = str(store.add_text("plain", "no deriver"))
    missing = source.replace("plain", "other")

    status, _, stderr = run(tmp_path, capfdbinary, source)
    assert status == 1 and f"'{source}' has no known deriver" in stderr

    status, _, stderr = run(tmp_path, capfdbinary, missing)
    assert status == 1 and f"'{missing}' is not valid" in stderr


def test_path_outside_the_store_is_an_error(
    store: LocalStore, tmp_path: Path, capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    status, _, stderr = run(tmp_path, capfdbinary, "/tmp/not-a-store-path")

    assert status == 1 and "'/tmp/not-a-store-path' is not a valid store path" in stderr
