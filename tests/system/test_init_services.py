"""Tests of the init service type: start order, checks, and the spec data."""

from __future__ import annotations

from typing import Any

import pytest

from system.init_services import (
    InitService,
    InitServiceError,
    init_service_type,
    init_start_order,
    spec_data,
)
from system.services import (
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
