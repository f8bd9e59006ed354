"""The init service type: the processes the init supervisor runs.

Mirrors Guix's ``shepherd-root-service-type`` and ``<shepherd-service>``
(``gnu/services/shepherd.scm``).  Services extend
:data:`init_service_type` with :class:`InitService` records; the folded
value, checked (each name provided once, each requirement provided,
no cycle) and put in start order, becomes the ``services.json`` entry of
the system directory, and a boot snippet replaces the boot process with
``init --spec services.json``: the supervisor of :mod:`system.init`, run
as PID 1 by a program importing that module.

``services.json`` grammar (parsed by :mod:`system.init_spec`)::

    {"services": [{"name": STR, "provision": [STR...],
                   "requirement": [STR...], "command": [STR...],
                   "one_shot": BOOL, "respawn": BOOL,
                   "environment": {STR: STR}, "log_file": STR,
                   "stop_signal": "SIGTERM", "user": STR (optional),
                   "readiness": READINESS (optional)}]}

listed in start order: each service after those it requires, the given
order kept otherwise.  ``READINESS`` is ``{"pid_file": PATH, "timeout":
SECONDS}`` or ``{"notify_fd": N, "timeout": SECONDS}``; the default,
``"spawned"``, is left out, and so is the ``readiness`` field of the writer
when no service declares one, so that systems without one keep their
derivations.
"""

from __future__ import annotations

import graphlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from derivations.file_like import computed_file, program_file
from derivations.gexp import Gexp, gexp, with_imported_modules
from system.base import boot_service_type, system_service_type
from system.init_spec import (
    SPAWNED,
    NotifyFdReadiness,
    PidFileReadiness,
    Problem,
    Readiness,
    parse_readiness,
    readiness_to_json,
)
from system.services import ServiceError, concatenate, service_extension, service_type

__all__ = [
    "InitService",
    "InitServiceError",
    "init_program",
    "init_service_type",
    "init_spec",
    "init_start_order",
    "spec_data",
]


class InitServiceError(ServiceError):
    """Report an inconsistent set of init services.

    :param name: the service (provision) at fault.
    """

    def __init__(self, name: str, message: str, hint: str) -> None:
        super().__init__(message, hint)
        self.name = name


@dataclass(frozen=True)
class InitService:
    """A process the init supervisor runs (Guix's ``shepherd-service``)."""

    provision: tuple[str, ...]
    """What it provides; the first is its name."""

    command: tuple[Any, ...]
    """Its argv: strings and file-like objects (their store paths)."""

    requirement: tuple[str, ...] = ()
    """What must have started before it."""

    one_shot: bool = False
    """Whether it runs once to completion instead of staying up."""

    respawn: bool = False
    """Whether to restart it when it exits."""

    environment: tuple[tuple[str, Any], ...] = ()
    """Its environment variables, as pairs (a mapping is accepted too)."""

    log_file: str | None = None
    """Where its output goes, ``/var/log/NAME.log`` by default."""

    stop_signal: str = "SIGTERM"
    """The signal that stops it."""

    user: str | None = None
    """The user it runs as, root by default."""

    readiness: Readiness | Mapping[str, Any] = SPAWNED
    """When a daemon is up for its dependents: ``"spawned"`` (the default),
    a :class:`~system.init_spec.PidFileReadiness` (Shepherd's ``#:pid-file``)
    or :class:`~system.init_spec.NotifyFdReadiness` (s6's notification fd);
    the spec's JSON object for either is accepted too."""

    documentation: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        environment: Any = self.environment
        if isinstance(environment, Mapping):
            environment = sorted(environment.items())
        object.__setattr__(self, "environment", tuple(tuple(kv) for kv in environment))
        object.__setattr__(self, "provision", tuple(self.provision))
        object.__setattr__(self, "requirement", tuple(self.requirement))
        object.__setattr__(self, "command", tuple(self.command))
        if not self.provision:
            raise InitServiceError(
                "", "an init service provides nothing", "give it a provision"
            )
        for name in self.provision:
            if not name or "/" in name or "\0" in name or name.strip() != name:
                raise InitServiceError(
                    name,
                    f"'{name}' is not an init service name",
                    "names are file names of logs: no '/', NUL or surrounding spaces",
                )
        if not self.command:
            raise InitServiceError(
                self.name,
                f"init service '{self.name}' has no command",
                "give it an argv",
            )
        object.__setattr__(self, "readiness", self._checked_readiness())

    def _checked_readiness(self) -> Readiness:
        """Return the readiness as a record, or raise naming what is wrong."""
        value: Any = self.readiness
        if isinstance(value, (PidFileReadiness, NotifyFdReadiness)):
            value = value.to_json()
        elif isinstance(value, Mapping):
            value = dict(value)
        readiness, problems = parse_readiness(value)
        if self.one_shot and readiness != SPAWNED:
            problems.append(
                Problem("readiness", "a one-shot service is ready when it exits 0")
            )
        if problems:
            raise InitServiceError(
                self.name,
                f"init service '{self.name}' has a bad readiness: "
                + "; ".join(f"{p.field}: {p.message}" for p in problems),
                'use "spawned", {"pid_file": PATH, "timeout": SECONDS} '
                'or {"notify_fd": N, "timeout": SECONDS} (daemons only)',
            )
        return readiness

    @property
    def name(self) -> str:
        """Return its name, the first thing it provides."""
        return self.provision[0]

    @property
    def log(self) -> str:
        """Return its log file."""
        return self.log_file or f"/var/log/{self.name}.log"


