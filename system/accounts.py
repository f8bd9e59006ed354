"""User accounts and groups, and the ``passwd``, ``group`` and ``shadow``
files they give.

Mirrors Guix's ``gnu/system/accounts.scm`` (the records) and the id
allocation of ``gnu/build/accounts.scm``, done here when the system is
described rather than when it is activated, so that the files are plain
data of the system: accounts with no id get the smallest free one from
1000 up, system accounts the largest free one from 999 down.

File formats (one line per entry, fields separated by ``:``)::

    passwd  NAME:x:UID:GID:COMMENT:HOME:SHELL
    group   NAME:x:GID:MEMBER,MEMBER,...
    shadow  NAME:PASSWORD:0:0:99999:7:::     (PASSWORD "!" when locked)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from store.errors import PyguixError

__all__ = [
    "BASE_GROUPS",
    "BASE_USER_ACCOUNTS",
    "ROOT_ACCOUNT",
    "AccountError",
    "Accounts",
    "UserAccount",
    "UserGroup",
    "allocate_accounts",
    "group_text",
    "passwd_text",
    "shadow_text",
]

_ID_MIN = 1000
_SYSTEM_ID_MAX = 999
_SYSTEM_ID_MIN = 1

T = TypeVar("T", "UserAccount", "UserGroup")


class AccountError(PyguixError):
    """Report an inconsistent set of accounts.

    :param name: the user or group at fault.
    """

    def __init__(self, name: str, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.name = name


@dataclass(frozen=True)
class UserGroup:
    """A group (Guix's ``<user-group>``)."""

    name: str
    id: int | None = None
    """Its gid, or ``None`` to allocate one."""

    system: bool = False
    """Whether it is a system group (ids allocated below 1000)."""

    password: str | None = None


@dataclass(frozen=True)
class UserAccount:
    """A user account (Guix's ``<user-account>``)."""

    name: str
    group: str = "users"
    """Its primary group's name."""

    uid: int | None = None
    """Its uid, or ``None`` to allocate one."""

    supplementary_groups: tuple[str, ...] = ()
    comment: str = ""
    home_directory: str | None = None
    """``/home/NAME`` when not given."""

    create_home_directory: bool = True
    shell: str = "/bin/sh"
    """Its login shell.  XXX: no shell package is built yet, so the default
    is the container's ``/bin/sh`` when there is one."""

    system: bool = False
    """Whether it is a system account (ids allocated below 1000)."""

    password: str | None = None
    """A crypt(3) hash, or ``None`` for a locked password."""

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "supplementary_groups", tuple(self.supplementary_groups)
        )

    @property
    def home(self) -> str:
        """Return the home directory."""
        return self.home_directory or f"/home/{self.name}"


ROOT_ACCOUNT = UserAccount(
    name="root",
    group="root",
    uid=0,
    comment="System administrator",
    home_directory="/root",
)
"""The root account, always present (Guix's ``%root-account``)."""

BASE_USER_ACCOUNTS = (
    UserAccount(
        name="nobody",
        group="nogroup",
        uid=65534,
        comment="Unprivileged user",
        home_directory="/nonexistent",
        create_home_directory=False,
        shell="/run/current-system/profile/sbin/nologin",
        system=True,
    ),
)
"""Accounts every system has besides root (Guix's
``%base-user-accounts``)."""

BASE_GROUPS = (
    UserGroup("root", 0),
    UserGroup("wheel", system=True),
    UserGroup("users", 100),
    UserGroup("nogroup", 65534, system=True),
    UserGroup("tty", system=True),
    UserGroup("dialout", system=True),
    UserGroup("kmem", system=True),
    UserGroup("input", system=True),
    UserGroup("video", system=True),
    UserGroup("audio", system=True),
    UserGroup("netdev", system=True),
    UserGroup("lp", system=True),
    UserGroup("disk", system=True),
    UserGroup("kvm", system=True),
)
"""Groups every system has (Guix's ``%base-groups``)."""


