"""Tests of containerized_operating_system: each drop rule, the services a
container loses and keeps, and its system directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from derivations.file_like import FileUnion
from system.base import bare_metal_service_type, hosts_service_type
from system.file_systems import CONTAINER_FILE_SYSTEMS, FileSystem, FileSystemMapping
from system.linux_container import (
    DUMMY_ROOT_FILE_SYSTEM,
    FILE_SYSTEM_DROP_RULES,
    NETWORK_ETC_ENTRIES,
    SERVICE_DROP_RULES,
    containerized_operating_system,
    dropped_file_system_rule,
    with_store_mapping,
)
from system.networking import (
    dhcp_client_service_type,
    network_manager_service_type,
    static_networking_service_type,
)
from system.operating_system import (
    DUMMY_KERNEL,
    OperatingSystem,
    load_operating_system,
    operating_system_directory,
    operating_system_essential_services,
    operating_system_init_services,
)
from system.services import service
from system.terminals import (
    agetty_service_type,
    console_font_service_type,
    mingetty_service_type,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "fixtures" / "os.py"
STORE = "/pyguix/store"


@pytest.fixture(scope="module")
def example() -> OperatingSystem:
    return load_operating_system(EXAMPLE)[0]


@pytest.mark.parametrize(
    ("fs", "rule"),
    [
        pytest.param(
            FileSystem("/data/store", STORE, "none", flags=("bind-mount",)),
            "store",
            id="store",
        ),
        pytest.param(FileSystem("tmpfs", "/", "tmpfs"), "root", id="root"),
        pytest.param(
            FileSystem("/dev/sdb1", "/home", "ext4"),
            "device-under-dev",
            id="device-under-dev",
        ),
        pytest.param(
            FileSystem("tmpfs", "/dev/shm", "tmpfs"),
            "mount-point-under-dev",
            id="mount-point-under-dev",
        ),
        pytest.param(
            FileSystem("debugfs", "/sys/kernel/debug", "debugfs"),
            "mount-point-under-sys",
            id="mount-point-under-sys",
        ),
        pytest.param(FileSystem("tmpfs", "/var/cache", "tmpfs"), None, id="kept-tmpfs"),
        pytest.param(
            FileSystem("/srv", "/mnt/srv", "none", flags=("bind-mount",)),
            None,
            id="kept-bind",
        ),
        pytest.param(
            FileSystem("sysfs", "/sys", "sysfs"), None, id="sys-itself-is-not-under-sys"
        ),
    ],
)
def test_file_system_rules(fs: FileSystem, rule: str | None) -> None:
    found = dropped_file_system_rule(fs, STORE)
    assert (found.name if found else None) == rule


def test_rule_tables_are_named_data() -> None:
    assert [rule.name for rule in FILE_SYSTEM_DROP_RULES] == [
        "store",
        "root",
        "device-under-dev",
        "mount-point-under-dev",
        "mount-point-under-sys",
    ]
    always = {
        rule.kind.name for rule in SERVICE_DROP_RULES if not rule.shared_network_only
    }
    shared = {rule.kind.name for rule in SERVICE_DROP_RULES if rule.shared_network_only}
    assert always == {"console-font", "mingetty", "agetty", "static-networking"}
    assert shared == {"dhcp-client", "network-manager", "connman"}


def test_file_systems_of_container(example: OperatingSystem) -> None:
    shared = FileSystemMapping("/home/me/src", "/src", writable=True)
    mappings = with_store_mapping([shared], STORE)
    container = containerized_operating_system(
        example, mappings, extra_file_systems=CONTAINER_FILE_SYSTEMS, store_dir=STORE
    )
    points = [fs.mount_point for fs in container.file_systems]
    assert points == [
        STORE,
        "/src",
        "/dev/pts",
        "/dev/shm",
        "/dev/mqueue",
        "/var/cache",
        "/",
    ]
    store, src = container.file_systems[:2]
    assert store.flags == ("bind-mount", "read-only") and store.needed_for_boot
    assert src.flags == ("bind-mount",) and src.needed_for_boot
    assert container.file_systems[-1] == DUMMY_ROOT_FILE_SYSTEM
    assert container.swap_devices == () and container.kernel == DUMMY_KERNEL


def test_store_mapping_comes_first_once() -> None:
    mappings = with_store_mapping(
        [FileSystemMapping("/a", "/a"), FileSystemMapping("/elsewhere", STORE, True)],
        STORE,
    )
    assert [(m.source, m.target, m.writable) for m in mappings] == [
        (STORE, STORE, False),
        ("/a", "/a", False),
    ]


def test_shared_network_maps_host_files_first(example: OperatingSystem) -> None:
    container = containerized_operating_system(
        example, with_store_mapping([], STORE), shared_network=True, store_dir=STORE
    )
    points = [fs.mount_point for fs in container.file_systems]
    assert points[:5] == [
        "/etc/resolv.conf",
        "/etc/nsswitch.conf",
        "/etc/services",
        "/etc/hosts",
        STORE,
    ]
    resolv = container.file_systems[0]
    assert "read-only" not in resolv.flags


def kinds(services: Any) -> list[str]:
    return [svc.kind.name for svc in services]


def test_tty_and_network_services_dropped(example: OperatingSystem) -> None:
    container = containerized_operating_system(example, store_dir=STORE)
    names = kinds(container.services)
    assert "mingetty" not in names and "static-networking" not in names
    assert {
        "log-collector",
        "http-server",
        "example-services",
        "dummy-networking",
    } <= set(names)
    init = [svc.name for svc in operating_system_init_services(container)]
    assert "term-tty1" not in init
    loopback = next(
        svc
        for svc in operating_system_init_services(container)
        if svc.name == "loopback"
    )
    assert loopback.provision == ("loopback",) and loopback.one_shot
    assert init.index("loopback") < init.index("httpd")


def test_network_managers_dropped_only_when_sharing() -> None:
    os_ = OperatingSystem(
        host_name="box",
        file_systems=[FileSystem("/dev/sda1", "/", "ext4")],
        services=[
            service(dhcp_client_service_type),
            service(network_manager_service_type),
            service(console_font_service_type),
            service(agetty_service_type),
            service(mingetty_service_type),
        ],
    )
    private = containerized_operating_system(os_, store_dir=STORE)
    assert kinds(private.services) == [
        "dhcp-client",
        "network-manager",
        "dummy-networking",
    ]
    shared = containerized_operating_system(os_, shared_network=True, store_dir=STORE)
    assert kinds(shared.services) == ["dummy-networking"]
    provision = [svc.provision for svc in operating_system_init_services(shared)]
    assert provision == [("loopback", "networking")]


def test_essential_services_of_container(example: OperatingSystem) -> None:
    container = containerized_operating_system(example, store_dir=STORE)
    essential = operating_system_essential_services(container)
    names = kinds(essential)
    assert "bare-metal" not in names and names.count("system") == 1
    assert "hosts" in names
    system = operating_system_directory(container)
    assert isinstance(system, FileUnion)
    assert sorted(dict(system.entries)) == [
        "activate",
        "boot",
        "etc",
        "kernel",
        "locale",
        "profile",
        "services.json",
    ]
    assert dict(system.entries)["kernel"] == DUMMY_KERNEL
    assert bare_metal_service_type in [
        svc.kind for svc in operating_system_essential_services(example)
    ]


def test_shared_network_drops_hosts_and_network_etc_entries(
    example: OperatingSystem,
) -> None:
    container = containerized_operating_system(
        example, shared_network=True, store_dir=STORE
    )
    assert hosts_service_type not in [
        svc.kind for svc in operating_system_essential_services(container)
    ]
    etc = dict(dict(operating_system_directory(container).entries)["etc"].entries)
    assert not set(NETWORK_ETC_ENTRIES) & set(etc)
    assert "hostname" in etc
    private = containerized_operating_system(example, store_dir=STORE)
    etc = dict(dict(operating_system_directory(private).entries)["etc"].entries)
    assert {"hosts", "nsswitch.conf", "services"} <= set(etc)


def test_original_system_is_unchanged(example: OperatingSystem) -> None:
    containerized_operating_system(example, store_dir=STORE)
    assert static_networking_service_type in [svc.kind for svc in example.services]
    assert any(fs.mount_point == "/" for fs in example.file_systems)
