"""The service specification the init reads, and the order it starts services in.

The operating-system layer lowers a system's services to one JSON file, the
*init spec*, and runs :mod:`system.init` on it as PID 1.  This module parses
and validates that file and computes the start order; it runs inside
containers, so it imports only the standard library, :mod:`store.errors` and
(lazily) networkx.

Grammar (JSON)::

    spec     = { "services": [ service, ... ] }
    service  = { "name":         STRING,             required
                 "command":      [ STRING, ... ],    required, non-empty
                 "provision":    [ STRING, ... ],    default []
                 "requirement":  [ STRING, ... ],    default []
                 "one_shot":     BOOL,               default false
                 "respawn":      BOOL,               default false
                 "environment":  { STRING: STRING }, default {}
                 "log_file":     STRING | null,      default LOG_DIR/NAME.log
                 "stop_signal":  STRING,             default "SIGTERM"
                 "stop_timeout": NUMBER,             default 3 (seconds)
                 "directory":    STRING,             default "/"
                 "user":         STRING | null,      default null (init's user)
                 "readiness":    readiness }         default "spawned"
    readiness = "spawned"
              | { "pid_file": STRING, "timeout": NUMBER }    timeout default 5
              | { "notify_fd": INT,   "timeout": NUMBER }    timeout default 5

A service provides its name and every name of its ``provision``; each name
of its ``requirement`` must be provided by exactly one service.  A
``log_file`` that is relative is taken under the init's log directory;
``stop_signal`` is a signal name (``SIGTERM``, ``SIGINT``, ``SIGHUP``...);
``directory`` is absolute.  A one-shot service runs to completion (exit 0)
before its dependents start and cannot respawn.  A daemon is up, and its
dependents may start, according to its ``readiness``:

- ``"spawned"``: once it has been spawned;
- ``pid_file`` (Shepherd's ``#:pid-file`` and ``#:pid-file-timeout``): once
  that file (an absolute name) exists and names a live process, which is
  then the one supervised and stopped, for daemons that fork;
- ``notify_fd`` (s6's ``notification-fd``): once the daemon has written a
  newline to that descriptor (3 or above) of its own.

A daemon not ready within ``timeout`` seconds has failed.  Unknown keys are
errors, so that a misspelt ``requirements`` cannot silently drop a
dependency.

Like Shepherd's, the start order is a topological order of the requirement
graph (an edge from the provider to each dependent); among services free to
start, the one listed first in the spec starts first.  Every problem of a
spec is reported at once, each naming its field, as ``services[1].command``.
"""

from __future__ import annotations

import json
import math
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from store.errors import PyguixError

__all__ = [
    "InitSpec",
    "InitSpecError",
    "NotifyFdReadiness",
    "PidFileReadiness",
    "Problem",
    "Readiness",
    "ServiceGraphError",
    "ServiceSpec",
    "load_spec",
    "parse_readiness",
    "parse_spec",
    "providers_of",
    "readiness_to_json",
    "start_order",
]

DEFAULT_STOP_TIMEOUT = 3.0

DEFAULT_READY_TIMEOUT = 5.0
"""Seconds a daemon has to become ready (Shepherd's ``default-pid-file-timeout``)."""

SPAWNED = "spawned"

_Report = Callable[[str, str], None]
"""Records a problem: the key within the service, and the message."""

_SERVICE_KEYS = (
    "name",
    "command",
    "provision",
    "requirement",
    "one_shot",
    "respawn",
    "environment",
    "log_file",
    "stop_signal",
    "stop_timeout",
    "directory",
    "user",
    "readiness",
)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an init spec."""

    field: str
    """Where it is, as ``services[2].requirement`` (empty for the whole file)."""

    message: str
    """What is wrong and what was expected."""


class InitSpecError(PyguixError):
    """Report that an init spec is unreadable or invalid.

    :param path: the spec file, as given.
    :param problems: every problem found, at least one.
    """

    def __init__(
        self, path: str, problems: Sequence[Problem], hint: str | None = None
    ) -> None:
        assert problems, "an InitSpecError needs a problem"
        lines = [f"{p.field}: {p.message}" if p.field else p.message for p in problems]
        if len(lines) == 1:
            message = f"invalid init spec '{path}': {lines[0]}"
        else:
            listing = "".join(f"\n  {line}" for line in lines)
            message = f"invalid init spec '{path}' ({len(lines)} problems):{listing}"
        super().__init__(message, hint)
        self.path = path
        self.problems = tuple(problems)
        self.field = problems[0].field


class ServiceGraphError(InitSpecError):
    """Report an unknown requirement, a name provided twice, or a cycle.

    :param services: the names of the services involved, in spec order.
    """

    def __init__(
        self,
        path: str,
        problems: Sequence[Problem],
        services: Sequence[str],
        hint: str | None = None,
    ) -> None:
        super().__init__(path, problems, hint)
        self.services = tuple(services)


@dataclass(frozen=True)
class PidFileReadiness:
    """A daemon is ready once its pid file names a live process."""

    pid_file: str
    """The file's absolute name; a stale one is removed before each start."""

    timeout: float = DEFAULT_READY_TIMEOUT
    """Seconds the daemon has, from its spawning, to become ready."""

    def to_json(self) -> dict[str, object]:
        """Return this readiness as its spec value."""
        return {"pid_file": self.pid_file, "timeout": self.timeout}