def init_start_order(services: Iterable[InitService]) -> list[InitService]:
    """Return ``services`` with each one after those it requires, keeping
    the given order otherwise.

    :raises InitServiceError: when a name is provided twice, a requirement
        is provided by no service, or services require each other.
    """
    items = list(services)
    provider: dict[str, InitService] = {}
    for svc in items:
        for name in svc.provision:
            if name in provider:
                raise InitServiceError(
                    name,
                    f"service '{name}' provided more than once",
                    "give each init service its own provision",
                )
            provider[name] = svc
    sorter: graphlib.TopologicalSorter[int] = graphlib.TopologicalSorter()
    for index, svc in enumerate(items):
        sorter.add(index)
        for requirement in svc.requirement:
            if requirement not in provider:
                raise InitServiceError(
                    svc.name,
                    f"service '{svc.name}' requires '{requirement}', "
                    "which is not provided by any service",
                    "add the service providing it, or drop the requirement",
                )
            sorter.add(index, items.index(provider[requirement]))
    return [items[index] for index in _stable_order(sorter, items)]


def _stable_order(
    sorter: graphlib.TopologicalSorter[int], items: Sequence[InitService]
) -> list[int]:
    """Return a topological order of indices, smallest ready index first."""
    try:
        sorter.prepare()
    except graphlib.CycleError as error:
        cycle = [items[index].name for index in error.args[1]]
        raise InitServiceError(
            cycle[0],
            "init services require each other: " + " -> ".join(f"'{n}'" for n in cycle),
            "break the cycle of requirements",
        ) from None
    order: list[int] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready())
        for index in ready:
            order.append(index)
            sorter.done(index)
    return order


_SPEC_FIELDS = (
    "name",
    "provision",
    "requirement",
    "command",
    "one_shot",
    "respawn",
    "environment",
    "log_file",
    "stop_signal",
    "user",
)

# Note: the writer below is hashed into every system's derivation; it is kept
# as is, and its `fields` gain "readiness" only when some service declares
# one: the rows of the others, one item shorter, end before it in `zip`.
_READINESS_FIELD = "readiness"

_SPEC_WRITER = """
import json

fields = $fields
services = []
for row in $rows:
    entry = dict(zip(fields, row))
    entry["environment"] = dict(entry["environment"])
    if entry["user"] is None:
        del entry["user"]
    services.append(entry)
with open($out, "w", encoding="utf-8") as file:
    json.dump({"services": services}, file, indent=2, sort_keys=True)
    file.write("\\n")
"""


def _spec_row(svc: InitService) -> list[Any]:
    """Return ``svc`` as the row the spec writer turns into JSON."""
    return [
        svc.name,
        list(svc.provision),
        list(svc.requirement),
        list(svc.command),
        svc.one_shot,
        svc.respawn,
        [[key, value] for key, value in svc.environment],
        svc.log,
        svc.stop_signal,
        svc.user,
        *_readiness_cell(svc),
    ]


def _readiness_cell(svc: InitService) -> list[object]:
    """Return the readiness item of ``svc``'s row: none for ``"spawned"``."""
    if svc.readiness == SPAWNED:
        return []
    assert not isinstance(svc.readiness, Mapping)
    return [readiness_to_json(svc.readiness)]


def _spec_fields(services: Sequence[InitService]) -> list[str]:
    """Return the fields of the spec writer's rows for ``services``."""
    fields = list(_SPEC_FIELDS)
    if any(svc.readiness != SPAWNED for svc in services):
        fields.append(_READINESS_FIELD)
    return fields


def init_spec(services: Iterable[InitService]) -> Any:
    """Return the ``services.json`` file of ``services``, in start order
    (see the module grammar); file-like objects in commands and
    environments become their store paths."""
    ordered = init_start_order(services)
    rows = [_spec_row(svc) for svc in ordered]
    return computed_file(
        "services.json",
        gexp(_SPEC_WRITER, fields=_spec_fields(ordered), rows=rows),
    )


def spec_data(services: Iterable[InitService]) -> dict[str, Any]:
    """Return the JSON data of ``services`` when no command or environment
    holds a file-like object (for inspection and tests)."""
    ordered = init_start_order(services)
    fields = _spec_fields(ordered)
    entries = []
    for row in map(_spec_row, ordered):
        entry = dict(zip(fields, row, strict=False))
        entry["environment"] = dict(entry["environment"])
        if entry["user"] is None:
            del entry["user"]
        entries.append(entry)
    data: dict[str, Any] = json.loads(json.dumps({"services": entries}))
    return data


_INIT_PROGRAM = with_imported_modules(
    ["system.init"],
    gexp("from system import init\n\nraise SystemExit(init.main(sys.argv[1:]))\n"),
)


def init_program() -> Any:
    """Return the init supervisor's program, ``init --spec FILE``."""
    return program_file("init", _INIT_PROGRAM)


def _init_boot_snippet(services: Sequence[InitService]) -> Gexp:
    """Return the boot snippet replacing the boot process with the init."""
    return gexp(
        "from system import activation\nactivation.exec_init($init, $spec)\n",
        init=init_program(),
        spec=init_spec(services),
    )


init_service_type = service_type(
    "init",
    [
        service_extension(
            system_service_type,
            lambda services: [("services.json", init_spec(services))],
        ),
        service_extension(boot_service_type, _init_boot_snippet),
    ],
    compose=concatenate,
    extend=lambda value, more: tuple(init_start_order([*value, *more])),
    default_value=(),
    description="Run the init supervisor as PID 1, with the services that "
    "extend this one (Guix's shepherd-root-service-type).",
)
