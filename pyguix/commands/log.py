"""``pyguix log DRV|OUTPUT``: print the stored build log of a derivation.

Given a derivation path, prints its log; given any other store path, the log
of the derivation recorded as its deriver, as ``nix-store --read-log`` and
``guix build --log-file`` do.  The log goes to standard output, uncompressed
(see :mod:`builders.logs` for where logs are kept).
"""

from __future__ import annotations

import sys
from typing import Any

import click

from builders.logs import LogNotFoundError, read_log
from derivations.derivation import DerivationError
from pyguix.cli import open_store

__all__ = ["command", "deriver_of"]


def deriver_of(store: Any, path: str) -> str:
    """Return the derivation whose log ``path`` stands for: itself if it is a
    ``.drv``, else its recorded deriver.

    :raises InvalidPathError: if ``path`` is not a path of this store.
    :raises DerivationError: if it is an output with no known deriver.
    """
    store.parse_path(path)
    if path.endswith(".drv"):
        return path
    deriver: str | None = store.query_deriver(path)
    if not deriver:
        reason = "has no known deriver" if store.is_valid(path) else "is not valid"
        raise DerivationError(
            path,
            f"'{path}' {reason} in the store, so its build log cannot be found",
            "give the derivation path instead (pyguix log STORE/HASH-NAME.drv)",
        )
    return deriver


@click.command("log")
@click.argument("path")
@click.pass_context
def command(ctx: click.Context, path: str) -> None:
    """Print the build log of PATH, a derivation or one of its outputs."""
    store = open_store(ctx)
    drv_path = deriver_of(store, path)
    log = read_log(store.physical(store.state_dir), drv_path)
    if log is None:
        raise LogNotFoundError(drv_path, path)
    sys.stdout.buffer.write(log)
    sys.stdout.buffer.flush()
