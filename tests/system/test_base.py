"""Tests of the core service types: init services and their spec, etc,
hosts, and the order of the boot program."""

from __future__ import annotations

from typing import Any

import pytest

from derivations.file_like import FileUnion, ProgramFile, plain_file
from derivations.gexp import expand_gexp
from system.base import (
    InitService,
    InitServiceError,
    activation_service_type,
    boot_service_type,
    cleanup_service_type,
    etc_service_type,
    hosts_service_type,
    init_service_type,
    init_start_order,
    local_host_entries,
    spec_data,
    system_service_type,
)
from system.services import (
    ServiceError,
    fold_services,
    instantiate_missing_services,
    service,
    simple_service,
)


def daemon(name: str, *requirement: str, **options: Any) -> InitService:
    return InitService(
        provision=(name,), requirement=requirement, command=(f"/bin/{name}",), **options
    )


def test_start_order_puts_requirements_first_and_keeps_order() -> None:
    services = [
        daemon("web", "net", "db"),
        daemon("db", "net"),
        daemon("net"),
        daemon("cron"),
    ]
    assert [s.name for s in init_start_order(services)] == ["net", "cron", "db", "web"]


def test_start_order_uses_any_provided_name() -> None:
    services = [
        daemon("web", "syslogd"),
        InitService(("log-collector", "syslogd"), ("/bin/log",)),
    ]
    assert [s.name for s in init_start_order(services)] == ["log-collector", "web"]


def test_provided_twice() -> None:
    with pytest.raises(InitServiceError, match="service 'net' provided more than once"):
        init_start_order([daemon("net"), InitService(("other", "net"), ("/bin/x",))])


def test_unknown_requirement() -> None:
    with pytest.raises(InitServiceError) as error:
        init_start_order([daemon("web", "db")])
    assert (
        str(error.value)
        == "service 'web' requires 'db', which is not provided by any service"
    )
    assert error.value.name == "web"


def test_requirement_cycle() -> None:
    with pytest.raises(InitServiceError, match="init services require each other"):
        init_start_order([daemon("a", "b"), daemon("b", "a")])


def test_spec_data_fields_and_defaults() -> None:
    data = spec_data(
        [
            daemon("db", one_shot=True, environment={"B": "2", "A": "1"}),
            daemon("web", "db", respawn=True, user="www", stop_signal="SIGINT"),
        ]
    )
    db, web = data["services"]
    assert db == {
        "name": "db",
        "provision": ["db"],
        "requirement": [],
        "command": ["/bin/db"],
        "one_shot": True,
        "respawn": False,
        "environment": {"A": "1", "B": "2"},
        "log_file": "/var/log/db.log",
        "stop_signal": "SIGTERM",
    }
    assert (web["user"], web["respawn"], web["stop_signal"]) == ("www", True, "SIGINT")


def test_init_service_needs_provision_and_command() -> None:
    with pytest.raises(InitServiceError, match="provides nothing"):
        InitService((), ("/bin/x",))
    with pytest.raises(InitServiceError, match="init service 'x' has no command"):
        InitService(("x",), ())
    with pytest.raises(InitServiceError, match="'a/b' is not an init service name"):
        InitService(("a/b",), ("/bin/x",))


def test_init_folds_extensions_in_order() -> None:
    services = [
        service(init_service_type),
        simple_service("a", init_service_type, [daemon("web", "db")]),
        simple_service("b", init_service_type, [daemon("db")]),
    ]
    folded = fold_services(instantiate_missing_services(services), init_service_type)
    assert [s.name for s in folded.value] == ["db", "web"]


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
        service(init_service_type, (daemon("web"),)),
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
