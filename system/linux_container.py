"""Turn an operating system into one that runs in a Linux container.

Mirrors Guix's ``containerized-operating-system``
(``gnu/system/linux-container.scm``).  The container runs on its host's
kernel, over the host's store, with file systems the container runtime
mounts; so the new system:

* keeps only the user file systems a container can mount: the rules of
  :data:`FILE_SYSTEM_DROP_RULES` remove those mounted on the store or on
  ``/``, those whose device is under ``/dev/`` and those mounted under
  ``/dev/`` or ``/sys/``;
* mounts the mappings first, as bind mounts needed at boot (with a shared
  network, the host's network configuration files before them), then the
  extra file systems, then the kept ones, then a dummy ``/``;
* drops the services of :data:`SERVICE_DROP_RULES` (terminals, static
  networking, and the network managers when sharing the host's network)
  and adds a dummy networking service providing ``loopback`` (and
  ``networking`` when shared);
* has no swap and a dummy kernel, and essential services without the
  bare-metal ones, whose ``system`` entries are only ``locale``; with a
  shared network, without the hosts service and the ``/etc`` entries the
  host provides.

Both drop lists are data, so that what a container loses can be read (and
tested) in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from system.base import (
    bare_metal_service_type,
    etc_service_type,
    hosts_service_type,
    system_service_type,
)
from system.file_systems import (
    FileSystem,
    FileSystemMapping,
    file_system_mapping_to_bind_mount,
    network_file_mappings,
    store_mapping,
)
from system.networking import (
    connman_service_type,
    dhcp_client_service_type,
    dummy_networking_service_type,
    network_manager_service_type,
    static_networking_service_type,
)
from system.operating_system import (
    DUMMY_KERNEL,
    OperatingSystem,
    locale_directory,
    operating_system_essential_services,
)
from system.services import Service, ServiceType, service
from system.terminals import (
    agetty_service_type,
    console_font_service_type,
    mingetty_service_type,
)

__all__ = [
    "DUMMY_ROOT_FILE_SYSTEM",
    "FILE_SYSTEM_DROP_RULES",
    "NETWORK_ETC_ENTRIES",
    "SERVICE_DROP_RULES",
    "FileSystemDropRule",
    "ServiceDropRule",
    "container_essential_services",
    "containerized_operating_system",
    "dropped_file_system_rule",
    "dropped_service_rule",
    "with_store_mapping",
]


@dataclass(frozen=True)
class FileSystemDropRule:
    """A reason a user file system cannot be mounted in a container."""

    name: str
    """A short name, used by tests and messages."""

    applies: Callable[[FileSystem, str], bool]
    """``applies(fs, store_dir)`` tells whether ``fs`` is dropped."""

    reason: str


FILE_SYSTEM_DROP_RULES: tuple[FileSystemDropRule, ...] = (
    FileSystemDropRule(
        "store",
        lambda fs, store_dir: fs.mount_point == store_dir.rstrip("/"),
        "the container runtime mounts the store itself, read-only",
    ),
    FileSystemDropRule(
        "root",
        lambda fs, _: fs.mount_point == "/",
        "the container's root is a fresh tmpfs",
    ),
    FileSystemDropRule(
        "device-under-dev",
        lambda fs, _: fs.device.startswith("/dev/"),
        "a container has no block devices of its own",
    ),
    FileSystemDropRule(
        "mount-point-under-dev",
        lambda fs, _: fs.mount_point.startswith("/dev/"),
        "the container runtime populates /dev",
    ),
    FileSystemDropRule(
        "mount-point-under-sys",
        lambda fs, _: fs.mount_point.startswith("/sys/"),
        "the container runtime mounts /sys read-only",
    ),
)
"""Why user file systems are dropped, in the order checked."""


@dataclass(frozen=True)
class ServiceDropRule:
    """A kind of service a container drops."""

    kind: ServiceType
    shared_network_only: bool
    """Dropped only when the container shares the host's network."""

    reason: str


SERVICE_DROP_RULES: tuple[ServiceDropRule, ...] = (
    ServiceDropRule(
        console_font_service_type, False, "opens /dev/ttyN (Guix bug 34211)"
    ),
    ServiceDropRule(mingetty_service_type, False, "opens /dev/ttyN (Guix bug 34211)"),
    ServiceDropRule(
        agetty_service_type, False, "opens a terminal device (Guix bug 34211)"
    ),
    ServiceDropRule(
        static_networking_service_type,
        False,
        "the runtime sets the network up; dummy networking stands in",
    ),
    ServiceDropRule(dhcp_client_service_type, True, "the host's network is used as is"),
    ServiceDropRule(
        network_manager_service_type, True, "the host's network is used as is"
    ),
    ServiceDropRule(connman_service_type, True, "the host's network is used as is"),
)
"""The services a container drops (Guix's "useless services")."""

