"""The operating-system record and its system directory.

Mirrors Guix's ``gnu/system.scm``: an :class:`OperatingSystem` describes a
whole system; its services are the user's services followed by the
*essential services* computed from the record itself (unless given), with
missing extension targets instantiated; folding them towards the ``system``
service gives the system directory, a file union with ``boot``,
``activate``, ``etc``, ``profile``, ``locale``, ``kernel``,
``parameters`` and ``services.json``.

Before the system directory is made, :func:`check_operating_system`
refuses what cannot be built or would fail only at boot: no root file
system, an invalid host name (RFC 1123), inconsistent accounts, an init
service running as an undeclared user.  What builds nothing (the service
graphs) does not need a root file system.

An operating system is itself file-like: a gexp referring to it expands to
its system directory, and ``lower_object(os)`` lowers that directory; its
fingerprint (its key in the persistent lowering cache) is that directory's.

An OS file (such as ``fixtures/os.py``) is a Python file defining the
module-level variable ``operating_system``, an :class:`OperatingSystem`;
it may define ``mappings``, a sequence of
:class:`~system.file_systems.FileSystemMapping` a container of it gets.
:func:`load_operating_system` reads such a file.

An OS expression (``pyguix system container -e``, as Guix's
``guix system container -e '(@ (gnu system examples) os)'``) is Python
text evaluated to an :class:`OperatingSystem` by
:func:`evaluate_operating_system`; its grammar::

    expression = module ":" body     (body evaluated in the module's names)
               | body                (evaluated with EXPRESSION_MODULES' names)
    module     = identifier ("." identifier)*   (importable, not a keyword)

so ``fixtures.os:operating_system`` is the example's system and
``OperatingSystem(host_name="tiny")`` a bare one.
"""

from __future__ import annotations

import importlib
import json
import keyword
import os
import re
import runpy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from derivations.file_like import computed_file, plain_file
from derivations.gexp import Compiler, gexp, register_compiler
from derivations.lowering import lower_object
from derivations.monad import MValue, mreturn
from store.errors import PyguixError, describe_exception
from system.accounts import (
    BASE_GROUPS,
    BASE_USER_ACCOUNTS,
    ROOT_ACCOUNT,
    Accounts,
    UserAccount,
    UserGroup,
    allocate_accounts,
)
from system.base import (
    account_service_type,
    activation_service_type,
    bare_metal_service_type,
    boot_service_type,
    cleanup_service_type,
    etc_service_type,
    host_name_service_type,
    hosts_service_type,
    kernel_service_type,
    local_host_entries,
    profile_service_type,
    system_service_type,
)
from system.file_systems import (
    FileSystem,
    file_system_needed_for_boot,
    file_system_to_spec,
)
from system.init_services import InitService, init_service_type
from system.mounts import file_system_service_type, file_systems_to_mount
from system.services import (
    Service,
    ServiceError,
    ServiceType,
    check_services,
    fold_services,
    instantiate_missing_services,
    service,
)

__all__ = [
    "DUMMY_KERNEL",
    "EXPRESSION_MODULES",
    "OperatingSystem",
    "OperatingSystemError",
    "OperatingSystemExpressionError",
    "OperatingSystemFileError",
    "base_etc_entries",
    "check_host_name",
    "check_operating_system",
    "default_essential_services",
    "evaluate_operating_system",
    "load_operating_system",
    "locale_directory",
    "operating_system_activation_script",
    "operating_system_boot_file_system_specs",
    "operating_system_boot_script",
    "operating_system_derivation",
    "operating_system_directory",
    "operating_system_essential_services",
    "operating_system_init_services",
    "operating_system_profile",
    "operating_system_services",
    "operating_system_user_accounts",
]

DUMMY_KERNEL = computed_file(
    "dummy-kernel",
    gexp(
        'os.mkdir($out)\nwith open(os.path.join($out, "README"), "w") as file:\n'
        '    file.write("No kernel: this system runs on its host\'s kernel.\\n")\n'
    ),
)
"""An empty kernel package, for systems that run on their host's kernel
(Guix's ``%dummy-linux-kernel-for-container``)."""


