"""``pyguix derivation``: show derivations as JSON, or add one to the store.

``show DRV...`` prints the JSON of Nix's ``derivation show`` (``nix
show-derivation`` in 2.8), keyed by derivation path; an output path stands
for the derivation that built it.  ``add FILE`` reads a ``.drv`` (ATerm) or
that JSON, checks that its inputs are valid and its output paths are the ones
computed from it, adds it and prints its derivation path.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from derivations import json as drv_json
from derivations.aterm_parser import from_aterm
from derivations.aterm_writer import to_aterm
from derivations.create import read_derivation
from derivations.derivation import Derivation, DerivationError
from derivations.hashing import check_output_paths, derivation_path
from pyguix.cli import open_store

__all__ = ["command", "resolve_derivation"]


def resolve_derivation(store: Any, path: str) -> str:
    """Return the derivation path ``path`` names: itself if a ``.drv``, else
    the deriver of the output it is.

    :raises DerivationError: if it is not valid or has no known deriver.
    """
    store.parse_path(path)
    if not store.is_valid(path):
        raise DerivationError(
            path,
            f"'{path}' is not valid in the store",
            "add or build it first ('pyguix derivation add', 'pyguix build')",
        )
    if path.endswith(".drv"):
        return path
    deriver: str | None = store.query_deriver(path)
    if not deriver or not store.is_valid(deriver):
        raise DerivationError(
            path,
            f"'{path}' is not a derivation and has no known deriver in the store",
            "give a .drv path, or an output that pyguix built (added items, "
            "imports without a deriver and sources have none)",
        )
    return deriver


@click.group("derivation")
def command() -> None:
    """Show or add derivations."""


@command.command("show")
@click.option(
    "-r", "--recursive", is_flag=True, help="Also show every input derivation."
)
@click.argument("paths", nargs=-1, required=True)
@click.pass_context
def show(ctx: click.Context, recursive: bool, paths: tuple[str, ...]) -> None:
    """Print the JSON of each derivation PATH (or of its deriver)."""
    store = open_store(ctx)
    wanted = [resolve_derivation(store, path) for path in paths]
    found: dict[str, Derivation] = {}
    while wanted:
        path = wanted.pop()
        if path not in found:
            found[path] = read_derivation(store, path)
            if recursive:
                wanted.extend(found[path].input_derivations)
    sys.stdout.buffer.write(drv_json.dumps(found[p] for p in sorted(found)))


def _read_file(file: str, store_dir: str) -> tuple[Derivation, str | None]:
    """Return the derivation in ``file`` and the path its JSON claims."""
    with open(file, "rb") as stream:
        data = stream.read()
    if data.startswith(b"Derive("):
        return from_aterm(data, store_dir, source=file), None
    try:
        document = drv_json.loads(data)
    except ValueError:
        raise DerivationError(
            file,
            f"'{file}' is neither a .drv (ATerm) nor JSON",
            "give a .drv file or the output of 'pyguix derivation show'",
        ) from None
    if not isinstance(document, dict) or len(document) != 1:
        raise DerivationError(file, f"'{file}' must hold exactly one derivation")
    ((claimed, value),) = document.items()
    drv = drv_json.from_json(claimed, value)
    # Write and parse back, so the JSON gets every check of a .drv file.
    checked = from_aterm(to_aterm(drv), store_dir, name=drv.name, source=file)
    return checked, claimed


@command.command("add")
@click.option("--dry-run", is_flag=True, help="Check and print the path, add nothing.")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.pass_context
def add(ctx: click.Context, dry_run: bool, file: str) -> None:
    """Check the derivation in FILE (ATerm or JSON), add it, print its path."""
    store = open_store(ctx)
    drv, claimed = _read_file(file, store.store_dir)
    aterm = to_aterm(drv)
    path = str(derivation_path(drv, store.store_dir, aterm))
    if claimed is not None and claimed != path:
        raise DerivationError(
            claimed,
            f"the JSON names the derivation '{claimed}', but its path is '{path}'",
            "the JSON was edited or made for another store directory: fix its "
            "key, or its fields, so that both agree",
        )

    missing = drv.references() - store.query_valid(drv.references())
    if missing:
        raise DerivationError(
            path,
            f"input '{min(missing)}' of derivation '{path}' is not valid in the store",
            f"add it first ({len(missing)} input(s) missing)",
        )
    check_output_paths(drv, store.store_dir, lambda p: read_derivation(store, p))

    if not dry_run:
        added = str(store.add_text(drv.name + ".drv", aterm, sorted(drv.references())))
        assert added == path, (added, path)
    click.echo(path)
