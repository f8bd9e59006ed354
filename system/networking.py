"""Networking service types: static networking, DHCP client, network
managers, and the dummy networking a container uses instead.

These model Guix's types of the same names (``gnu/services/base.scm``,
``gnu/services/networking.scm``) closely enough for the container rules:
:func:`system.linux_container.containerized_operating_system` drops them by
type, from a table.  Static networking really brings interfaces up (the
loopback one, with an ioctl); the DHCP client and the managers are
placeholders that say so in their log.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from derivations.file_like import program_file
from derivations.gexp import gexp
from system.init_services import InitService, init_service_type
from system.services import service_extension, service_type

__all__ = [
    "StaticNetworking",
    "connman_service_type",
    "dhcp_client_service_type",
    "dummy_networking_service_type",
    "network_manager_service_type",
    "static_networking_service_type",
]


_INTERFACES_UP = """
import fcntl
import socket
import struct

SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
    for name in $interfaces:
        request = struct.pack("16sH14x", name.encode(), 0)
        try:
            flags = struct.unpack("16sH14x", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
            fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH14x", name.encode(), flags | IFF_UP))
            print(f"interface '{name}' is up", flush=True)
        except OSError as error:
            raise SystemExit(f"cannot bring interface '{name}' up: {error}")
"""


@dataclass(frozen=True)
class StaticNetworking:
    """Interfaces to bring up, and what that provides (Guix's
    ``<static-networking>``, without addresses and routes)."""

    interfaces: tuple[str, ...] = ("lo",)
    provision: tuple[str, ...] = ("loopback", "networking")


def _static_networking(configurations: Sequence[StaticNetworking]) -> list[InitService]:
    """Return one one-shot init service per configuration."""
    return [
        InitService(
            provision=config.provision,
            command=(
                program_file(
                    "static-networking",
                    gexp(_INTERFACES_UP, interfaces=list(config.interfaces)),
                ),
            ),
            one_shot=True,
            documentation="Bring network interfaces up.",
        )
        for config in configurations
    ]


static_networking_service_type = service_type(
    "static-networking",
    [service_extension(init_service_type, lambda config: _static_networking([config]))],
    default_value=StaticNetworking(),
    description="Bring network interfaces up with a static configuration.",
)


def _placeholder(name: str, provision: tuple[str, ...]) -> Any:
    """Return a one-shot init service that only logs it is a placeholder."""
    program = program_file(
        name,
        gexp(f"print({name!r} + ': placeholder, nothing to configure', flush=True)\n"),
    )
    return [InitService(provision=provision, command=(program,), one_shot=True)]


dhcp_client_service_type = service_type(
    "dhcp-client",
    [
        service_extension(
            init_service_type, lambda _: _placeholder("dhcp-client", ("networking",))
        )
    ],
    default_value=None,
    description="Configure network interfaces with DHCP (a placeholder).",
)

network_manager_service_type = service_type(
    "network-manager",
    [
        service_extension(
            init_service_type,
            lambda _: _placeholder("network-manager", ("networking",)),
        )
    ],
    default_value=None,
    description="Manage network connections (a placeholder).",
)

connman_service_type = service_type(
    "connman",
    [
        service_extension(
            init_service_type, lambda _: _placeholder("connman", ("networking",))
        )
    ],
    default_value=None,
    description="Manage network connections with ConnMan (a placeholder).",
)


def _dummy_networking(provision: Sequence[str]) -> list[InitService]:
    """Return the no-op service providing ``provision``."""
    program = program_file("dummy-networking", gexp("pass\n"))
    return [
        InitService(
            provision=tuple(provision),
            command=(program,),
            one_shot=True,
            documentation="Provide loopback (and networking) without touching "
            "the network: the container runtime set it up.",
        )
    ]


dummy_networking_service_type = service_type(
    "dummy-networking",
    [service_extension(init_service_type, _dummy_networking)],
    default_value=("loopback",),
    description="Provide 'loopback', and 'networking' when the host network is "
    "shared, doing nothing (Guix's dummy-networking-service-type).",
)
