"""Tests of the init service type: start order, checks, and the spec data."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from builders.scheduler import realise
from derivations.derivation import Derivation
from derivations.file_like import computed_file
from derivations.gexp import gexp
from derivations.lowering import lower_object
from derivations.monad import run_with_store
from store.local import LocalStore
from system.init_services import (
    _SPEC_WRITER,
    InitService,
    InitServiceError,
    init_service_type,
    init_spec,
    init_start_order,
    spec_data,
)
from system.init_spec import NotifyFdReadiness, PidFileReadiness, parse_spec
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


# ---------------------------------------------------------------------------
# Readiness


def test_readiness_is_written_only_when_declared() -> None:
    data = spec_data(
        [
            daemon("plain"),
            daemon("forker", readiness={"pid_file": "/run/forker.pid"}),
            daemon("notifier", readiness=NotifyFdReadiness(4, 2)),
        ]
    )
    plain, forker, notifier = data["services"]
    assert "readiness" not in plain
    assert forker["readiness"] == {"pid_file": "/run/forker.pid", "timeout": 5.0}
    assert notifier["readiness"] == {"notify_fd": 4, "timeout": 2}
    assert "readiness" not in spec_data([daemon("plain")])["services"][0]


def test_readiness_as_mapping_or_record_is_the_same_service() -> None:
    as_mapping = daemon("a", readiness={"pid_file": "/run/a.pid", "timeout": 2})
    assert as_mapping == daemon("a", readiness=PidFileReadiness("/run/a.pid", 2.0))
    assert as_mapping.readiness == PidFileReadiness("/run/a.pid", 2.0)
    assert daemon("a").readiness == "spawned"


@pytest.mark.parametrize(
    ("readiness", "options", "expected"),
    [
        pytest.param(
            {"pid_file": "a.pid"},
            {},
            "expected an absolute file name",
            id="relative-pid-file",
        ),
        pytest.param(
            {"notify_fd": 2}, {}, "descriptor number of 3 or more", id="standard-fd"
        ),
        pytest.param("ready", {}, '"ready" is not a readiness', id="unknown-word"),
        pytest.param(
            {"notify_fd": 3}, {"one_shot": True}, "ready when it exits 0", id="one-shot"
        ),
    ],
)
def test_bad_readiness_is_an_error_naming_the_service(
    readiness: object, options: dict[str, Any], expected: str
) -> None:
    with pytest.raises(InitServiceError) as error:
        daemon("web", readiness=readiness, **options)
    assert str(error.value).startswith("init service 'web' has a bad readiness: ")
    assert expected in str(error.value)
    assert error.value.name == "web"


def test_built_spec_carries_readiness_to_the_init(store: LocalStore) -> None:
    services = [
        daemon("plain"),
        daemon("forker", "plain", readiness={"pid_file": "/run/forker.pid"}),
        daemon("notifier", readiness=NotifyFdReadiness(3, 2.5)),
    ]
    drv = run_with_store(store, lower_object(init_spec(services)))
    assert isinstance(drv, Derivation)
    realise(store, [drv.path])
    text = Path(store.physical(drv.output_path())).read_text()

    entries = {entry["name"]: entry for entry in json.loads(text)["services"]}
    assert "readiness" not in entries["plain"]
    parsed = {s.name: s.readiness for s in parse_spec(text).services}
    assert parsed == {
        "plain": "spawned",
        "forker": PidFileReadiness("/run/forker.pid", 5.0),
        "notifier": NotifyFdReadiness(3, 2.5),
    }


def test_services_without_readiness_keep_their_spec_derivation(
    store: LocalStore,
) -> None:
    """The spec of services declaring no readiness lowers as it did before
    readiness existed: same writer, same ten fields, same rows."""
    services = [daemon("db", one_shot=True), daemon("web", "db", respawn=True)]
    fields = ["name", "provision", "requirement", "command", "one_shot", "respawn", "environment", "log_file", "stop_signal", "user"]  # fmt: skip
    # fmt: off
    rows = [
        ["db", ["db"], [], ["/bin/db"], True, False, [], "/var/log/db.log", "SIGTERM", None],
        ["web", ["web"], ["db"], ["/bin/web"], False, True, [], "/var/log/web.log", "SIGTERM", None],
    ]
    # fmt: on
    before = computed_file(
        "services.json", gexp(_SPEC_WRITER, fields=fields, rows=rows)
    )

    lowered = run_with_store(store, lower_object(init_spec(services)))
    reference = run_with_store(store, lower_object(before))
    assert isinstance(lowered, Derivation) and isinstance(reference, Derivation)
    assert lowered.path == reference.path
    writer = hashlib.sha256(_SPEC_WRITER.encode()).hexdigest()
    assert writer == "1233bc15342ff3ac38457e90d1ad78960abd88cbb27dad4b3169220a6bf39c52"
