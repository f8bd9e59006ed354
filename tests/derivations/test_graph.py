from __future__ import annotations

from typing import Any

import pytest

from derivations.create import derivation
from derivations.derivation import DerivationError
from derivations.graph import (
    build_generations,
    dependents,
    derivation_graph,
    missing_outputs,
    reference_graph,
    store_derivation_graph,
    to_build,
    to_dot,
    to_json,
    why_depends,
)


def diamond(golden: Any) -> Any:
    return derivation_graph([golden.cases["diamond"]], golden.drvs.__getitem__)


def by_name(graph: Any) -> dict[str, str]:
    return {graph.nodes[node]["drv"].name: node for node in graph}


def test_closure_has_every_input_once(golden: Any) -> None:
    graph = diamond(golden)
    names = by_name(graph)
    assert set(names) == {
        "diamond-top",
        "diamond-left",
        "diamond-right",
        "diamond-base",
    }
    assert graph.number_of_edges() == 5
    edge = graph.edges[names["diamond-right"], names["diamond-base"]]
    assert edge["outputs"] == frozenset({"bin"})
    # top uses base twice: once directly (out) and through right (bin).
    assert graph.edges[names["diamond-top"], names["diamond-base"]]["outputs"] == {
        "out"
    }


def test_closure_of_many_roots(golden: Any) -> None:
    roots = [golden.cases["chain-c"], golden.cases["diamond"], golden.cases["simple"]]
    graph = derivation_graph(roots, golden.drvs.__getitem__)
    assert graph.number_of_nodes() == 3 + 4 + 1


def test_generations_put_dependencies_first(golden: Any) -> None:
    names = by_name(diamond(golden))
    generations = build_generations(diamond(golden))
    assert generations == [
        [names["diamond-base"]],
        sorted([names["diamond-left"], names["diamond-right"]]),
        [names["diamond-top"]],
    ]


def test_dependents(golden: Any) -> None:
    graph = diamond(golden)
    names = by_name(graph)
    assert dependents(graph, names["diamond-left"]) == {names["diamond-top"]}
    assert len(dependents(graph, names["diamond-base"])) == 3


def test_why_depends_shortest_and_all(golden: Any) -> None:
    graph = diamond(golden)
    names = by_name(graph)
    top, base = names["diamond-top"], names["diamond-base"]
    assert why_depends(graph, top, base) == [[top, base]]
    every = why_depends(graph, top, base, all_paths=True)
    assert every[0] == [top, base] and len(every) == 3
    assert why_depends(graph, names["diamond-left"], names["diamond-right"]) == []
    with pytest.raises(DerivationError, match="not in the graph"):
        why_depends(graph, top, golden.cases["simple"])


def test_dot_and_json_are_stable(golden: Any) -> None:
    graph = diamond(golden)
    names = by_name(graph)
    dot = to_dot(graph)
    assert dot.startswith("digraph pyguix {") and dot.endswith("}\n")
    assert (
        f'"{names["diamond-right"]}" -> "{names["diamond-base"]}" [label="bin"];' in dot
    )
    assert '[label="diamond-top.drv"]' in dot
    document = to_json(graph)
    assert document["nodes"] == sorted(names.values())
    assert {
        "from": names["diamond-right"],
        "to": names["diamond-base"],
        "outputs": ["bin"],
    } in document["edges"]


@pytest.fixture
def store(tmp_path: Any) -> Any:
    local = pytest.importorskip("store.local")
    return local.LocalStore("/nix/store", "/nix/var/pyguix", root=str(tmp_path))


def make_chain(store: Any) -> tuple[Any, Any, Any]:
    a = derivation(store, "a", "/bin/sh", system="x86_64-linux", outputs=("out", "doc"))
    b = derivation(store, "b", "/bin/sh", system="x86_64-linux", inputs=[a])
    c = derivation(store, "c", "/bin/sh", system="x86_64-linux", inputs=[b, (a, "doc")])
    return a, b, c


def make_valid(store: Any, drv: Any, output: str) -> None:
    """Put a file at ``drv``'s output and register it, as a build would."""
    from store.database import PathInfo
    from store.nar.writer import hash_path

    path = drv.output_path(output)
    with open(store.physical(path), "w") as file:
        file.write("built")
    nar_hash, nar_size = hash_path(store.physical(path))
    store.register_valid_paths(
        [PathInfo(path, nar_hash, nar_size, frozenset(), drv.path)]
    )


def test_missing_outputs_and_what_to_build(store: Any) -> None:
    a, b, c = make_chain(store)
    graph = store_derivation_graph(store, [c.path])
    assert graph.number_of_nodes() == 3
    assert missing_outputs(store, graph) == {
        a.path: {"out", "doc"},
        b.path: {"out"},
        c.path: {"out"},
    }
    assert set(to_build(store, graph, [c.path])) == {a.path, b.path, c.path}

    # With b built, a is needed only for its doc output, still missing.
    make_valid(store, b, "out")
    assert set(to_build(store, graph, [c.path])) == {a.path, c.path}
    make_valid(store, a, "doc")
    assert set(to_build(store, graph, [c.path])) == {c.path}
    assert missing_outputs(store, graph) == {a.path: {"out"}, c.path: {"out"}}
    make_valid(store, c, "out")
    assert set(to_build(store, graph, [c.path])) == set()


def test_reference_graph_of_derivation_files(store: Any) -> None:
    a, b, c = make_chain(store)
    graph = reference_graph(store, [c.path])
    assert set(graph) == {a.path, b.path, c.path}
    assert set(graph.successors(c.path)) == {a.path, b.path}
    assert why_depends(graph, c.path, a.path) == [[c.path, a.path]]


def test_parsing_and_hashing_do_not_import_networkx() -> None:
    import subprocess
    import sys

    code = (
        "import sys, derivations.create, derivations.hashing, derivations.aterm_parser, "
        "derivations.json; assert 'networkx' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