@dataclass(frozen=True)
class NotifyFdReadiness:
    """A daemon is ready once it has written a newline to a descriptor (s6)."""

    notify_fd: int
    """The descriptor number, in the daemon, of the notification pipe."""

    timeout: float = DEFAULT_READY_TIMEOUT
    """Seconds the daemon has, from its spawning, to become ready."""

    def to_json(self) -> dict[str, object]:
        """Return this readiness as its spec value."""
        return {"notify_fd": self.notify_fd, "timeout": self.timeout}


Readiness = str | PidFileReadiness | NotifyFdReadiness
"""How a daemon tells it is up: :data:`SPAWNED` or one of the records."""


@dataclass(frozen=True)
class ServiceSpec:
    """One service as the init runs it (a Shepherd service, lowered)."""

    name: str
    """The service's name, also its first provision."""

    command: tuple[str, ...]
    """The argument vector; ``command[0]`` is looked up in ``PATH``."""

    provision: tuple[str, ...] = ()
    """Other names this service provides."""

    requirement: tuple[str, ...] = ()
    """Names that must be provided (and started) before this service starts."""

    one_shot: bool = False
    """Run to completion instead of staying up."""

    respawn: bool = False
    """Start the daemon again when it exits, within the init's rate limit."""

    environment: Mapping[str, str] = field(default_factory=dict)
    """Variables added to (or replacing those of) the init's environment."""

    log_file: str | None = None
    """Where standard output and error are appended; ``None`` for the default."""

    stop_signal: int = signal.SIGTERM
    """The signal that asks the service to stop."""

    stop_timeout: float = DEFAULT_STOP_TIMEOUT
    """Seconds to wait after ``stop_signal`` before ``SIGKILL``."""

    directory: str = "/"
    """The working directory."""

    user: str | None = None
    """The account to run as, or ``None`` for the init's own."""

    readiness: Readiness = SPAWNED
    """When the daemon counts as up: :data:`SPAWNED` or a readiness record."""

    @property
    def provides(self) -> tuple[str, ...]:
        """Return every name this service provides: its name, then its provision."""
        return tuple(dict.fromkeys((self.name, *self.provision)))


@dataclass(frozen=True)
class InitSpec:
    """A parsed init spec: the services, in the order the file lists them."""

    path: str
    """The file it came from (for messages)."""

    services: tuple[ServiceSpec, ...]
    """The services, in file order."""


# ---------------------------------------------------------------------------
# Parsing


def load_spec(path: str) -> InitSpec:
    """Read and validate the init spec at ``path``.

    :raises InitSpecError: the file is unreadable, not JSON, or invalid.
    """
    try:
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise InitSpecError(path, [Problem("", f"cannot read it: {reason}")]) from error
    return parse_spec(text, path)


def parse_spec(text: str, path: str = "<string>") -> InitSpec:
    """Parse the JSON text of an init spec and validate every service.

    :param path: the file name, used in messages only.
    :raises InitSpecError: naming each bad field.
    """
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise InitSpecError(
            path,
            [
                Problem(
                    "",
                    f"not JSON: {error.msg} at line {error.lineno} column {error.colno}",
                )
            ],
            "the init spec is a JSON object with a 'services' list",
        ) from error

    problems: list[Problem] = []
    entries = _services_list(document, problems)
    services = [
        _parse_service(entry, f"services[{i}]", problems)
        for i, entry in enumerate(entries)
    ]
    _check_unique_names(services, problems)
    if problems:
        raise InitSpecError(path, problems)
    return InitSpec(path, tuple(s for s in services if s is not None))


def _services_list(document: object, problems: list[Problem]) -> list[object]:
    if not isinstance(document, dict):
        problems.append(Problem("", "expected a JSON object with a 'services' list"))
        return []
    for key in document:
        if key != "services":
            problems.append(
                Problem(str(key), "unknown key; the only key is 'services'")
            )
    services = document.get("services")
    if not isinstance(services, list):
        problems.append(Problem("services", "expected a list of service objects"))
        return []
    return services