@dataclass(frozen=True)
class OperatingSystem:
    """A whole system (Guix's ``<operating-system>``).  Sequences are kept
    as tuples, so that systems compare and hash by value."""

    host_name: str
    timezone: str = "Etc/UTC"
    locale: str = "en_US.utf8"
    kernel: Any = DUMMY_KERNEL
    """A file-like object: the kernel package."""

    users: Sequence[UserAccount] = ()
    """User accounts besides root and the base accounts."""

    groups: Sequence[UserGroup] = BASE_GROUPS
    """Groups; the default is the base groups, as Guix's ``%base-groups``."""

    packages: Sequence[Any] = ()
    """File-like objects merged into the system profile."""

    file_systems: Sequence[FileSystem] = ()
    swap_devices: Sequence[str] = ()
    services: Sequence[Service] = ()
    essential_services: Sequence[Service] | None = None
    """When ``None``, computed from the system (Guix's thunked field), see
    :func:`default_essential_services`."""

    hosts_file: Any = None
    """A file-like ``/etc/hosts`` replacing the generated one."""

    def __post_init__(self) -> None:
        for name in (
            "users",
            "groups",
            "packages",
            "file_systems",
            "swap_devices",
            "services",
        ):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        check_services(self.services)
        if self.essential_services is not None:
            essential = tuple(check_services(self.essential_services))
            object.__setattr__(self, "essential_services", essential)