NETWORK_ETC_ENTRIES = ("resolv.conf", "nsswitch.conf", "services", "hosts")
"""``/etc`` entries a container sharing the network takes from its host."""

DUMMY_ROOT_FILE_SYSTEM = FileSystem(device="nothing", mount_point="/", type="dummy")
"""The root of a container's description, so that a root exists; the
runtime mounts a tmpfs there."""

CONTAINER_DROPPED_ESSENTIAL_TYPES = (bare_metal_service_type, system_service_type)
"""Essential services replaced or dropped in every container."""


def dropped_file_system_rule(
    fs: FileSystem, store_dir: str
) -> FileSystemDropRule | None:
    """Return the first rule dropping ``fs`` in a container, or ``None``."""
    for rule in FILE_SYSTEM_DROP_RULES:
        if rule.applies(fs, store_dir):
            return rule
    return None


def dropped_service_rule(svc: Service, shared_network: bool) -> ServiceDropRule | None:
    """Return the rule dropping ``svc`` in a container, or ``None``."""
    for rule in SERVICE_DROP_RULES:
        if svc.kind is rule.kind and (shared_network or not rule.shared_network_only):
            return rule
    return None


def with_store_mapping(
    mappings: Iterable[FileSystemMapping], store_dir: str
) -> tuple[FileSystemMapping, ...]:
    """Return the read-only store mapping followed by ``mappings`` (minus
    any other mapping onto the store), as a container needs them."""
    store = store_mapping(store_dir)
    rest = [m for m in mappings if m.target.rstrip("/") != store.target.rstrip("/")]
    return (store, *rest)


def _container_file_systems(
    os_: OperatingSystem,
    mappings: Sequence[FileSystemMapping],
    shared_network: bool,
    extra_file_systems: Sequence[FileSystem],
    store_dir: str,
) -> tuple[FileSystem, ...]:
    """Return the file systems of the containerized ``os_``."""
    all_mappings = (
        [*network_file_mappings(), *mappings] if shared_network else list(mappings)
    )
    binds = [
        replace(file_system_mapping_to_bind_mount(m), needed_for_boot=True)
        for m in all_mappings
    ]
    kept = [
        fs for fs in os_.file_systems if dropped_file_system_rule(fs, store_dir) is None
    ]
    return (*binds, *extra_file_systems, *kept, DUMMY_ROOT_FILE_SYSTEM)


def container_essential_services(
    os_: OperatingSystem, shared_network: bool = False
) -> tuple[Service, ...]:
    """Return the essential services of ``os_`` run in a container (Guix's
    ``container-essential-services``): without the bare-metal ones, with a
    ``system`` service whose only entry is ``locale``; sharing the network,
    without the hosts service and the host's ``/etc`` entries."""
    dropped: tuple[ServiceType, ...] = CONTAINER_DROPPED_ESSENTIAL_TYPES
    if shared_network:
        dropped = (*dropped, hosts_service_type)
    base = [
        svc
        for svc in operating_system_essential_services(os_)
        if svc.kind not in dropped
    ]
    if shared_network:
        base = [_without_network_etc_entries(svc) for svc in base]
    system = service(system_service_type, (("locale", locale_directory(os_.locale)),))
    return (system, *base)


def _without_network_etc_entries(svc: Service) -> Service:
    """Return ``svc`` without the entries of :data:`NETWORK_ETC_ENTRIES`
    if it is the etc service."""
    if svc.kind is not etc_service_type:
        return svc
    entries = tuple(
        (name, thing) for name, thing in svc.value if name not in NETWORK_ETC_ENTRIES
    )
    return Service(svc.kind, entries)


def containerized_operating_system(
    os_: OperatingSystem,
    mappings: Iterable[FileSystemMapping] = (),
    *,
    shared_network: bool = False,
    extra_file_systems: Iterable[FileSystem] = (),
    store_dir: str,
) -> OperatingSystem:
    """Return ``os_`` made to run in a container (Guix's
    ``containerized-operating-system``; see the module docstring).

    :param mappings: host files bound in, in order; the caller puts the
        store mapping first (see :func:`with_store_mapping`).
    :param shared_network: whether the container uses the host's network.
    :param extra_file_systems: mounted after the mappings, such as
        :data:`system.file_systems.CONTAINER_FILE_SYSTEMS`.
    :param store_dir: the store directory, which the container mounts.
    """
    provision = ("loopback", "networking") if shared_network else ("loopback",)
    services = [
        svc for svc in os_.services if dropped_service_rule(svc, shared_network) is None
    ]
    services.append(service(dummy_networking_service_type, provision))
    container = replace(
        os_,
        kernel=DUMMY_KERNEL,
        swap_devices=(),
        file_systems=_container_file_systems(
            os_, list(mappings), shared_network, list(extra_file_systems), store_dir
        ),
        services=tuple(services),
        essential_services=None,
    )
    essential = container_essential_services(container, shared_network)
    return replace(container, essential_services=essential)
