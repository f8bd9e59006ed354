"""``pyguix system extension-graph`` and ``init-graph`` (alias
``shepherd-graph``) through the command line: the DOT text parses as a
digraph with the expected edges, ``-e`` gives what the file gives, JSON
agrees with DOT, two runs print the same bytes, and a bad OS gives one
error line without a traceback."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
EXAMPLE = PROJECT / "fixtures" / "os.py"

QUOTED = r'"((?:[^"\\]|\\.)*)"'
NODE = re.compile(rf"^  {QUOTED} \[label={QUOTED}\];$")
EDGE = re.compile(rf"^  {QUOTED} -> {QUOTED};$")


def pyguix(
    tmp_path: Path, *arguments: str, cwd: Path = PROJECT
) -> subprocess.CompletedProcess[str]:
    """Run ``pyguix`` with a chroot store under ``tmp_path``; ``-P`` keeps
    ``cwd`` out of the module search path, as the installed script does."""
    command = [sys.executable, "-P", "-m", "pyguix", "--root", str(tmp_path / "r")]
    return subprocess.run(
        [*command, *arguments],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        cwd=cwd,
    )


def parse_dot(text: str) -> tuple[dict[str, str], set[tuple[str, str]]]:
    """Return the nodes (id to label) and edges of the DOT ``text`` this
    command writes, failing on any line it cannot read."""
    lines = text.splitlines()
    assert re.fullmatch(r'digraph "[a-z]+" \{', lines[0]), lines[0]
    assert lines[1] == "  node [shape=box];"
    assert lines[-1] == "}"
    nodes: dict[str, str] = {}
    edges: set[tuple[str, str]] = set()
    for line in lines[2:-1]:
        node, edge = NODE.match(line), EDGE.match(line)
        if node:
            nodes[node[1]] = node[2]
        else:
            assert edge, f"not a node or an edge: {line!r}"
            edges.add((edge[1], edge[2]))
    assert {end for edge in edges for end in edge} <= set(nodes)
    return nodes, edges


def graph_of(tmp_path: Path, *arguments: str) -> str:
    done = pyguix(tmp_path, "system", *arguments)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_extension_graph_ends_at_the_system(tmp_path: Path) -> None:
    nodes, edges = parse_dot(graph_of(tmp_path, "extension-graph", str(EXAMPLE)))

    sources = {source for source, _ in edges}
    assert [node for node in nodes if node not in sources] == ["system"]
    for edge in [
        ("example-services", "init"),
        ("http-server", "init"),
        ("init", "system"),
        ("etc", "system"),
        ("boot", "system"),
    ]:
        assert edge in edges
    assert nodes["host-name"] == "host-name pyguix-example"


def test_init_graph_and_its_guix_name_agree(tmp_path: Path) -> None:
    text = graph_of(tmp_path, "init-graph", str(EXAMPLE))
    nodes, edges = parse_dot(text)

    assert edges == {("heartbeat", "log-collector"), ("httpd", "loopback")}
    assert nodes["loopback"] == "loopback networking"
    assert "boot-stamp" in nodes and "term-tty1" in nodes
    assert graph_of(tmp_path, "shepherd-graph", str(EXAMPLE)) == text
    assert graph_of(tmp_path, "init-graph", str(EXAMPLE)) == text


NO_ROOT_FILE_SYSTEM = """
from system.operating_system import OperatingSystem
from system.services import service
from system.servers import log_collector_service_type

operating_system = OperatingSystem(
    host_name="x", services=(service(log_collector_service_type),)
)
"""


@pytest.mark.parametrize("action", ["extension-graph", "init-graph"])
def test_system_without_root_file_system_has_graphs(
    tmp_path: Path, action: str
) -> None:
    # As for 'system container', which accepts it: a graph builds nothing.
    file = tmp_path / "os.py"
    file.write_text(NO_ROOT_FILE_SYSTEM)
    nodes, _ = parse_dot(graph_of(tmp_path, action, str(file)))

    assert ("log-collector" in nodes) and (action == "init-graph" or "system" in nodes)


@pytest.mark.parametrize("action", ["extension-graph", "init-graph"])
def test_expression_gives_the_files_graph(tmp_path: Path, action: str) -> None:
    from_file = graph_of(tmp_path, action, str(EXAMPLE))

    from_module = graph_of(tmp_path, action, "-e", "fixtures.os:operating_system")
    assert from_module == from_file

    bare = graph_of(
        tmp_path,
        action,
        "-e",
        'OperatingSystem(host_name="tiny", file_systems=['
        'FileSystem(device="none", mount_point="/", type="tmpfs")], '
        "services=[service(log_collector_service_type)])",
    )
    nodes, _ = parse_dot(bare)
    assert "log-collector" in nodes and "http-server" not in nodes

    (tmp_path / "modules").mkdir()
    (tmp_path / "modules" / "copied_os.py").write_text(EXAMPLE.read_text())
    load_path = ["-L", str(tmp_path / "modules")]
    from_load_path = graph_of(
        tmp_path, action, *load_path, "-e", "copied_os:operating_system"
    )
    assert from_load_path == from_file


def test_json_agrees_with_dot(tmp_path: Path) -> None:
    nodes, edges = parse_dot(graph_of(tmp_path, "extension-graph", str(EXAMPLE)))

    data = json.loads(
        graph_of(tmp_path, "extension-graph", "--format", "json", str(EXAMPLE))
    )

    assert data["name"] == "extensions"
    assert {node["id"]: node["label"] for node in data["nodes"]} == nodes
    assert {(edge["from"], edge["to"]) for edge in data["edges"]} == edges
    assert [node["id"] for node in data["nodes"]] == sorted(nodes)


BAD_EXTENSION = """
from system.operating_system import OperatingSystem
from system.file_systems import FileSystem
from system.services import service, service_extension, service_type

lonely = service_type("lonely")
needy = service_type("needy", [service_extension(lonely, list)], default_value=1)
operating_system = OperatingSystem(
    host_name="bad",
    file_systems=[FileSystem(device="none", mount_point="/", type="tmpfs")],
    services=[service(needy)],
)
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, "operating system file '{file}' does not exist"),
        ("x = 1\n", "operating system file '{file}' does not define"),
        ("raise ValueError('no disk')\n", "failed at line 1: ValueError: no disk"),
        (BAD_EXTENSION, "no target of type 'lonely' for service 'needy'"),
    ],
    ids=["missing", "no-os", "raises", "missing-target"],
)
@pytest.mark.parametrize("action", ["extension-graph", "shepherd-graph"])
def test_bad_os_is_one_error_line(
    tmp_path: Path, text: str | None, expected: str, action: str
) -> None:
    file = tmp_path / "os.py"
    if text is not None:
        file.write_text(text)

    done = pyguix(tmp_path, "system", action, str(file))

    assert done.returncode == 1
    assert done.stdout == ""
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected.format(file=file) in errors[0]
    assert "Traceback" not in done.stderr


def test_file_and_expression_together_are_refused(tmp_path: Path) -> None:
    done = pyguix(tmp_path, "system", "init-graph", str(EXAMPLE), "-e", "fixtures.os:x")

    assert done.returncode == 2
    assert "give only one" in done.stderr
    assert done.stdout == ""