class OperatingSystemFileError(PyguixError):
    """Report an OS file that does not define an operating system.

    :param file: the file.
    """

    def __init__(self, file: str, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.file = file


# ---------------------------------------------------------------------------
# Essential services


def locale_directory(locale: str) -> Any:
    """Return the ``locale`` entry of the system directory.

    XXX: a directory naming the locale, not compiled locale data: builders
    and services use the host interpreter's C.UTF-8."""
    return computed_file(
        "locale",
        gexp(
            'os.mkdir($out)\nwith open(os.path.join($out, "LOCALE"), "w") as file:\n'
            '    file.write($locale + "\\n")\n',
            locale=locale,
        ),
    )


def _root_devices(os_: OperatingSystem) -> list[str]:
    """Return the devices of the file systems ``os_`` mounts on ``/``."""
    return [fs.device for fs in os_.file_systems if fs.mount_point == "/"]


def _parameters_file(os_: OperatingSystem) -> Any:
    """Return the ``parameters`` entry: the boot parameters as JSON (Guix's
    ``boot-parameters``), naming the root file system's device; the system
    directory checks there is one (:func:`check_operating_system`), so
    that what builds nothing, as the service graphs, does not need one."""
    roots = _root_devices(os_)
    data = {
        "version": 1,
        "label": f"pyguix system {os_.host_name}",
        "root_device": roots[0] if roots else None,
        "locale": os_.locale,
        "timezone": os_.timezone,
    }
    return plain_file("parameters", json.dumps(data, indent=2, sort_keys=True) + "\n")


def base_etc_entries(os_: OperatingSystem) -> tuple[tuple[str, Any], ...]:
    """Return the ``/etc`` entries every system has: ``os-release``,
    ``timezone``, ``nsswitch.conf``, ``services``, ``shells`` and
    ``fstab``."""
    fstab = "".join(
        f"{fs.device}\t{fs.mount_point}\t{fs.type}\t{fs.options or 'defaults'}\t0\t0\n"
        for fs in os_.file_systems
    )
    return (
        ("os-release", plain_file("os-release", 'NAME="pyguix system"\nID=pyguix\n')),
        ("timezone", plain_file("timezone", os_.timezone + "\n")),
        (
            "nsswitch.conf",
            plain_file(
                "nsswitch.conf",
                "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n"
                "networks: files\nservices: files\nprotocols: files\n",
            ),
        ),
        ("services", plain_file("services", "http\t80/tcp\nhttp-alt\t8080/tcp\n")),
        ("shells", plain_file("shells", "/bin/sh\n")),
        ("fstab", plain_file("fstab", fstab)),
    )


def _accounts(os_: OperatingSystem) -> tuple[UserAccount | UserGroup, ...]:
    """Return the groups, then root, the base accounts and the users."""
    return (*os_.groups, ROOT_ACCOUNT, *BASE_USER_ACCOUNTS, *os_.users)


def default_essential_services(os_: OperatingSystem) -> tuple[Service, ...]:
    """Return the services every system needs, computed from ``os_``
    (Guix's ``operating-system-default-essential-services``).  Order
    matters: cleanup runs first at boot, then activation, then init."""
    entries = [
        ("locale", locale_directory(os_.locale)),
        ("parameters", _parameters_file(os_)),
    ]
    etc = base_etc_entries(os_)
    if os_.hosts_file is not None:
        etc = (*etc, ("hosts", os_.hosts_file))
    services = [
        service(system_service_type, tuple(entries)),
        service(kernel_service_type, os_.kernel),
        service(boot_service_type),
        service(cleanup_service_type),
        service(activation_service_type),
        service(init_service_type),
        service(account_service_type, _accounts(os_)),
        service(etc_service_type, etc),
        service(host_name_service_type, os_.host_name),
        service(profile_service_type, os_.packages),
        service(file_system_service_type, file_systems_to_mount(os_.file_systems)),
        service(bare_metal_service_type),
    ]
    if os_.hosts_file is None:
        services.append(service(hosts_service_type, local_host_entries(os_.host_name)))
    return tuple(services)


def operating_system_essential_services(os_: OperatingSystem) -> tuple[Service, ...]:
    """Return the essential services of ``os_``: as given, or computed."""
    if os_.essential_services is not None:
        return tuple(os_.essential_services)
    return default_essential_services(os_)


def operating_system_services(os_: OperatingSystem) -> list[Service]:
    """Return all the services of ``os_``: its own, then the essential ones,
    then default instances of missing targets (Guix's
    ``operating-system-services``)."""
    return instantiate_missing_services(
        [*os_.services, *operating_system_essential_services(os_)]
    )


# ---------------------------------------------------------------------------
# Folding towards the roots


def _fold(os_: OperatingSystem, root: ServiceType) -> Any:
    """Return the value of ``root`` once the services of ``os_`` are folded."""
    return fold_services(operating_system_services(os_), root).value


def operating_system_directory(os_: OperatingSystem) -> Any:
    """Return the system directory of ``os_``, a file-like object.

    :raises PyguixError: ``os_`` cannot be built (see
        :func:`check_operating_system`), or its services cannot be folded.
    """
    check_operating_system(os_)
    return _fold(os_, system_service_type)


def operating_system_derivation(os_: OperatingSystem) -> MValue[Any]:
    """Return, monadically, the derivation of the system directory of
    ``os_`` (Guix's ``operating-system-derivation``)."""
    return lower_object(operating_system_directory(os_))


def operating_system_boot_script(os_: OperatingSystem) -> Any:
    """Return the ``boot`` program of ``os_``."""
    return _fold(os_, boot_service_type)


def operating_system_activation_script(os_: OperatingSystem) -> Any:
    """Return the ``activate`` program of ``os_``."""
    return _fold(os_, activation_service_type)


def operating_system_profile(os_: OperatingSystem) -> tuple[Any, ...]:
    """Return the packages of the system profile of ``os_``."""
    packages: tuple[Any, ...] = _fold(os_, profile_service_type)
    return packages


def operating_system_init_services(os_: OperatingSystem) -> tuple[InitService, ...]:
    """Return the init services of ``os_``, in start order."""
    services: tuple[InitService, ...] = _fold(os_, init_service_type)
    return services


def operating_system_user_accounts(os_: OperatingSystem) -> Accounts:
    """Return the accounts of ``os_`` and its services, ids allocated."""
    items = _fold(os_, account_service_type)
    users = [item for item in items if isinstance(item, UserAccount)]
    groups = [item for item in items if isinstance(item, UserGroup)]
    return allocate_accounts(users, groups)


def operating_system_boot_file_system_specs(
    os_: OperatingSystem, store_dir: str
) -> list[list[Any]]:
    """Return the specs of the file systems of ``os_`` needed at boot, but
    ``/`` (what a container script embeds)."""
    return [
        file_system_to_spec(fs)
        for fs in os_.file_systems
        if file_system_needed_for_boot(fs, store_dir) and fs.mount_point != "/"
    ]


# ---------------------------------------------------------------------------
# Checks before lowering


class OperatingSystemError(PyguixError):
    """Report an operating system that cannot be built as declared.

    :param host_name: the host name of the system at fault.
    """

    def __init__(self, host_name: str, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.host_name = host_name


_HOST_NAME_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def check_operating_system(os_: OperatingSystem) -> None:
    """Refuse what the system directory of ``os_`` cannot be built from,
    before anything is lowered or built: no root file system, an invalid
    host name, an account problem (see
    :func:`system.accounts.allocate_accounts`), or an init service running
    as a user no account declares.

    :raises ServiceError: no file system is mounted on ``/``.
    :raises OperatingSystemError: the host name or an init service's user
        is invalid.
    :raises AccountError: the accounts are inconsistent.
    """
    if not _root_devices(os_):
        raise ServiceError(
            f"operating system '{os_.host_name}' has no root file system",
            "add a FileSystem mounted on '/'",
        )
    check_host_name(os_.host_name)
    _check_init_users(os_)


def check_host_name(name: str) -> None:
    """Refuse a host name that is not RFC 1123's: dot-separated labels of
    letters, digits and inner hyphens, 63 characters each at most, 253 in
    all.

    :raises OperatingSystemError: the name is not valid.
    """
    labels = name.split(".")
    if len(name) <= 253 and all(_HOST_NAME_LABEL.fullmatch(label) for label in labels):
        return
    raise OperatingSystemError(
        name,
        f"invalid host name {name!r}: a host name is labels of letters, digits "
        "and inner hyphens (63 characters at most) separated by dots, 253 "
        "characters in all",
        "choose a name such as 'web-1' or 'web-1.example.org'",
    )


def _check_init_users(os_: OperatingSystem) -> None:
    """Refuse an init service whose ``user`` no account declares, which
    would fail only at boot."""
    names = {user.name for user in operating_system_user_accounts(os_).users}
    for svc in operating_system_init_services(os_):
        if svc.user is not None and svc.user not in names:
            raise OperatingSystemError(
                os_.host_name,
                f"init service '{svc.name}' runs as user '{svc.user}', "
                "which no account declares",
                "add a UserAccount of that name to the users, or fix 'user'",
            )


# ---------------------------------------------------------------------------
# The operating system as a file-like object, and OS files


register_compiler(
    OperatingSystem,
    Compiler(
        lambda os_, system: mreturn(operating_system_directory(os_)),
        fingerprint=lambda os_, fingerprint_of: fingerprint_of(
            operating_system_directory(os_)
        ),
    ),
)


def load_operating_system(
    file: str | os.PathLike[str],
) -> tuple[OperatingSystem, tuple[Any, ...]]:
    """Run the OS file ``file`` and return its ``operating_system`` and its
    ``mappings`` (empty when it defines none).

    :raises OperatingSystemFileError: when ``file`` does not exist or does
        not define ``operating_system`` as an :class:`OperatingSystem`.
    """
    path = os.fspath(file)
    if not os.path.isfile(path):
        raise OperatingSystemFileError(
            path, f"operating system file '{path}' does not exist"
        )
    namespace = runpy.run_path(path, run_name="__pyguix_os__")
    value = namespace.get("operating_system")
    if not isinstance(value, OperatingSystem):
        raise OperatingSystemFileError(
            path,
            f"operating system file '{path}' does not define 'operating_system'",
            "assign an OperatingSystem(...) to the variable operating_system",
        )
    mappings: Iterable[Any] = namespace.get("mappings", ())
    return value, tuple(mappings)


# ---------------------------------------------------------------------------
# OS expressions


class OperatingSystemExpressionError(PyguixError):
    """Report an OS expression that does not give an operating system.

    :param expression: the expression, as given.
    """

    def __init__(self, expression: str, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.expression = expression


EXPRESSION_MODULES = (
    "system.operating_system",
    "system.services",
    "system.base",
    "system.accounts",
    "system.file_systems",
    "system.mounts",
    "system.init_services",
    "system.servers",
    "system.networking",
    "system.terminals",
    "derivations.gexp",
    "derivations.file_like",
)
"""Modules whose public names (``__all__``) a bare expression can use,
besides ``replace`` (:func:`dataclasses.replace`)."""

_MODULE_PREFIX = re.compile(r"\s*([^\W\d]\w*(?:\.[^\W\d]\w*)*)\s*:")


def evaluate_operating_system(expression: str) -> OperatingSystem:
    """Evaluate the OS expression ``expression`` (see the module's grammar)
    and return the operating system it gives.

    A ``module:`` prefix is imported through :data:`sys.path`, which the
    caller sets up.  Unlike an OS file, an expression gives no mappings.

    :raises OperatingSystemExpressionError: the expression is not valid
        Python, its module cannot be imported, its evaluation raised, or it
        gives something else than an :class:`OperatingSystem`; the message
        names the expression and, for an exception, its type and message.
    """
    module, body = _split_expression(expression)
    try:
        code = compile(body.strip(), "<expression>", "eval")
    except SyntaxError as error:
        raise OperatingSystemExpressionError(
            expression,
            f"expression '{expression}' is not valid Python: {error.msg}",
            "write MODULE:EXPRESSION, or an expression of the system modules' names",
        ) from None

    namespace = _expression_namespace(expression, module)
    try:
        value = eval(code, namespace)  # noqa: S307 - evaluating it is the point
    except (Exception, SystemExit) as error:  # noqa: BLE001 - the user's code failed
        raise OperatingSystemExpressionError(
            expression,
            f"evaluating expression '{expression}' failed: {_describe(error)}",
            getattr(error, "hint", None) or "fix the expression or the module it uses",
        ) from error

    if not isinstance(value, OperatingSystem):
        raise OperatingSystemExpressionError(
            expression,
            f"expression '{expression}' gives a {type(value).__name__}, "
            "not an operating system",
            "make it evaluate to an OperatingSystem(...)",
        )
    return value


def _split_expression(expression: str) -> tuple[str | None, str]:
    """Return the module of ``expression`` (``None`` for a bare one) and
    its body.  A name before a colon cannot start an expression, but for a
    keyword (``lambda: ...``), so the prefix is never ambiguous."""
    match = _MODULE_PREFIX.match(expression)
    if match is None or any(keyword.iskeyword(p) for p in match[1].split(".")):
        return None, expression
    return match[1], expression[match.end() :]


def _expression_namespace(expression: str, module: str | None) -> dict[str, Any]:
    """Return the globals ``expression`` is evaluated in: a copy of those of
    ``module``, or the public names of :data:`EXPRESSION_MODULES`.

    :raises OperatingSystemExpressionError: ``module`` cannot be imported.
    """
    if module is None:
        namespace: dict[str, Any] = {"replace": replace}
        for name in EXPRESSION_MODULES:
            imported = importlib.import_module(name)
            namespace.update({n: getattr(imported, n) for n in imported.__all__})
        return namespace

    try:
        return dict(vars(importlib.import_module(module)))
    except (Exception, SystemExit) as error:  # noqa: BLE001 - the user's module failed
        raise OperatingSystemExpressionError(
            expression,
            f"importing module '{module}' of expression '{expression}' failed: "
            f"{_describe(error)}",
            "check the module's name; add its directory with -L/--load-path",
        ) from error


def _describe(error: BaseException) -> str:
    """Return ``TYPE: MESSAGE`` of ``error``, or a pyguix error's message."""
    if isinstance(error, PyguixError):
        return error.message
    return describe_exception(error)
