"""Tests of the activation helpers, on directories under ``tmp_path``."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from system import activation
from system.accounts import (
    ROOT_ACCOUNT,
    UserAccount,
    UserGroup,
    allocate_accounts,
    group_text,
    passwd_text,
    shadow_text,
)


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


GROUPS = (
    UserGroup("root", 0),
    UserGroup("users", 100),
    UserGroup("wheel", system=True),
    UserGroup("staff"),
)


def activate(
    tmp_path: Path, users: list[UserAccount], today: int = 20000
) -> dict[str, str]:
    """Activate ``users`` over ``tmp_path/etc`` as the accounts snippet
    does, from the declarations; return the files' lines by user name."""
    users = [
        replace(
            user, home_directory=user.home_directory or f"{tmp_path}/home/{user.name}"
        )
        for user in users
    ]
    accounts = allocate_accounts([ROOT_ACCOUNT, *users], GROUPS)
    gids = {group.name: group.id for group in accounts.groups}
    homes = [
        (user.home, user.uid or 0, gids[user.group] or 0)
        for user in accounts.users[1:]
        if user.create_home_directory
    ]
    root = tmp_path / "etc"
    activation.activate_accounts(
        passwd_text(accounts, declaration=True),
        group_text(accounts, declaration=True),
        shadow_text(accounts),
        homes,
        str(root),
        today=today,
    )
    files = {}
    for name in ("passwd", "group", "shadow"):
        for line in (root / name).read_text().splitlines():
            files[f"{name}:{line.split(':')[0]}"] = line
    return files


def test_first_activation_gives_what_describing_gives(tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    users = [
        UserAccount("alice", supplementary_groups=("wheel",), home_directory=home),
        UserAccount("bob", "staff", 1042, password="$6$bob", home_directory=home),
        UserAccount("daemon", system=True, group="wheel", home_directory=home),
    ]
    activate(tmp_path, users, today=20123)
    accounts = allocate_accounts([ROOT_ACCOUNT, *users], GROUPS)
    root = tmp_path / "etc"
    assert (root / "passwd").read_text() == passwd_text(accounts)
    assert (root / "group").read_text() == group_text(accounts)
    assert (root / "shadow").read_text().splitlines()[2] == (
        "bob:$6$bob:20123:0:99999:7:::"
    )
    assert sorted(os.listdir(root)) == ["group", "passwd", "shadow"]


def test_second_activation_keeps_state(tmp_path: Path) -> None:
    first = activate(
        tmp_path,
        [
            UserAccount("alice", supplementary_groups=("wheel",), password="$6$a"),
            UserAccount("carol"),
            UserAccount("bob", uid=1042),
        ],
        today=20000,
    )
    assert first["passwd:alice"].startswith("alice:x:1000:100:")
    assert first["passwd:carol"].startswith("carol:x:1001:100:")
    assert first["shadow:alice"] == "alice:$6$a:20000:0:99999:7:::"
    staff = first["group:staff"].split(":")[2]

    # The user changes her password and comment; an administrator the
    # group's password.
    shadow = tmp_path / "etc" / "shadow"
    shadow.write_text(
        shadow.read_text().replace("alice:$6$a:20000:", "alice:$6$changed:20050:")
    )
    passwd = tmp_path / "etc" / "passwd"
    passwd.write_text(
        passwd.read_text().replace("alice:x:1000:100::", "alice:x:1000:100:Al:")
    )
    group = tmp_path / "etc" / "group"
    group.write_text(group.read_text().replace("staff:x:", "staff:$g:"))
    shadow.chmod(0o600)

    second = activate(
        tmp_path,
        [
            UserAccount("dave"),
            UserAccount("alice", supplementary_groups=("wheel",), password="$6$new"),
            UserAccount("bob", uid=1500),
            UserAccount("erin", system=True),
        ],
        today=20100,
    )
    assert second["passwd:alice"].startswith("alice:x:1000:100:Al:/")
    assert second["shadow:alice"] == "alice:$6$changed:20050:0:99999:7:::"
    assert second["passwd:bob"].startswith("bob:x:1500:100:")
    # The next free id after the highest in use (bob's old 1042), not
    # carol's freed 1001: Guix does not hand a dropped id over at once.
    assert second["passwd:dave"].startswith("dave:x:1043:100:")
    assert second["shadow:dave"] == "dave:!:20100:0:99999:7:::"
    assert second["passwd:erin"].startswith("erin:x:999:")
    assert "passwd:carol" not in second and "shadow:carol" not in second
    assert second["group:staff"] == f"staff:$g:{staff}:"
    assert second["group:wheel"] == "wheel:x:999:alice"
    assert shadow.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "etc" / "passwd").stat().st_mode & 0o777 == 0o644
    if os.geteuid() == 0:
        assert (tmp_path / "home" / "dave").stat().st_uid == 1043


