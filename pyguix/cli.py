"""Parse the command line, load the one command asked for, report errors.

This is the only place where errors become messages: a
:class:`store.errors.PyguixError` becomes one ``error:`` line, its hint, and
exit status 1; anything unexpected becomes an internal-error message asking
for a report, never a traceback (unless ``PYGUIX_DEBUG`` is set).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Any

import click

from pyguix import __version__
from pyguix.config import StoreConfig, resolve
from store.errors import PyguixError

__all__ = ["main", "COMMANDS"]

COMMANDS: dict[str, tuple[str, str]] = {
    "hash": ("pyguix.commands.hash", "Compute NAR or file hashes, as nix-hash."),
    "store": ("pyguix.commands.store", "Add, dump, query and verify store items."),
    "gc": ("pyguix.commands.gc", "Collect garbage and manage GC roots."),
    "derivation": ("pyguix.commands.derivation", "Show or add derivations."),
    "graph": ("pyguix.commands.graph", "Write the derivation or reference graph."),
    "why-depends": ("pyguix.commands.why_depends", "Show why A depends on B."),
    "build": (
        "pyguix.commands.build",
        "Build derivations or the objects a Python file defines.",
    ),
    "log": ("pyguix.commands.log", "Print the build log of a derivation or output."),
    "system": (
        "pyguix.commands.system",
        "Build operating systems and run them in containers.",
    ),
    "container": (
        "pyguix.commands.container",
        "Enter, list, inspect and stop running containers.",
    ),
}
"""Command name to (module, one-line help); the module defines ``command``."""


class LazyGroup(click.Group):
    """A group whose subcommands are imported only when they run."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        entry = COMMANDS.get(name)
        if entry is None:
            return None
        command: click.Command = importlib.import_module(entry[0]).command
        return command

    def format_commands(
        self, ctx: click.Context, formatter: click.HelpFormatter
    ) -> None:
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pyguix")
@click.option("--store-dir", help="Logical store directory [PYGUIX_STORE_DIR].")
@click.option("--state-dir", help="State directory [PYGUIX_STATE_DIR].")
@click.option("--root", help="Keep the store physically under DIR [PYGUIX_ROOT].")
@click.option("-v", "--verbose", count=True, help="Log more; repeat for debug.")
@click.pass_context
def cli(
    ctx: click.Context,
    store_dir: str | None,
    state_dir: str | None,
    root: str | None,
    verbose: int,
) -> None:
    """Build software and whole systems in a content-addressed store."""
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)]
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    ctx.obj = resolve(store_dir, state_dir, root)


def open_store(ctx: click.Context) -> Any:
    """Open the local store the global options name."""
    from store.local import LocalStore

    config: StoreConfig = ctx.find_root().obj
    return LocalStore(config.store_dir, config.state_dir, root=config.root)


def _report(error: PyguixError) -> int:
    """Print ``error`` as one line and its hint; return the exit status.

    With ``PYGUIX_DEBUG`` set, the trace of what caused it comes first (the
    user's code, for an error in a build or OS file).
    """
    if os.environ.get("PYGUIX_DEBUG"):
        import traceback

        cause = error.__cause__ or error.__context__ or error
        traceback.print_exception(cause, file=sys.stderr)
    click.echo(f"error: {error.message}", err=True)
    if error.hint:
        click.echo(f"hint: {error.hint}", err=True)
    return getattr(error, "exit_status", 1)


def _report_usage(error: click.UsageError) -> int:
    """Print a command-line mistake as one line and a hint; return 2."""
    command = error.ctx.command_path if error.ctx is not None else "pyguix"
    click.echo(f"error: {error.format_message()}", err=True)
    click.echo(f"hint: see '{command} --help'", err=True)
    return error.exit_code


def main(argv: list[str] | None = None) -> None:
    """Run the command line and exit with its status."""
    try:
        status = cli.main(args=argv, prog_name="pyguix", standalone_mode=False)
    except PyguixError as error:
        status = _report(error)
    except click.exceptions.Abort:
        click.echo("error: interrupted", err=True)
        click.echo("hint: run the command again to resume", err=True)
        status = 130
    except click.UsageError as error:
        status = _report_usage(error)
    except click.ClickException as error:
        error.show()
        status = error.exit_code
    except click.exceptions.Exit as error:
        status = error.exit_code
    except BrokenPipeError:
        status = 141
    except Exception:
        if os.environ.get("PYGUIX_DEBUG"):
            raise
        error_type, value, _ = sys.exc_info()
        name = error_type.__name__ if error_type else "error"
        click.echo(f"error: internal error: {name}: {value}", err=True)
        click.echo(
            "hint: this is a bug in pyguix; rerun with PYGUIX_DEBUG=1 and "
            "report the trace it prints",
            err=True,
        )
        status = 70
    sys.exit(status if isinstance(status, int) else 0)
