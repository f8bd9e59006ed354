"""The core service types every operating system is made of.

Mirrors the core of Guix's ``gnu/services.scm``, with Python programs
where Guix has Scheme ones; the init service type, Guix's
``shepherd-root-service-type``, is in :mod:`system.init_services`.  The
graph, from the leaves to the root::

    cleanup ----------------------------.
    activation <- etc, accounts,        +--> boot --.
                  host-name, bare-metal |           |
    init (<- the services it runs) -----'           +--> system
    etc <- hosts, host-name                         |
    profile, kernel, activation, etc, init ---------'

* ``system`` (the root): its value is a list of ``(name, file-like)``
  entries; extended, it is ``file_union("system", entries)``, the system
  directory.  An entry given twice is an error, as for ``etc``.
* ``boot``: Python snippets (gexps) run in order by the ``boot`` program:
  cleanup, activation, then the init supervisor replaces the process.
* ``activation``: ``(name, gexp)`` snippets; the ``activate`` program points
  ``/run/current-system`` at ``$PYGUIX_NEW_SYSTEM`` atomically, then runs
  each snippet, logging and surviving failures.
* ``etc``: ``(name, file-like)`` entries; the ``etc`` entry of the system,
  linked into ``/etc`` at activation (``hosts`` copied).
* ``accounts``: users and groups; activation writes ``/etc/passwd``,
  ``/etc/group`` and ``/etc/shadow`` and creates the homes.
* ``hosts`` (``/etc/hosts``), ``host-name`` (``/etc/hostname`` and the host
  name set at activation), ``profile`` (the ``profile`` entry, a profile
  of the packages: see :mod:`system.profiles`), ``kernel`` (the ``kernel``
  entry) and ``bare-metal`` (what only a machine of its own needs).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from derivations.file_like import file_union, plain_file, program_file
from derivations.gexp import Gexp, gexp, gexp_text, with_imported_modules
from system.accounts import (
    UserAccount,
    UserGroup,
    allocate_accounts,
    group_text,
    passwd_text,
    shadow_text,
)
from system.profiles import profile
from system.services import (
    ServiceError,
    concatenate,
    service_extension,
    service_type,
)

__all__ = [
    "HostEntry",
    "account_service_type",
    "activation_service_type",
    "bare_metal_service_type",
    "boot_service_type",
    "cleanup_service_type",
    "etc_service_type",
    "host_name_service_type",
    "hosts_service_type",
    "kernel_service_type",
    "local_host_entries",
    "profile_service_type",
    "system_service_type",
]


def _append(value: Iterable[Any], extensions: Iterable[Any]) -> tuple[Any, ...]:
    """Return ``value`` followed by ``extensions``."""
    return (*value, *extensions)


def _unique_entries(
    entries: Sequence[tuple[str, Any]], where: str
) -> tuple[tuple[str, Any], ...]:
    """Return ``entries``, rejecting a name given twice early, as Guix does
    for /etc, rather than failing the build of the directory ``where``."""
    seen: set[str] = set()
    for name, _ in entries:
        if name in seen:
            raise ServiceError(
                f"duplicate '{name}' entry for {where}",
                "give each entry once: is a service instantiated twice?",
            )
        seen.add(name)
    return tuple(entries)


# ---------------------------------------------------------------------------
# system and boot


system_service_type = service_type(
    "system",
    compose=concatenate,
    extend=lambda entries, more: file_union(
        "system", _unique_entries([*entries, *more], "the system directory")
    ),
    default_value=(),
    description="Build the system directory: boot, activate, etc, profile, "
    "locale, kernel and what other services add.",
)


_BOOT_PROLOGUE = """
# Boot: clean up, activate, then hand over to the init supervisor.
from system import activation

os.environ[activation.NEW_SYSTEM_VARIABLE] = activation.new_system()
"""


def _boot_program(snippets: Sequence[Gexp]) -> Any:
    """Return the ``boot`` program running ``snippets`` in order."""
    names = {f"snippet{index}": snippet for index, snippet in enumerate(snippets)}
    body = "".join(f"\n${name}\n" for name in names)
    code = gexp(_BOOT_PROLOGUE.replace("$", "$$") + body, **names)
    return program_file("boot", with_imported_modules(["system.activation"], code))


boot_service_type = service_type(
    "boot",
    [service_extension(system_service_type, lambda program: [("boot", program)])],
    compose=list,
    extend=lambda _, snippets: _boot_program(snippets),
    default_value=None,
    description="Make the boot program, which cleans up, activates the system "
    "and starts the init supervisor.",
)


cleanup_service_type = service_type(
    "cleanup",
    [
        service_extension(
            boot_service_type,
            lambda _: gexp("from system import activation\nactivation.cleanup()\n"),
        )
    ],
    default_value=None,
    description="Empty /tmp, /run and /var/run at boot.",
)


# ---------------------------------------------------------------------------
# activation


_ACTIVATE = """
# Activate a system: switch /run/current-system, then run each snippet.
from system import activation

os.makedirs("/var/run", exist_ok=True)
os.makedirs("/var/log", exist_ok=True)
activation.activate_current_system()
failed = activation.run_snippets($snippets)
if failed:
    print(f"activation: {failed} service(s) failed to activate", file=sys.stderr)