def _parse_service(
    entry: object, where: str, problems: list[Problem]
) -> ServiceSpec | None:
    if not isinstance(entry, dict):
        problems.append(Problem(where, "expected a service object"))
        return None
    before = len(problems)
    for key in entry:
        if key not in _SERVICE_KEYS:
            known = ", ".join(_SERVICE_KEYS)
            problems.append(
                Problem(f"{where}.{key}", f"unknown key (known keys: {known})")
            )

    def bad(key: str, message: str) -> None:
        problems.append(Problem(f"{where}.{key}", message))

    name = _name(entry.get("name"), "name", bad)
    command = _strings(entry.get("command"), "command", bad, required=True)
    provision = _strings(entry.get("provision", []), "provision", bad)
    requirement = _strings(entry.get("requirement", []), "requirement", bad)
    one_shot = _boolean(entry.get("one_shot", False), "one_shot", bad)
    respawn = _boolean(entry.get("respawn", False), "respawn", bad)
    if one_shot and respawn:
        bad("respawn", "a one-shot service cannot respawn")
    environment = _environment(entry.get("environment", {}), bad)
    log_file = _optional_string(entry.get("log_file"), "log_file", bad)
    stop_signal = _signal(entry.get("stop_signal", "SIGTERM"), bad)
    stop_timeout = _timeout(entry.get("stop_timeout", DEFAULT_STOP_TIMEOUT), bad)
    directory = _directory(entry.get("directory", "/"), bad)
    user = _optional_string(entry.get("user"), "user", bad)
    readiness = _readiness(entry.get("readiness", SPAWNED), bad)
    if one_shot and readiness != SPAWNED:
        bad("readiness", "a one-shot service is ready when it exits 0; drop it")
    if len(problems) > before:
        return None
    return ServiceSpec(
        name=name,
        command=tuple(command),
        provision=tuple(provision),
        requirement=tuple(requirement),
        one_shot=one_shot,
        respawn=respawn,
        environment=environment,
        log_file=log_file,
        stop_signal=stop_signal,
        stop_timeout=stop_timeout,
        directory=directory,
        user=user,
        readiness=readiness,
    )


# ---------------------------------------------------------------------------
# Field checks: each returns the value (or a placeholder) and calls `bad`


def _name(value: object, key: str, bad: _Report) -> str:
    if not isinstance(value, str) or not value:
        bad(key, "expected a non-empty string")
        return ""
    if any(c in value for c in "/\0") or value != value.strip() or value in (".", ".."):
        bad(key, f"'{value}' is not a service name (no '/', NUL or surrounding spaces)")
    return value


def _strings(
    value: object, key: str, bad: _Report, required: bool = False
) -> list[str]:
    ok = isinstance(value, list) and all(isinstance(v, str) and v for v in value)
    if not ok or (required and not value):
        adjective = "non-empty " if required else ""
        bad(key, f"expected a {adjective}list of non-empty strings")
        return []
    assert isinstance(value, list)
    return value


def _boolean(value: object, key: str, bad: _Report) -> bool:
    if not isinstance(value, bool):
        bad(key, "expected true or false")
        return False
    return value


def _optional_string(value: object, key: str, bad: _Report) -> str | None:
    if value is not None and (not isinstance(value, str) or not value):
        bad(key, "expected a non-empty string or null")
        return None
    return value


def _environment(value: object, bad: _Report) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and k and "=" not in k and isinstance(v, str)
        for k, v in value.items()
    ):
        bad(
            "environment", "expected an object of NAME: VALUE strings (no '=' in names)"
        )
        return {}
    return dict(value)


def _signal(value: object, bad: _Report) -> int:
    if isinstance(value, str):
        name = value if value.startswith("SIG") else f"SIG{value}"
        try:
            return int(signal.Signals[name])
        except KeyError:
            pass
    bad("stop_signal", f'{json.dumps(value)} is not a signal name (as "SIGTERM")')
    return signal.SIGTERM


def _timeout(
    value: object,
    bad: _Report,
    key: str = "stop_timeout",
    default: float = DEFAULT_STOP_TIMEOUT,
) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        bad(key, "expected a positive number of seconds")
        return default
    return float(value)


def _readiness(value: object, bad: _Report) -> Readiness:
    if value == SPAWNED:
        return SPAWNED
    kind = _readiness_kind(value)
    if kind is None:
        shown = json.dumps(value, default=repr)
        bad(
            "readiness",
            f'{shown} is not a readiness: expected "spawned", {{"pid_file": PATH, '
            '"timeout": SECONDS} or {"notify_fd": N, "timeout": SECONDS}',
        )
        return SPAWNED

    assert isinstance(value, Mapping)
    timeout = _timeout(
        value.get("timeout", DEFAULT_READY_TIMEOUT),
        bad,
        "readiness.timeout",
        DEFAULT_READY_TIMEOUT,
    )
    target = value[kind]
    if kind == "pid_file":
        if isinstance(target, str) and target.startswith("/"):
            return PidFileReadiness(target, timeout)
        bad("readiness.pid_file", "expected an absolute file name")
    elif isinstance(target, int) and not isinstance(target, bool) and target >= 3:
        return NotifyFdReadiness(target, timeout)
    else:
        bad(
            "readiness.notify_fd",
            "expected a descriptor number of 3 or more (0-2 are the standard streams)",
        )
    return SPAWNED