@dataclass(frozen=True)
class Accounts:
    """Users and groups with every id allocated."""

    groups: tuple[UserGroup, ...]
    users: tuple[UserAccount, ...]


def allocate_accounts(
    users: Iterable[UserAccount], groups: Iterable[UserGroup]
) -> Accounts:
    """Return ``users`` and ``groups`` with ids given to those without one.

    The first occurrence of a name wins, as later ones would shadow it.

    :raises AccountError: when two entries share an id, a user's group does
        not exist, or the ids run out.
    """
    group_list = _first_of_each(groups)
    user_list = _first_of_each(users)
    allocated_groups = _allocate(group_list, lambda g: g.id, _with_gid, "group")
    by_name = {group.name: group for group in allocated_groups}
    for user in user_list:
        for name in (user.group, *user.supplementary_groups):
            if name not in by_name:
                raise AccountError(
                    user.name,
                    f"user '{user.name}' belongs to group '{name}', which is not declared",
                    "add a UserGroup of that name to the groups",
                )
    allocated_users = _allocate(user_list, lambda u: u.uid, _with_uid, "user")
    return Accounts(tuple(allocated_groups), tuple(allocated_users))


def _first_of_each(items: Iterable[T]) -> list[T]:
    """Return ``items`` without later entries of a name already seen."""
    seen: set[str] = set()
    result: list[T] = []
    for item in items:
        if item.name not in seen:
            seen.add(item.name)
            result.append(item)
    return result


def _allocate(
    items: Sequence[T],
    get: Callable[[T], int | None],
    with_id: Callable[[T, int], T],
    what: str,
) -> list[T]:
    """Give each item without an id the next free one."""
    taken: dict[int, str] = {}
    for item in items:
        number = get(item)
        if number is None:
            continue
        if number in taken:
            raise AccountError(
                item.name,
                f"{what} '{item.name}' has id {number}, already used by '{taken[number]}'",
                "give each account its own id",
            )
        taken[number] = item.name
    result: list[T] = []
    for item in items:
        if get(item) is None:
            number = _free_id(taken, item.system)
            taken[number] = item.name
            item = with_id(item, number)
        result.append(item)
    return result


def _free_id(taken: dict[int, str], system: bool) -> int:
    """Return the smallest free id from 1000, or the largest below 1000."""
    if system:
        candidates: Iterable[int] = range(_SYSTEM_ID_MAX, _SYSTEM_ID_MIN - 1, -1)
    else:
        candidates = range(_ID_MIN, 60001)
    for number in candidates:
        if number not in taken:
            return number
    raise AccountError("", "no free id is left for an account", None)


def _with_uid(user: UserAccount, number: int) -> UserAccount:
    """Return ``user`` with its uid set."""
    return replace(user, uid=number)


def _with_gid(group: UserGroup, number: int) -> UserGroup:
    """Return ``group`` with its gid set."""
    return replace(group, id=number)


def passwd_text(accounts: Accounts) -> str:
    """Return the ``/etc/passwd`` of ``accounts``."""
    gids = {group.name: group.id for group in accounts.groups}
    lines = [
        f"{user.name}:x:{user.uid}:{gids[user.group]}:{user.comment}:{user.home}:{user.shell}"
        for user in accounts.users
    ]
    return "".join(line + "\n" for line in lines)


def group_text(accounts: Accounts) -> str:
    """Return the ``/etc/group`` of ``accounts``: members are the users
    having the group as a supplementary group."""
    lines = []
    for group in accounts.groups:
        members = [
            user.name
            for user in accounts.users
            if group.name in user.supplementary_groups
        ]
        lines.append(f"{group.name}:x:{group.id}:{','.join(members)}")
    return "".join(line + "\n" for line in lines)


def shadow_text(accounts: Accounts) -> str:
    """Return the ``/etc/shadow`` of ``accounts``."""
    lines = [
        f"{user.name}:{user.password or '!'}:0:0:99999:7:::" for user in accounts.users
    ]
    return "".join(line + "\n" for line in lines)
