"""``pyguix graph``: write the derivation graph or the reference graph.

``--type derivation`` (the default) gives the closure of the targets'
derivations, edges labelled with the outputs used; ``--type references``
the runtime closure of store paths.  An edge ``A -> B`` means A depends on
(refers to) B.  ``--format dot`` is for Graphviz (``| dot -Tsvg``),
``--format json`` is ``{"nodes": [...], "edges": [...]}``.
"""

from __future__ import annotations

import json
from typing import Any

import click

from pyguix.cli import open_store
from pyguix.commands.derivation import resolve_derivation

__all__ = ["command"]


@click.command("graph")
@click.option(
    "--format",
    "format_",
    type=click.Choice(["dot", "json"]),
    default="dot",
    show_default=True,
)
@click.option(
    "--type",
    "type_",
    type=click.Choice(["derivation", "references"]),
    default="derivation",
    show_default=True,
)
@click.argument("targets", nargs=-1, required=True)
@click.pass_context
def command(
    ctx: click.Context, format_: str, type_: str, targets: tuple[str, ...]
) -> None:
    """Write the graph of TARGETs (derivations or store paths)."""
    from derivations import graph as drv_graph

    store = open_store(ctx)
    if type_ == "derivation":
        roots = [resolve_derivation(store, target) for target in targets]
        graph = drv_graph.store_derivation_graph(store, roots)
    else:
        for target in targets:
            resolve_valid(store, target)
        graph = drv_graph.reference_graph(store, targets)
    if format_ == "dot":
        click.echo(drv_graph.to_dot(graph), nl=False)
    else:
        click.echo(json.dumps(drv_graph.to_json(graph), indent=2))


def resolve_valid(store: Any, path: str) -> None:
    """Check that ``path`` is a valid store path."""
    from derivations.derivation import DerivationError

    store.parse_path(path)
    if not store.is_valid(path):
        raise DerivationError(path, f"'{path}' is not valid in the store")