def _readiness_kind(value: object) -> str | None:
    """Return the key naming the readiness object ``value``, or ``None``."""
    if not isinstance(value, Mapping):
        return None
    for kind in ("pid_file", "notify_fd"):
        if kind in value and set(value) <= {kind, "timeout"}:
            return kind
    return None


def parse_readiness(value: object) -> tuple[Readiness, list[Problem]]:
    """Parse a readiness as written in a spec (``"spawned"`` or an object).

    :return: the readiness (:data:`SPAWNED` when invalid) and every problem
        found, each naming its field under ``readiness``.
    """
    problems: list[Problem] = []
    readiness = _readiness(
        value, lambda key, message: problems.append(Problem(key, message))
    )
    return readiness, problems


def readiness_to_json(readiness: Readiness) -> object:
    """Return ``readiness`` as its spec value: ``"spawned"`` or an object."""
    if isinstance(readiness, (PidFileReadiness, NotifyFdReadiness)):
        return readiness.to_json()
    return readiness


def _directory(value: object, bad: _Report) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        bad("directory", "expected an absolute directory name")
        return "/"
    return value


def _check_unique_names(
    services: list[ServiceSpec | None], problems: list[Problem]
) -> None:
    seen: dict[str, int] = {}
    for index, service in enumerate(services):
        if service is None:
            continue
        if service.name in seen:
            problems.append(
                Problem(
                    f"services[{index}].name",
                    f"service '{service.name}' is already defined by services[{seen[service.name]}]",
                )
            )
        seen.setdefault(service.name, index)


# ---------------------------------------------------------------------------
# The requirement graph


def start_order(spec: InitSpec) -> tuple[str, ...]:
    """Return the service names in an order that starts providers first.

    Mirrors Shepherd's start of a service's requirements before it; ties are
    broken by the order of the spec.

    :raises ServiceGraphError: a requirement no service provides, a name
        provided by two services, or a requirement cycle (naming its services).
    :raises PyguixError: networkx is missing.
    """
    try:
        import networkx as nx
    except ImportError as error:
        raise PyguixError(
            f"the init cannot import networkx: {error}",
            "put networkx on the sys.path of the Python that runs the init",
        ) from error

    providers = _providers(spec)
    graph: Any = nx.DiGraph()
    index = {s.name: i for i, s in enumerate(spec.services)}
    graph.add_nodes_from(index)
    for service in spec.services:
        for name in service.requirement:
            graph.add_edge(providers[name], service.name)

    try:
        cycle = nx.find_cycle(graph)
    except nx.NetworkXNoCycle:
        return tuple(nx.lexicographical_topological_sort(graph, key=index.__getitem__))
    names = [edge[0] for edge in cycle]
    loop = " -> ".join(f"'{n}'" for n in [*names, names[0]])
    first = min(names, key=index.__getitem__)
    raise ServiceGraphError(
        spec.path,
        [
            Problem(
                f"services[{index[first]}].requirement", f"requirement cycle: {loop}"
            )
        ],
        sorted(set(names), key=index.__getitem__),
        "a service cannot require, even indirectly, what it provides",
    )


def providers_of(spec: InitSpec) -> dict[str, str]:
    """Return the map of each provided name to the service providing it.

    :raises ServiceGraphError: as :func:`start_order`, for all but cycles.
    """
    return _providers(spec)


def _providers(spec: InitSpec) -> dict[str, str]:
    problems: list[Problem] = []
    involved: list[str] = []
    providers: dict[str, str] = {}
    for index, service in enumerate(spec.services):
        for name in service.provides:
            other = providers.setdefault(name, service.name)
            if other != service.name:
                problems.append(
                    Problem(
                        f"services[{index}].provision",
                        f"'{name}' is provided by both '{other}' and '{service.name}'",
                    )
                )
                involved += [other, service.name]

    for index, service in enumerate(spec.services):
        for name in service.requirement:
            if name not in providers:
                problems.append(
                    Problem(
                        f"services[{index}].requirement",
                        f"service '{service.name}' requires '{name}', which no service provides",
                    )
                )
                involved.append(service.name)
    if problems:
        order = {s.name: i for i, s in enumerate(spec.services)}
        raise ServiceGraphError(
            spec.path, problems, sorted(set(involved), key=order.__getitem__)
        )
    return providers
