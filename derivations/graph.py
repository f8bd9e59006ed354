"""The graph of derivations, and of store references, as networkx DiGraphs.

**Direction.** An edge ``A -> B`` means *A depends on B*: B is an input
derivation of A (or, in a reference graph, A refers to B).  Roots (what the
user asked for) have no predecessors; leaves are derivations without inputs.
Edges of a derivation graph carry ``outputs``, the frozenset of B's output
names that A uses; nodes carry ``drv``, the :class:`Derivation`.

Queries: :func:`build_generations` (sets that can build in parallel,
dependencies first), :func:`missing_outputs` (one batched validity query),
:func:`to_build` (what a build must run, stopping at valid outputs),
:func:`dependents`, :func:`why_depends` (paths through the graph, like
``nix why-depends``), and :func:`to_dot`/:func:`to_json` for users.

Only this module imports networkx, lazily: a build whose outputs are all
valid should not pay for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import islice
from typing import TYPE_CHECKING, Any, Protocol

from derivations.create import read_derivation
from derivations.derivation import Derivation, DerivationError

if TYPE_CHECKING:
    import networkx as nx

__all__ = [
    "build_generations",
    "dependents",
    "derivation_graph",
    "missing_outputs",
    "reference_graph",
    "store_derivation_graph",
    "to_build",
    "to_dot",
    "to_json",
    "why_depends",
]


class _Store(Protocol):
    store_dir: str

    def physical(self, path: str) -> str: ...

    def query_valid(self, paths: Iterable[str]) -> set[str]: ...

    def query_requisites(self, paths: Iterable[str]) -> set[str]: ...

    def query_references(self, path: str) -> set[str]: ...


def derivation_graph(
    roots: Iterable[str], resolve: Callable[[str], Derivation]
) -> nx.DiGraph:
    """Return the closure of derivation paths ``roots`` as a DiGraph.

    :param resolve: returns the derivation at a path (e.g. from a store).
    """
    import networkx as nx

    graph = nx.DiGraph()
    stack = [path for path in roots]
    while stack:
        path = stack.pop()
        if path in graph and "drv" in graph.nodes[path]:
            continue
        drv = resolve(path)
        graph.add_node(path, drv=drv)
        for input_path, outputs in drv.input_derivations.items():
            graph.add_edge(path, input_path, outputs=outputs)
            if "drv" not in graph.nodes[input_path]:
                stack.append(input_path)
    return graph


def store_derivation_graph(store: _Store, roots: Iterable[str]) -> nx.DiGraph:
    """Return the closure of ``roots``, reading ``.drv`` files from ``store``."""
    return derivation_graph(roots, lambda path: read_derivation(store, path))


def build_generations(graph: nx.DiGraph) -> list[list[str]]:
    """Return the nodes in generations, dependencies first: every node of a
    generation depends only on earlier ones, so a generation can build in
    parallel.  Nodes in a generation are sorted."""
    import networkx as nx

    generations = [sorted(g) for g in nx.topological_generations(graph)]
    generations.reverse()
    return generations


def missing_outputs(store: _Store, graph: nx.DiGraph) -> dict[str, set[str]]:
    """Return the outputs that are not valid in ``store``, by derivation,
    with one validity query; derivations whose outputs are all valid are left
    out."""
    wanted = {
        (path, name): out.path
        for path, data in graph.nodes(data=True)
        for name, out in data["drv"].outputs.items()
    }
    valid = store.query_valid(set(wanted.values()))
    missing: dict[str, set[str]] = {}
    for (path, name), out_path in wanted.items():
        if out_path not in valid:
            missing.setdefault(path, set()).add(name)
    return missing


def to_build(store: _Store, graph: nx.DiGraph, roots: Iterable[str]) -> nx.DiGraph:
    """Return the subgraph of what must be built to make all outputs of
    ``roots`` valid: a derivation is built if an output wanted from it is
    missing, and its inputs are looked at only then."""
    missing = missing_outputs(store, graph)
    needed: set[str] = set()
    stack = [(root, set(graph.nodes[root]["drv"].outputs)) for root in roots]
    while stack:
        path, outputs = stack.pop()
        if path in needed or not outputs & missing.get(path, set()):
            continue
        needed.add(path)
        for _, input_path, used in graph.out_edges(path, data="outputs"):
            stack.append((input_path, set(used)))
    subgraph: nx.DiGraph = graph.subgraph(needed).copy()
    return subgraph


def dependents(graph: nx.DiGraph, path: str) -> set[str]:
    """Return every node that depends on ``path``, directly or not."""
    import networkx as nx

    found: set[str] = nx.ancestors(graph, path)
    return found


def why_depends(
    graph: nx.DiGraph,
    source: str,
    target: str,
    all_paths: bool = False,
    limit: int = 100,
) -> list[list[str]]:
    """Return why ``source`` depends on ``target``: the shortest chain of
    dependencies from one to the other, or (``all_paths``) up to ``limit``
    simple chains, shortest first.  Empty if it does not depend on it.

    :raises DerivationError: if either is not in the graph.
    """
    import networkx as nx

    for node in (source, target):
        if node not in graph:
            raise DerivationError(node, f"'{node}' is not in the graph of '{source}'")
    if not nx.has_path(graph, source, target):
        return []
    if not all_paths:
        return [nx.shortest_path(graph, source, target)]
    return list(islice(nx.shortest_simple_paths(graph, source, target), limit))


def reference_graph(store: _Store, roots: Iterable[str]) -> nx.DiGraph:
    """Return the runtime closure of store paths ``roots``, edges being
    references (self-references left out)."""
    import networkx as nx

    graph = nx.DiGraph()
    for path in store.query_requisites(list(roots)):
        graph.add_node(path)
        for reference in store.query_references(path):
            if reference != path:
                graph.add_edge(path, reference)
    return graph


def _label(path: str) -> str:
    base = path.rsplit("/", 1)[-1]
    return base[33:] if len(base) > 33 and base[32] == "-" else base


def _dot_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(graph: nx.DiGraph) -> str:
    """Return ``graph`` in Graphviz's DOT language, nodes labelled by name and
    edges by the outputs used, in a stable order."""
    lines = ["digraph pyguix {", "  rankdir=LR;", "  node [shape=box];"]
    for node in sorted(graph):
        lines.append(f"  {_dot_string(node)} [label={_dot_string(_label(node))}];")
    for source, target, outputs in sorted(graph.edges(data="outputs")):
        label = f" [label={_dot_string(','.join(sorted(outputs)))}]" if outputs else ""
        lines.append(f"  {_dot_string(source)} -> {_dot_string(target)}{label};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_json(graph: nx.DiGraph) -> dict[str, Any]:
    """Return ``graph`` as ``{"nodes": [...], "edges": [{"from", "to"[, "outputs"]}]}``
    in a stable order."""
    edges = []
    for source, target, outputs in sorted(graph.edges(data="outputs")):
        edge: dict[str, Any] = {"from": source, "to": target}
        if outputs is not None:
            edge["outputs"] = sorted(outputs)
        edges.append(edge)
    return {"nodes": sorted(graph), "edges": edges}
