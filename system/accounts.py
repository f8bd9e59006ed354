"""User accounts and groups, and the ``passwd``, ``group`` and ``shadow``
files they give.

Mirrors Guix's ``gnu/system/accounts.scm`` (the records) and the id
allocation of ``gnu/build/accounts.scm``.  As in Guix, the ids that count
are allocated when the system is activated, from the declarations and the
files already there (:func:`system.activation.activate_accounts`): accounts
keep the ids they had, new ones get the next free id.  Describing a system
allocates too, with the same procedure over empty files, which is what a
system activated for the first time gets: accounts with no id get the next
free one from 1000 up, system accounts from 999 down.

File formats (one line per entry, fields separated by ``:``)::

    passwd  NAME:x:UID:GID:COMMENT:HOME:SHELL
    group   NAME:x:GID:MEMBER,MEMBER,...
    shadow  NAME:PASSWORD:LASTCHANGE:0:99999:7:::   (PASSWORD "!" when locked)

:func:`allocate_accounts`, run when a system is lowered, refuses what
would corrupt the files or fail at activation, as Guix's account checks:
names declared twice, invalid names (:func:`check_name`), homes that are
not absolute, fields holding ``:`` or newlines, undeclared groups and
shared ids.

The declarations given to activation (``declaration=True``) have the same
formats but for ids: an allocated ``UID`` or ``GID`` is empty, or
``system`` for a system account; a user's ``GID`` is its group's name when
the group's id is allocated; ``LASTCHANGE`` is empty (the activation day).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from store.errors import PyguixError
from system.activation import NoFreeIdError, allocate_ids

__all__ = [
    "BASE_GROUPS",
    "BASE_USER_ACCOUNTS",
    "ROOT_ACCOUNT",
    "AccountError",
    "Accounts",
    "UserAccount",
    "UserGroup",
    "allocate_accounts",
    "check_name",
    "group_text",
    "passwd_text",
    "shadow_text",
]


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
    """Its password field (``x`` when ``None``), for a new group only."""


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
    """A crypt(3) hash, or ``None`` for a locked password: the initial
    password only, as an account that exists keeps the one it has."""

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
    allocated_gids: frozenset[str] = frozenset()
    """The names of the groups whose gid was allocated, not declared."""

    allocated_uids: frozenset[str] = frozenset()
    """The names of the users whose uid was allocated, not declared."""


def allocate_accounts(
    users: Iterable[UserAccount], groups: Iterable[UserGroup]
) -> Accounts:
    """Return ``users`` and ``groups`` with ids given to those without one,
    as activation gives them on a system with no accounts yet.

    :raises AccountError: when a name is invalid (see :func:`check_name`)
        or declared twice, a home directory is not absolute, two entries
        share an id, a user's group does not exist, or the ids run out.
    """
    group_list = list(groups)
    user_list = list(users)
    _check_names([group.name for group in group_list], "group")
    _check_names([user.name for user in user_list], "user")
    _check_user_fields(user_list)
    _check_ids([(group.name, group.id) for group in group_list], "group")
    _check_groups(user_list, {group.name for group in group_list})
    _check_ids([(user.name, user.uid) for user in user_list], "user")

    gids = _allocate([(group.name, group.id, group.system) for group in group_list])
    uids = _allocate([(user.name, user.uid, user.system) for user in user_list])
    return Accounts(
        tuple(
            replace(group, id=gid) for group, gid in zip(group_list, gids, strict=True)
        ),
        tuple(
            replace(user, uid=uid) for user, uid in zip(user_list, uids, strict=True)
        ),
        frozenset(group.name for group in group_list if group.id is None),
        frozenset(user.name for user in user_list if user.uid is None),
    )


def check_name(name: str, what: str) -> None:
    """Reject a user or group name that would corrupt the account files or
    read as an option: empty, holding ``:``, ``/``, ``,`` or white space
    (newlines included), or starting with ``-``.

    :param what: ``user`` or ``group``, for the message.
    :raises AccountError: the name is invalid.
    """
    if name and not name.startswith("-") and not _NAME_FORBIDDEN.search(name):
        return
    raise AccountError(
        name,
        f"invalid {what} name {name!r}: a name is not empty, does not start "
        "with '-' and holds no ':', '/', ',' or white space",
        "use letters, digits, '_', '-' and '.', as 'alice' or 'www-data'",
    )


_NAME_FORBIDDEN = re.compile(r"[:/,\s]")


def _check_names(names: Sequence[str], what: str) -> None:
    """Reject an invalid name, or one given twice (Guix's duplicate
    account check)."""
    seen: set[str] = set()
    for name in names:
        check_name(name, what)
        if name in seen:
            raise AccountError(
                name,
                f"{what} '{name}' is declared more than once",
                f"declare each {what} once; root, nobody and the base groups "
                "are already there",
            )
        seen.add(name)


def _check_user_fields(users: Iterable[UserAccount]) -> None:
    """Reject a home directory that is not absolute, and a home, comment
    or shell holding a ``:`` or a newline (a field of ``/etc/passwd``)."""
    for user in users:
        if not user.home.startswith("/"):
            raise AccountError(
                user.name,
                f"home directory '{user.home}' of user '{user.name}' is not absolute",
                f"give an absolute path, as '/home/{user.name}'",
            )
        for field_name in ("home", "comment", "shell"):
            value = getattr(user, field_name)
            if ":" in value or "\n" in value:
                raise AccountError(
                    user.name,
                    f"the {field_name} of user '{user.name}' holds a ':' or a "
                    f"newline: {value!r}",
                    "remove it: the fields of /etc/passwd are separated by ':'",
                )


def _check_ids(entries: Iterable[tuple[str, int | None]], what: str) -> None:
    """Reject two ``(name, id)`` entries declaring the same id."""
    taken: dict[int, str] = {}
    for name, number in entries:
        if number is None:
            continue
        if number in taken:
            raise AccountError(
                name,
                f"{what} '{name}' has id {number}, already used by '{taken[number]}'",
                "give each account its own id",
            )
        taken[number] = name


def _check_groups(users: Iterable[UserAccount], groups: set[str]) -> None:
    """Reject a user belonging to a group not in ``groups``."""
    for user in users:
        for name in (user.group, *user.supplementary_groups):
            if name not in groups:
                raise AccountError(
                    user.name,
                    f"user '{user.name}' belongs to group '{name}', which is not declared",
                    "add a UserGroup of that name to the groups",
                )


def _allocate(requests: Sequence[tuple[str, int | None, bool]]) -> list[int]:
    """Return the ids of ``(name, id, system?)`` requests over no accounts."""
    try:
        return allocate_ids(requests)
    except NoFreeIdError as error:
        name = next(name for name, number, _ in requests if number is None)
        raise AccountError(name, str(error), "declare fewer accounts") from None


def passwd_text(accounts: Accounts, declaration: bool = False) -> str:
    """Return the ``/etc/passwd`` of ``accounts``, or with ``declaration``
    its declaration (allocated ids left to activation)."""
    groups = {group.name: group for group in accounts.groups}
    lines = []
    for user in accounts.users:
        uid = f"{user.uid}"
        gid = f"{groups[user.group].id}"
        if declaration and user.name in accounts.allocated_uids:
            uid = _allocated_field(user.system)
        if declaration and user.group in accounts.allocated_gids:
            gid = user.group
        lines.append(
            f"{user.name}:x:{uid}:{gid}:{user.comment}:{user.home}:{user.shell}"
        )
    return "".join(line + "\n" for line in lines)


def group_text(accounts: Accounts, declaration: bool = False) -> str:
    """Return the ``/etc/group`` of ``accounts``, or with ``declaration``
    its declaration: members are the users having the group as a
    supplementary group."""
    lines = []
    for group in accounts.groups:
        members = [
            user.name
            for user in accounts.users
            if group.name in user.supplementary_groups
        ]
        gid = f"{group.id}"
        if declaration and group.name in accounts.allocated_gids:
            gid = _allocated_field(group.system)
        password = group.password or "x"
        lines.append(f"{group.name}:{password}:{gid}:{','.join(members)}")
    return "".join(line + "\n" for line in lines)


def _allocated_field(system: bool) -> str:
    """Return the id field declaring an id to allocate."""
    return "system" if system else ""


def shadow_text(accounts: Accounts) -> str:
    """Return the declaration of ``/etc/shadow`` of ``accounts``: activation
    sets the date of the last change of new entries, and keeps old ones."""
    lines = [
        f"{user.name}:{user.password or '!'}::0:99999:7:::" for user in accounts.users
    ]
    return "".join(line + "\n" for line in lines)
