"""``pyguix gc``: collect garbage and manage GC roots, as ``nix-store --gc``.

Without options, delete every item no root keeps alive and print
``N store paths deleted, X MiB freed``.  ``--dry-run`` prints what would be
deleted, ``--delete PATH...`` deletes only those (refusing live ones),
``--list-roots`` prints ``LINK -> PATH`` for each root, and
``--add-root LINK PATH`` makes LINK an indirect root of PATH.
"""

from __future__ import annotations

import click

from pyguix.cli import open_store

__all__ = ["command"]


@click.command("gc")
@click.option("--dry-run", is_flag=True, help="Print what would be deleted.")
@click.option("--delete", "delete", is_flag=True, help="Delete only the PATHS given.")
@click.option("--list-roots", is_flag=True, help="Print the GC roots.")
@click.option(
    "--add-root",
    nargs=2,
    metavar="LINK PATH",
    help="Make LINK an indirect root of PATH.",
)
@click.argument("paths", nargs=-1)
@click.pass_context
def command(
    ctx: click.Context,
    dry_run: bool,
    delete: bool,
    list_roots: bool,
    add_root: tuple[str, str] | None,
    paths: tuple[str, ...],
) -> None:
    """Collect garbage and manage GC roots."""
    from store.gc import collect_garbage, find_roots

    store = open_store(ctx)
    if paths and not delete:
        raise click.UsageError("store paths are only accepted with --delete")
    if add_root:
        link, path = add_root
        store.add_permanent_root(link, str(store.parse_path(path)))
        click.echo(link)
        return
    if list_roots:
        with store.gc_lock(shared=False):
            roots = find_roots(store)
        for path, links in sorted(roots.items()):
            for link in sorted(links):
                click.echo(f"{link} -> {path}")
        return
    result = collect_garbage(store, dry_run=dry_run, delete=paths if delete else None)
    for path in result.deleted:
        click.echo(path)
    if not dry_run:
        click.echo(result.summary(), err=True)
