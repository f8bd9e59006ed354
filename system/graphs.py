"""The service graphs of an operating system, for people to look at.

Mirrors ``guix system extension-graph`` and ``guix system shepherd-graph``
(``export-extension-graph`` and ``export-shepherd-graph`` in
``guix/scripts/system.scm``), as pure functions from an
:class:`~system.operating_system.OperatingSystem` to a :class:`ServiceGraph`:

:func:`extension_graph`
    one node per service of the system (its own, the essential ones and the
    instantiated missing targets, see
    :func:`~system.operating_system.operating_system_services`), and an edge
    ``A -> B`` when A extends B, so that every path ends at the ``system``
    service.  A node's id is its type's name, ``NAME#2``, ``NAME#3``... for
    later services whose type is named alike; its label adds the value when
    it is a string or a number, as Guix's ``service-node-label``.
    Unlike Guix, which walks back from the ``system`` service, a service
    reaching no ``system`` service is shown too.

:func:`init_graph`
    one node per init service (:class:`~system.init_services.InitService`)
    once the services are folded, its id being its name and its label what
    it provides; an edge ``A -> B`` when A requires something B provides.

Both are sorted (nodes by id, edges by their ends), so that the same system
always gives the same text.  :func:`to_dot` writes Graphviz's DOT language,
quoting as :func:`derivations.graph.to_dot` does::

    digraph NAME {
      node [shape=box];
      "ID" [label="LABEL"];          (one per node, by id)
      "FROM" -> "TO";                (one per edge, sorted)
    }

where a quoted string escapes ``\\``, ``"`` and new lines; :func:`to_json`
gives ``{"name": NAME, "nodes": [{"id", "label"}...], "edges": [{"from",
"to"}...]}``, in the same order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from system.file_systems import FileSystem
from system.operating_system import (
    OperatingSystem,
    operating_system_init_services,
    operating_system_services,
)
from system.services import Service, service_back_edges

__all__ = [
    "GraphNode",
    "ServiceGraph",
    "extension_graph",
    "init_graph",
    "service_node_label",
    "to_dot",
    "to_json",
]


@dataclass(frozen=True)
class GraphNode:
    """A node of a service graph."""

    id: str
    """Its identifier, unique in the graph."""

    label: str
    """What a drawing shows of it."""


@dataclass(frozen=True)
class ServiceGraph:
    """A directed graph of services, sorted (see the module docstring)."""

    name: str
    """What it shows: ``extensions`` or ``init``."""

    nodes: tuple[GraphNode, ...]
    """Its nodes, by id."""

    edges: tuple[tuple[str, str], ...]
    """Its edges as ``(from id, to id)``, sorted, each once."""


def _sorted_graph(
    name: str, nodes: Sequence[GraphNode], edges: set[tuple[str, str]]
) -> ServiceGraph:
    """Return the graph of ``nodes`` and ``edges``, in the stable order."""
    return ServiceGraph(
        name, tuple(sorted(nodes, key=lambda node: node.id)), tuple(sorted(edges))
    )


# ---------------------------------------------------------------------------
# The extension graph


def service_node_label(svc: Service) -> str:
    """Return the label of ``svc``: its type's name, followed by its value
    when that is a string or a number, or by the mount point of a file
    system (Guix's ``service-node-label``)."""
    value = svc.value
    if isinstance(value, FileSystem):
        return f"{svc.kind.name} {value.mount_point}"
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return f"{svc.kind.name} {value}"
    return svc.kind.name


def _service_ids(services: Sequence[Service]) -> dict[int, str]:
    """Return the node id of each service of ``services``, by ``id()``:
    its type's name, numbered from the second service of that name on."""
    seen: dict[str, int] = {}
    ids: dict[int, str] = {}
    for svc in services:
        count = seen[svc.kind.name] = seen.get(svc.kind.name, 0) + 1
        ids[id(svc)] = svc.kind.name if count == 1 else f"{svc.kind.name}#{count}"
    return ids


def extension_graph(os_: OperatingSystem) -> ServiceGraph:
    """Return the extension graph of the operating system ``os_``: an edge
    goes from each service to each service it extends (Guix's
    ``export-extension-graph``).

    :raises ServiceError: an extension finds no instance of its target,
        or several, as when the system is folded.
    """
    services = operating_system_services(os_)
    ids = _service_ids(services)
    nodes = [GraphNode(ids[id(svc)], service_node_label(svc)) for svc in services]

    extenders = service_back_edges(services)
    edges = {
        (ids[id(extender)], ids[id(target)])
        for target in services
        for extender in extenders(target)
    }
    return _sorted_graph("extensions", nodes, edges)


# ---------------------------------------------------------------------------
# The init graph


def init_graph(os_: OperatingSystem) -> ServiceGraph:
    """Return the graph of the init services of the operating system
    ``os_``: an edge goes from each init service to those providing its
    requirements (Guix's ``export-shepherd-graph``).

    :raises ServiceError: the services cannot be folded, or the init
        services are inconsistent (a name provided twice, a requirement
        nobody provides, a cycle).
    """
    services = operating_system_init_services(os_)
    provider = {name: svc.name for svc in services for name in svc.provision}
    nodes = [GraphNode(svc.name, " ".join(svc.provision)) for svc in services]

    edges = {
        (svc.name, provider[requirement])
        for svc in services
        for requirement in svc.requirement
    }
    return _sorted_graph("init", nodes, edges)


# ---------------------------------------------------------------------------
# Writers


def _quote(text: str) -> str:
    """Return ``text`` as a DOT quoted string."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def to_dot(graph: ServiceGraph) -> str:
    """Return ``graph`` in Graphviz's DOT language (see the module
    docstring), ending with a new line."""
    lines = [f"digraph {_quote(graph.name)} {{", "  node [shape=box];"]
    for node in graph.nodes:
        lines.append(f"  {_quote(node.id)} [label={_quote(node.label)}];")
    for source, target in graph.edges:
        lines.append(f"  {_quote(source)} -> {_quote(target)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_json(graph: ServiceGraph) -> dict[str, Any]:
    """Return ``graph`` as JSON data (see the module docstring)."""
    return {
        "name": graph.name,
        "nodes": [{"id": node.id, "label": node.label} for node in graph.nodes],
        "edges": [{"from": source, "to": target} for source, target in graph.edges],
    }