"""


def _activate_program(snippets: Sequence[tuple[str, Gexp]]) -> Any:
    """Return the ``activate`` program running the named ``snippets``."""
    pairs = [(name, gexp_text(snippet)) for name, snippet in snippets]
    code = gexp(_ACTIVATE, snippets=pairs)
    return program_file("activate", with_imported_modules(["system.activation"], code))


activation_service_type = service_type(
    "activation",
    [
        service_extension(system_service_type, lambda program: [("activate", program)]),
        service_extension(
            boot_service_type,
            lambda program: gexp(
                "from system import activation\nactivation.run_activation($activate)\n",
                activate=program,
            ),
        ),
    ],
    compose=concatenate,
    extend=lambda _, snippets: _activate_program(snippets),
    default_value=None,
    description="Make the activate program, which switches /run/current-system "
    "and runs the activation snippet of each service.",
)


# ---------------------------------------------------------------------------
# etc


ETC_COPIED = ("hosts",)
"""The ``/etc`` entries copied at activation rather than linked."""


etc_service_type = service_type(
    "etc",
    [
        service_extension(
            system_service_type, lambda entries: [("etc", file_union("etc", entries))]
        ),
        service_extension(
            activation_service_type,
            lambda entries: [
                (
                    "etc",
                    gexp(
                        "from system import activation\n"
                        "activation.activate_etc($etc, $copied)\n",
                        etc=file_union("etc", entries),
                        copied=list(ETC_COPIED),
                    ),
                )
            ],
        ),
    ],
    compose=concatenate,
    extend=lambda entries, more: _unique_entries([*entries, *more], "/etc"),
    default_value=(),
    description="Populate /etc with links into the store's etc directory.",
)


# ---------------------------------------------------------------------------
# accounts


def _accounts_snippet(accounts: Sequence[UserAccount | UserGroup]) -> Gexp:
    """Return the activation snippet writing the account files."""
    users = [item for item in accounts if isinstance(item, UserAccount)]
    groups = [item for item in accounts if isinstance(item, UserGroup)]
    allocated = allocate_accounts(users, groups)
    gids = {group.name: group.id for group in allocated.groups}
    homes = [
        (user.home, user.uid, gids[user.group])
        for user in allocated.users
        if user.create_home_directory
    ]
    return gexp(
        "from system import activation\n"
        "activation.activate_accounts($passwd, $group, $shadow, $homes)\n",
        passwd=passwd_text(allocated, declaration=True),
        group=group_text(allocated, declaration=True),
        shadow=shadow_text(allocated),
        homes=homes,
    )


account_service_type = service_type(
    "accounts",
    [
        service_extension(
            activation_service_type,
            lambda accounts: [("accounts", _accounts_snippet(accounts))],
        )
    ],
    compose=concatenate,
    extend=_append,
    default_value=(),
    description="Write /etc/passwd, /etc/group and /etc/shadow and create the "
    "users' home directories.",
)


# ---------------------------------------------------------------------------
# hosts and host name


@dataclass(frozen=True)
class HostEntry:
    """A line of ``/etc/hosts`` (Guix's ``<host>``)."""

    address: str
    canonical_name: str
    aliases: tuple[str, ...] = ()


def local_host_entries(host_name: str) -> tuple[HostEntry, ...]:
    """Return the entries naming this host ``localhost`` and ``host_name``
    (Guix's ``local-host-entries``)."""
    return (
        HostEntry("127.0.0.1", "localhost", (host_name,)),
        HostEntry("::1", "localhost", (host_name,)),
    )


def _hosts_text(entries: Iterable[HostEntry]) -> str:
    """Return ``/etc/hosts`` for ``entries``."""
    return "".join(
        " ".join([entry.address, entry.canonical_name, *entry.aliases]) + "\n"
        for entry in entries
    )


hosts_service_type = service_type(
    "hosts",
    [
        service_extension(
            etc_service_type,
            lambda entries: [("hosts", plain_file("hosts", _hosts_text(entries)))],
        )
    ],
    compose=concatenate,
    extend=_append,
    default_value=(),
    description="Write /etc/hosts.",
)


host_name_service_type = service_type(
    "host-name",
    [
        service_extension(
            etc_service_type,
            lambda name: [("hostname", plain_file("hostname", name + "\n"))],
        ),
        service_extension(
            activation_service_type,
            lambda name: [
                (
                    "host-name",
                    gexp(
                        "from system import activation\n"
                        "activation.set_host_name($name)\n",
                        name=name,
                    ),
                )
            ],
        ),
    ],
    description="Set the host name at activation and write /etc/hostname.",
)


# ---------------------------------------------------------------------------
# profile, kernel, bare metal


def _profile_entry(packages: Sequence[Any]) -> list[tuple[str, Any]]:
    """Return the ``profile`` entry: the profile of ``packages``, with its
    manifest and ``etc/profile`` (see :mod:`system.profiles`)."""
    return [("profile", profile("profile", packages))]


profile_service_type = service_type(
    "profile",
    [service_extension(system_service_type, _profile_entry)],
    compose=concatenate,
    extend=_append,
    default_value=(),
    description="Make the system profile, /run/current-system/profile, from "
    "the packages of the system and its services.",
)


kernel_service_type = service_type(
    "kernel",
    [service_extension(system_service_type, lambda kernel: [("kernel", kernel)])],
    description="Add the kernel to the system directory (Guix's linux-builder).",
)


bare_metal_service_type = service_type(
    "bare-metal",
    [
        service_extension(
            activation_service_type,
            lambda _: [
                (
                    "bare-metal",
                    gexp('os.makedirs("/run/privileged/bin", exist_ok=True)\n'),
                )
            ],
        )
    ],
    default_value=None,
    description="Prepare what only a machine of its own needs (Guix's "
    "%linux-bare-metal-service); containers drop it.",
)
