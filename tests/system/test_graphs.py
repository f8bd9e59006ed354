"""Tests of the service graphs: the extension graph of the example system
ends at the ``system`` service and shows every service, the init graph
follows the requirements (aliases included), both are the same text
whatever the order of the services, and the writers quote what they must."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable

import pytest

from derivations.file_like import plain_file
from fixtures.os import operating_system as example
from system.base import etc_service_type
from system.file_systems import FileSystem
from system.graphs import (
    GraphNode,
    ServiceGraph,
    extension_graph,
    init_graph,
    service_node_label,
    to_dot,
    to_json,
)
from system.init_services import InitService, InitServiceError, init_service_type
from system.operating_system import (
    OperatingSystem,
    operating_system_init_services,
    operating_system_services,
)
from system.servers import log_collector_service_type
from system.services import (
    MissingTargetServiceError,
    Service,
    service,
    service_extension,
    service_type,
    simple_service,
)

ROOT = FileSystem(device="none", mount_point="/", type="tmpfs")


def small_os(*services: Service) -> OperatingSystem:
    return OperatingSystem(
        host_name="small", file_systems=(ROOT,), services=tuple(services)
    )


def reaches(graph: ServiceGraph, start: str, goal: str) -> bool:
    successors: dict[str, set[str]] = {}
    for source, target in graph.edges:
        successors.setdefault(source, set()).add(target)
    seen, stack = {start}, [start]
    while stack:
        node = stack.pop()
        if node == goal:
            return True
        for following in successors.get(node, set()) - seen:
            seen.add(following)
            stack.append(following)
    return False


# ---------------------------------------------------------------------------
# The extension graph


def test_every_service_of_the_example_is_a_node() -> None:
    graph = extension_graph(example)

    names = sorted(svc.kind.name for svc in operating_system_services(example))
    assert [node.id for node in graph.nodes] == names
    for expected in ("http-server", "example-services", "init", "etc", "system"):
        assert expected in names


def test_the_system_service_is_the_only_sink() -> None:
    graph = extension_graph(example)

    sources = {source for source, _ in graph.edges}
    sinks = [node.id for node in graph.nodes if node.id not in sources]
    assert sinks == ["system"]
    for node in graph.nodes:
        assert reaches(graph, node.id, "system"), node.id


def test_edges_are_the_extensions() -> None:
    services = operating_system_services(example)

    expected = {
        (svc.kind.name, extension.target.name)
        for svc in services
        for extension in svc.kind.extensions
    }
    graph = extension_graph(example)
    assert set(graph.edges) == expected
    assert len(graph.edges) == len(expected)
    assert ("example-services", "init") in graph.edges
    assert ("init", "system") in graph.edges
    assert ("init", "boot") in graph.edges


def test_labels_show_simple_values() -> None:
    labels = {node.id: node.label for node in extension_graph(example).nodes}

    assert labels["host-name"] == "host-name pyguix-example"
    assert labels["http-server"] == "http-server"
    fs_type = service_type("mount", default_value=None)
    assert service_node_label(service(fs_type, ROOT)) == "mount /"
    assert service_node_label(service(fs_type, 8080)) == "mount 8080"
    assert service_node_label(service(fs_type, True)) == "mount"


def test_services_named_alike_get_numbered_ids() -> None:
    motd = plain_file("motd", "hi\n")
    first = simple_service("extra-etc", etc_service_type, [("motd", motd)])
    second = simple_service("extra-etc", etc_service_type, [("issue", motd)])

    graph = extension_graph(small_os(first, second))

    ids = [node.id for node in graph.nodes]
    assert "extra-etc" in ids and "extra-etc#2" in ids
    assert ("extra-etc", "etc") in graph.edges
    assert ("extra-etc#2", "etc") in graph.edges


def test_a_missing_target_is_the_folds_error() -> None:
    lonely = service_type("lonely")
    needy = service_type(
        "needy", [service_extension(lonely, lambda x: x)], default_value=1
    )

    with pytest.raises(MissingTargetServiceError) as raised:
        extension_graph(small_os(service(needy)))
    assert "no target of type 'lonely' for service 'needy'" in str(raised.value)


# ---------------------------------------------------------------------------
# The init graph


def test_init_edges_are_the_requirements() -> None:
    services = operating_system_init_services(example)
    provider = {name: svc.name for svc in services for name in svc.provision}

    graph = init_graph(example)

    assert [node.id for node in graph.nodes] == sorted(svc.name for svc in services)
    expected = {
        (svc.name, provider[requirement])
        for svc in services
        for requirement in svc.requirement
    }
    assert set(graph.edges) == expected
    assert graph.edges == (("heartbeat", "log-collector"), ("httpd", "loopback"))
    labels = {node.id: node.label for node in graph.nodes}
    assert labels["log-collector"] == "log-collector syslogd"


def test_a_requirement_on_an_alias_points_at_its_provider() -> None:
    user = simple_service(
        "user",
        init_service_type,
        [InitService(provision=("reader",), requirement=("syslogd",), command=("x",))],
    )
    graph = init_graph(small_os(service(log_collector_service_type), user))

    assert graph.edges == (("reader", "log-collector"),)


def test_an_unprovided_requirement_is_an_init_error() -> None:
    user = simple_service(
        "user",
        init_service_type,
        [InitService(provision=("a",), requirement=("nobody",), command=("x",))],
    )

    with pytest.raises(InitServiceError, match="requires 'nobody'"):
        init_graph(small_os(user))


# ---------------------------------------------------------------------------
# Determinism and writers


@pytest.mark.parametrize("build", [extension_graph, init_graph], ids=["ext", "init"])
def test_the_order_of_services_does_not_matter(
    build: Callable[[OperatingSystem], ServiceGraph],
) -> None:
    reordered = dataclasses.replace(example, services=tuple(reversed(example.services)))

    assert to_dot(build(reordered)) == to_dot(build(example))
    assert to_dot(build(example)) == to_dot(build(example))


def test_dot_is_sorted_and_quoted() -> None:
    graph = ServiceGraph(
        "odd",
        (GraphNode("a", 'say "hi"\\now'), GraphNode("b", "two\nlines")),
        (("a", "b"),),
    )

    assert to_dot(graph) == (
        'digraph "odd" {\n'
        "  node [shape=box];\n"
        '  "a" [label="say \\"hi\\"\\\\now"];\n'
        '  "b" [label="two\\nlines"];\n'
        '  "a" -> "b";\n'
        "}\n"
    )


def test_json_has_the_same_nodes_and_edges() -> None:
    graph = init_graph(example)

    data = json.loads(json.dumps(to_json(graph)))

    assert data["name"] == "init"
    assert [node["id"] for node in data["nodes"]] == [n.id for n in graph.nodes]
    assert {"id": "loopback", "label": "loopback networking"} in data["nodes"]
    assert data["edges"] == [
        {"from": "heartbeat", "to": "log-collector"},
        {"from": "httpd", "to": "loopback"},
    ]
