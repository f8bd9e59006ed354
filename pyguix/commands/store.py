"""``pyguix store``: add, dump, restore, export, import, query and verify.

Each subcommand mirrors a ``nix-store`` operation: ``add`` (``--add``,
``--add-fixed sha256`` with ``--flat``), ``dump``/``restore``
(``--dump``/``--restore``), ``export``/``import``, ``query`` (``-q``) and
``verify`` (``--verify``).  Results go to stdout, one path per line.
"""

from __future__ import annotations

import posixpath
import sys
from typing import Any

import click

from pyguix.cli import open_store
from store.errors import StoreError

__all__ = ["command"]


class VerifyFailed(StoreError):
    """Report that ``verify`` left problems unrepaired."""

    def __init__(self, count: int) -> None:
        super().__init__(
            f"the store has {count} problem(s) left",
            "run 'pyguix store verify --repair' to fix what can be fixed",
        )


@click.group("store")
def command() -> None:
    """Add, dump, query and verify store items."""


@command.command("add")
@click.option("--flat", is_flag=True, help="Hash the file's contents (fixed output).")
@click.option("--dry-run", is_flag=True, help="Print the paths, write nothing.")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.pass_context
def add(ctx: click.Context, flat: bool, dry_run: bool, paths: tuple[str, ...]) -> None:
    """Add each PATH to the store and print its store path."""
    store = open_store(ctx)
    for path in paths:
        click.echo(str(store.add_path(path, recursive=not flat, dry_run=dry_run)))


@command.command("dump")
@click.argument("path")
@click.pass_context
def dump(ctx: click.Context, path: str) -> None:
    """Write the NAR of PATH to stdout.

    PATH is a file on the host, or a path in the store, which is read where
    the store keeps it (under its root, for a chroot store).
    """
    from store import nar

    config = ctx.find_root().obj
    if config.root and _is_in(path, config.store_dir):
        path = open_store(ctx).physical(path)
    out = sys.stdout.buffer
    nar.dump(path, out.write)
    out.flush()


def _is_in(path: str, directory: str) -> bool:
    """Tell whether ``path`` names ``directory`` or something below it."""
    return path == directory or path.startswith(directory.rstrip("/") + "/")


@command.command("restore")
@click.argument("directory", type=click.Path())
def restore(directory: str) -> None:
    """Create DIRECTORY from the NAR read on stdin."""
    from store import nar

    nar.restore(sys.stdin.buffer, directory)


@command.command("export")
@click.argument("paths", nargs=-1, required=True)
@click.pass_context
def export(ctx: click.Context, paths: tuple[str, ...]) -> None:
    """Write PATHS to stdout in the format of 'nix-store --export'."""
    from store.export import export_paths

    store = open_store(ctx)
    parsed = [str(store.parse_path(p)) for p in paths]
    out = sys.stdout.buffer
    export_paths(store, parsed, out.write)
    out.flush()


@command.command("import")
@click.pass_context
def import_(ctx: click.Context) -> None:
    """Import the items of an export stream read on stdin; print their paths."""
    from store.export import import_paths

    store = open_store(ctx)
    for path in import_paths(store, sys.stdin.buffer):
        click.echo(path)


_QUERIES = ("references", "referrers", "requisites", "deriver", "hash", "size")


@command.command("query")
@click.option(
    "--references", "query", flag_value="references", help="Direct references."
)
@click.option("--referrers", "query", flag_value="referrers", help="Direct referrers.")
@click.option("--requisites", "query", flag_value="requisites", help="The closure.")
@click.option("--deriver", "query", flag_value="deriver", help="The deriver.")
@click.option("--hash", "query", flag_value="hash", help="The NAR hash.")
@click.option("--size", "query", flag_value="size", help="The NAR size.")
@click.argument("paths", nargs=-1, required=True)
@click.pass_context
def query(ctx: click.Context, query: str | None, paths: tuple[str, ...]) -> None:
    """Print facts about valid store PATHS."""
    if query is None:
        raise click.UsageError(f"give one of --{', --'.join(_QUERIES)}")
    store = open_store(ctx)
    parsed = [_valid(store, p) for p in paths]
    for line in _answer(store, query, parsed):
        click.echo(line)


def _valid(store: Any, text: str) -> str:
    """Return the valid store path ``text`` names, normalised as
    ``nix-store -q`` does (``//`` and a trailing ``/`` are dropped)."""
    path = str(store.parse_path(posixpath.normpath(text)))
    if not store.is_valid(path):
        raise StoreError(
            f"'{path}' is not valid", "add it to the store first ('pyguix store add')"
        )
    return path


def _answer(store: Any, query: str, paths: list[str]) -> list[str]:
    """Return the lines answering ``query`` for ``paths``, as nix-store -q."""
    if query == "requisites":
        return sorted(store.query_requisites(paths))
    if query in ("references", "referrers"):
        method = getattr(store, f"query_{query}")
        return sorted({r for p in paths for r in method(p)})
    lines = []
    for path in paths:
        info = store.query_path_info(path)
        if query == "deriver":
            lines.append(info.deriver or "unknown-deriver")
        elif query == "hash":
            lines.append(info.nar_hash.to_string("base32"))
        else:
            lines.append(str(info.nar_size))
    return lines


@command.command("verify")
@click.option("--check-contents", is_flag=True, help="Rehash every valid item.")
@click.option("--repair", is_flag=True, help="Fix what can be fixed.")
@click.pass_context
def verify(ctx: click.Context, check_contents: bool, repair: bool) -> None:
    """Check that the database and the store directory agree."""
    from store.verify import verify_store

    store = open_store(ctx)
    report = verify_store(store, check_contents=check_contents, repair=repair)
    for problem in report.problems:
        status = "repaired" if problem.repaired else "problem"
        if problem in report.notes:
            status = "note"
        click.echo(
            f"{status}: {problem.kind} '{problem.path}': {problem.detail}", err=True
        )
    if report.remaining:
        raise VerifyFailed(len(report.remaining))


@command.command("optimise")
@click.pass_context
def optimise(ctx: click.Context) -> None:
    """Hard-link identical files of the store (nix-store --optimise)."""
    from store.optimise import optimise_store

    result = optimise_store(open_store(ctx))
    mib = result.bytes_freed / (1024 * 1024)
    click.echo(f"{result.files_linked} files linked, {mib:.2f} MiB freed")
