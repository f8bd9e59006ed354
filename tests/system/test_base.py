"""Tests of the core service types: etc, hosts, and the order of the boot
program."""

from __future__ import annotations

import pytest

from derivations.file_like import FileUnion, ProgramFile, plain_file
from derivations.gexp import expand_gexp
from system.base import (
    activation_service_type,
    boot_service_type,
    cleanup_service_type,
    etc_service_type,
    hosts_service_type,
    local_host_entries,
    system_service_type,
)
from system.init_services import InitService, init_service_type
from system.services import (
    ServiceError,
    fold_services,
    instantiate_missing_services,
    service,
    simple_service,
)


def test_etc_rejects_duplicate_entries() -> None:
    services = [
        service(etc_service_type, (("motd", plain_file("motd", "hi\n")),)),
        simple_service(
            "more", etc_service_type, [("motd", plain_file("motd", "again\n"))]
        ),
    ]
    with pytest.raises(ServiceError, match="duplicate 'motd' entry for /etc"):
        fold_services(instantiate_missing_services(services), etc_service_type)


def test_hosts_entries_reach_etc() -> None:
    services = [
        service(etc_service_type),
        service(hosts_service_type, local_host_entries("box")),
    ]
    entries = dict(
        fold_services(instantiate_missing_services(services), etc_service_type).value
    )
    assert entries["hosts"].content == "127.0.0.1 localhost box\n::1 localhost box\n"


def test_boot_program_runs_cleanup_activation_init_in_order() -> None:
    services = [
        service(system_service_type),
        service(boot_service_type),
        service(cleanup_service_type),
        service(activation_service_type),
        service(init_service_type, (InitService(("web",), ("/bin/web",)),)),
    ]
    system = fold_services(services, system_service_type).value
    assert isinstance(system, FileUnion)
    entries = dict(system.entries)
    assert sorted(entries) == ["activate", "boot", "services.json"]
    boot = entries["boot"]
    assert isinstance(boot, ProgramFile)
    code = expand_gexp(boot.gexp, lambda item: f"<{type(item.thing).__name__}>")
    cleanup = code.index("activation.cleanup()")
    activate = code.index("activation.run_activation(")
    init = code.index("activation.exec_init(")
    assert cleanup < activate < init
    assert "system.activation" in boot.gexp.modules