def test_existing_id_requested_by_another_is_not_shared(tmp_path: Path) -> None:
    activate(tmp_path, [UserAccount("alice")])
    second = activate(tmp_path, [UserAccount("bob", uid=1000), UserAccount("alice")])
    assert second["passwd:bob"].startswith("bob:x:1000:")
    assert second["passwd:alice"].startswith("alice:x:1001:")


def test_home_owned_by_activated_uid(tmp_path: Path) -> None:
    activate(tmp_path, [UserAccount("alice", create_home_directory=False)])
    assert not (tmp_path / "home" / "alice").exists()
    activate(tmp_path, [UserAccount("zed"), UserAccount("alice")])
    home = tmp_path / "home" / "alice"
    assert home.stat().st_mode & 0o777 == 0o700
    if os.geteuid() == 0:
        # Described alone, alice would get 1001; activation keeps her 1000.
        assert home.stat().st_uid == 1000


def test_files_replaced_atomically(tmp_path: Path) -> None:
    root = tmp_path / "etc"
    root.mkdir()
    (root / "shadow").write_text("root:$6$r:19000:0:99999:7:::\n")
    (root / "shadow").chmod(0o600)
    os.link(root / "shadow", tmp_path / "old-shadow")
    (root / "shadow.new").write_text("stale\n")
    (root / "shadow.new").chmod(0o644)

    files = activate(tmp_path, [])

    assert files["shadow:root"] == "root:$6$r:19000:0:99999:7:::"
    assert not (root / "shadow").samefile(tmp_path / "old-shadow")
    assert (root / "shadow").stat().st_mode & 0o777 == 0o600
    assert not (root / "shadow.new").exists()


def test_malformed_declaration(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="user 'a' has id 'x'"):
        activation.activate_accounts("a:x:x:0::/:/bin/sh\n", "", "", [], str(tmp_path))
    with pytest.raises(ValueError, match="group 'nope', which is not declared"):
        activation.activate_accounts(
            "a:x:1:nope::/:/bin/sh\n", "", "", [], str(tmp_path)
        )


def test_allocate_ids() -> None:
    current = [("old", 1200), ("svc", 500), ("gone", 1300)]
    requests = [
        ("new", None, False),
        ("svc", None, True),
        ("sys", None, True),
        ("old", None, False),
        ("fixed", 1301, False),
        ("after", None, False),
    ]
    assert activation.allocate_ids(requests, current) == [
        1301 + 1,
        500,
        499,
        1200,
        1301,
        1302 + 1,
    ]
    assert activation.allocate_ids([("a", None, False)], [("z", 59999)]) == [1000]
    with pytest.raises(activation.NoFreeIdError):
        activation.allocate_ids(
            [("x", None, True)], [(str(n), n) for n in range(100, 1000)]
        )


def test_numeric_declaration_keeps_passwords(tmp_path: Path) -> None:
    # Every id a number, as when the system description allocated them all:
    # the ids are taken as fixed, the shadow entries are still kept.
    accounts = allocate_accounts([ROOT_ACCOUNT, UserAccount("alice")], GROUPS)
    texts = (passwd_text(accounts), group_text(accounts), shadow_text(accounts))
    root = tmp_path / "etc"
    activation.activate_accounts(*texts, [], str(root), today=1)
    shadow = root / "shadow"
    shadow.write_text(shadow.read_text().replace("alice:!:1:", "alice:$6$s:2:"))

    activation.activate_accounts(*texts, [], str(root), today=3)

    assert shadow.read_text().splitlines() == [
        "root:!:1:0:99999:7:::",
        "alice:$6$s:2:0:99999:7:::",
    ]
    assert (root / "passwd").read_text() == passwd_text(accounts)
