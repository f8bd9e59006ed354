"""``pyguix why-depends A B``: show why A depends on B, like ``nix why-depends``.

If A is a derivation, the path goes through the derivation graph (B may be
a derivation or one of its outputs); otherwise through the runtime reference
graph.  Prints the shortest chain, or with ``--all`` every chain (up to a
hundred), one path per line, each step indented under the one that needs it.
"""

from __future__ import annotations

from typing import Any

import click

from derivations.derivation import DerivationError
from pyguix.cli import open_store
from pyguix.commands.derivation import resolve_derivation
from pyguix.commands.graph import resolve_valid

__all__ = ["command"]


def _target_in(graph: Any, target: str) -> str:
    """Return the node standing for ``target``: itself, or the derivation
    that has it as an output."""
    if target in graph:
        return target
    for node, drv in graph.nodes(data="drv"):
        if target in drv.output_paths().values():
            return str(node)
    return target


@click.command("why-depends")
@click.option(
    "--all", "all_paths", is_flag=True, help="Show every chain, not only the shortest."
)
@click.argument("source")
@click.argument("target")
@click.pass_context
def command(ctx: click.Context, all_paths: bool, source: str, target: str) -> None:
    """Show why SOURCE depends on TARGET."""
    from derivations import graph as drv_graph

    store = open_store(ctx)
    if source.endswith(".drv"):
        root = resolve_derivation(store, source)
        graph = drv_graph.store_derivation_graph(store, [root])
        node = _target_in(graph, target)
    else:
        resolve_valid(store, source)
        root, graph, node = source, drv_graph.reference_graph(store, [source]), target
    chains = (
        drv_graph.why_depends(graph, root, node, all_paths) if node in graph else []
    )
    if not chains:
        raise DerivationError(
            source,
            f"'{source}' does not depend on '{target}'",
            "compare 'pyguix store query --requisites' of the first (or "
            "'pyguix graph' of a .drv) with the second",
        )
    for index, chain in enumerate(chains):
        if index:
            click.echo()
        for depth, path in enumerate(chain):
            click.echo(f"{'  ' * (depth - 1)}{'└── ' if depth else ''}{path}")
