"""Tests of account allocation and the passwd, group and shadow files."""

from __future__ import annotations

import re

import pytest

from system.accounts import (
    BASE_GROUPS,
    ROOT_ACCOUNT,
    AccountError,
    UserAccount,
    UserGroup,
    allocate_accounts,
    group_text,
    passwd_text,
    shadow_text,
)


def test_passwd_group_shadow_text() -> None:
    users = [
        ROOT_ACCOUNT,
        UserAccount("alice", comment="Alice", supplementary_groups=("wheel", "audio")),
        UserAccount("bob", uid=1000, shell="/bin/bash"),
        UserAccount(
            "daemon", group="nogroup", system=True, home_directory="/var/empty"
        ),
    ]
    groups = [
        UserGroup("root", 0),
        UserGroup("users", 100),
        UserGroup("wheel", system=True),
        UserGroup("audio", system=True),
        UserGroup("nogroup", 65534, system=True),
    ]
    accounts = allocate_accounts(users, groups)
    assert passwd_text(accounts) == (
        "root:x:0:0:System administrator:/root:/bin/sh\n"
        "alice:x:1001:100:Alice:/home/alice:/bin/sh\n"
        "bob:x:1000:100::/home/bob:/bin/bash\n"
        "daemon:x:999:65534::/var/empty:/bin/sh\n"
    )
    assert group_text(accounts) == (
        "root:x:0:\nusers:x:100:\nwheel:x:999:alice\naudio:x:998:alice\nnogroup:x:65534:\n"
    )
    assert shadow_text(accounts).splitlines()[1] == "alice:!::0:99999:7:::"


def test_declaration_leaves_allocated_ids_to_activation() -> None:
    users = [
        ROOT_ACCOUNT,
        UserAccount("alice", group="staff", supplementary_groups=("wheel",)),
        UserAccount("daemon", group="nogroup", system=True, password="$6$x"),
    ]
    groups = [
        UserGroup("root", 0),
        UserGroup("staff"),
        UserGroup("wheel", system=True, password="!"),
        UserGroup("nogroup", 65534, system=True),
    ]
    accounts = allocate_accounts(users, groups)
    assert accounts.allocated_uids == {"alice", "daemon"}
    assert accounts.allocated_gids == {"staff", "wheel"}
    assert passwd_text(accounts, declaration=True) == (
        "root:x:0:0:System administrator:/root:/bin/sh\n"
        "alice:x::staff::/home/alice:/bin/sh\n"
        "daemon:x:system:65534::/home/daemon:/bin/sh\n"
    )
    assert group_text(accounts, declaration=True) == (
        "root:x:0:\nstaff:x::\nwheel:!:system:alice\nnogroup:x:65534:\n"
    )
    assert passwd_text(accounts).splitlines()[1] == (
        "alice:x:1000:1000::/home/alice:/bin/sh"
    )
    assert shadow_text(accounts).splitlines()[2] == "daemon:$6$x::0:99999:7:::"


def test_allocation_follows_guix_cursor() -> None:
    # A fixed id in the users' range moves the search past it, as Guix's
    # allocate-passwd does; ids below stay free for later.
    accounts = allocate_accounts(
        [UserAccount("bob", uid=1042), UserAccount("alice")], BASE_GROUPS
    )
    assert [u.uid for u in accounts.users] == [1042, 1043]
    groups = {g.name: g.id for g in accounts.groups}
    assert (groups["wheel"], groups["tty"], groups["kvm"]) == (999, 998, 989)


def test_user_declared_twice() -> None:
    with pytest.raises(AccountError, match="user 'a' is declared more than once"):
        allocate_accounts(
            [UserAccount("a", uid=1005), UserAccount("a", uid=1006)], BASE_GROUPS
        )


def test_group_declared_twice() -> None:
    with pytest.raises(AccountError, match="group 'wheel' is declared more than once"):
        allocate_accounts([], (*BASE_GROUPS, UserGroup("wheel")))


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("", id="empty"),
        pytest.param("ev:il", id="colon"),
        pytest.param("a/b", id="slash"),
        pytest.param("a b", id="space"),
        pytest.param("a\nroot", id="newline"),
        pytest.param("-rf", id="leading-hyphen"),
    ],
)
def test_invalid_names(name: str) -> None:
    with pytest.raises(AccountError, match=re.escape(f"invalid user name {name!r}")):
        allocate_accounts([UserAccount(name, home_directory="/h")], BASE_GROUPS)
    with pytest.raises(AccountError, match=re.escape(f"invalid group name {name!r}")):
        allocate_accounts([], (*BASE_GROUPS, UserGroup(name)))


def test_relative_home_directory() -> None:
    with pytest.raises(
        AccountError, match="home directory 'relhome' of user 'rel' is not absolute"
    ):
        allocate_accounts([UserAccount("rel", home_directory="relhome")], BASE_GROUPS)


def test_passwd_field_with_a_colon() -> None:
    with pytest.raises(AccountError, match="the comment of user 'a' holds a ':'"):
        allocate_accounts([UserAccount("a", comment="x:0:0")], BASE_GROUPS)


def test_duplicate_id() -> None:
    with pytest.raises(AccountError, match="user 'b' has id 1000, already used by 'a'"):
        allocate_accounts(
            [UserAccount("a", uid=1000), UserAccount("b", uid=1000)], BASE_GROUPS
        )


def test_ids_run_out() -> None:
    groups = [UserGroup(f"g{n}", system=True) for n in range(901)]
    with pytest.raises(AccountError, match="no free id is left from 100 to 999"):
        allocate_accounts([], groups)


def test_undeclared_primary_group() -> None:
    with pytest.raises(
        AccountError, match="user 'a' belongs to group 'staff', which is not declared"
    ):
        allocate_accounts([UserAccount("a", group="staff")], BASE_GROUPS)


def test_undeclared_group() -> None:
    with pytest.raises(
        AccountError, match="belongs to group 'staff', which is not declared"
    ):
        allocate_accounts(
            [UserAccount("a", supplementary_groups=("staff",))], BASE_GROUPS
        )
