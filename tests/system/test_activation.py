"""Tests of the activation helpers, on directories under ``tmp_path``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from system import activation


def test_current_system_switched_atomically(tmp_path: Path) -> None:
    link = tmp_path / "run" / "current-system"
    activation.activate_current_system("/store/aaa-system", str(link))
    assert os.readlink(link) == "/store/aaa-system"
    activation.activate_current_system("/store/bbb-system", str(link))
    assert os.readlink(link) == "/store/bbb-system"
    assert not os.path.lexists(str(link) + ".new")


def test_new_system_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYGUIX_NEW_SYSTEM", "/store/ccc-system")
    assert activation.new_system() == "/store/ccc-system"
    monkeypatch.delenv("PYGUIX_NEW_SYSTEM")
    with pytest.raises(SystemExit, match="PYGUIX_NEW_SYSTEM is not set"):
        activation.new_system("/nowhere/boot")


def test_new_system_from_program_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PYGUIX_NEW_SYSTEM", raising=False)
    system = tmp_path / "system"
    system.mkdir()
    (system / "boot").write_text("")
    with pytest.raises(SystemExit):
        activation.new_system(str(system / "boot"))
    (system / "activate").write_text("")
    assert activation.new_system(str(system / "boot")) == str(system)


def test_snippets_failures_are_survived(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "ran"
    failed = activation.run_snippets(
        [
            ("broken", "raise RuntimeError('boom')"),
            (
                "writer",
                f"open({str(marker)!r}, 'w').write(os.path.basename(sys.executable))",
            ),
        ]
    )
    assert failed == 1
    assert marker.read_text()
    err = capsys.readouterr().err
    assert "activation of 'broken' failed: RuntimeError('boom')" in err
    assert "activating service 'writer'" in err


def make_etc(tmp_path: Path) -> Path:
    etc = tmp_path / "store" / "etc"
    etc.mkdir(parents=True)
    (etc / "hostname").write_text("box\n")
    (etc / "hosts").write_text("127.0.0.1 localhost box\n")
    return etc


def test_etc_links_entries_and_copies_hosts(tmp_path: Path) -> None:
    etc = make_etc(tmp_path)
    root = tmp_path / "etc"
    root.mkdir()
    (root / "hosts").write_text("old\n")
    os.symlink(str(root / "static" / "gone"), root / "gone")
    (root / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")

    activation.activate_etc(str(etc), ["hosts"], str(root))

    assert os.readlink(root / "static") == str(etc)
    assert os.readlink(root / "hostname") == str(root / "static" / "hostname")
    assert (root / "hostname").read_text() == "box\n"
    assert not (root / "hosts").is_symlink()
    assert (root / "hosts").read_text() == "127.0.0.1 localhost box\n"
    assert not os.path.lexists(root / "gone")
    assert (root / "passwd").read_text().startswith("root:")


def test_accounts_files_and_homes(tmp_path: Path) -> None:
    root = tmp_path / "etc"
    home = tmp_path / "home" / "alice"
    activation.activate_accounts(
        "alice:x:1000:100::/home/alice:/bin/sh\n",
        "users:x:100:\n",
        "alice:!:0:0:99999:7:::\n",
        [(str(home), 1000, 100)],
        str(root),
    )
    assert (root / "passwd").read_text().startswith("alice:x:1000")
    assert (root / "group").read_text() == "users:x:100:\n"
    assert (root / "shadow").stat().st_mode & 0o777 == 0o600
    info = home.stat()
    assert info.st_mode & 0o777 == 0o700
    if os.geteuid() == 0:
        assert (info.st_uid, info.st_gid) == (1000, 100)
