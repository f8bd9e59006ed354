"""``pyguix hash``: print NAR hashes of paths or flat hashes of files.

``pyguix hash path PATH...`` prints the hash of each path's NAR, as
``nix-hash PATH`` does; ``pyguix hash file FILE...`` the hash of each file's
bytes, as ``nix-hash --flat FILE``.  Hashes are printed one a line, bare and
in base16 unless ``--base32``, ``--base64`` or ``--sri`` asks otherwise.
The default algorithm is sha256, the one of NAR hashes in the store;
``nix-hash`` defaults to md5, which ``--type md5`` gives.

``--truncate`` is ``nix-hash --truncate``: a digest longer than 160 bits
(sha256, sha512) is folded to 20 bytes by XOR, Nix's ``compressHash``
(:func:`store.hash.compress_hash`), the fold that makes store path hashes;
it is not cut.  Shorter digests (md5, sha1) are printed whole.  The folded
digest keeps its algorithm's name, so ``--sri`` prints ``sha256-`` and the
base64 of 20 bytes, as Nix's ``Hash::to_string`` does.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable
from typing import Any

import click

from store import base32
from store.errors import PyguixError
from store.hash import ALGORITHMS, Hash, compress_hash
from store.nar import hash_path

__all__ = ["TRUNCATED_SIZE", "command", "format_hash", "hash_file"]

TRUNCATED_SIZE = 20
"""Bytes a digest is folded to by ``--truncate`` (160 bits, as Nix)."""


def _hash_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """Add the algorithm and encoding options shared by both subcommands."""
    options = [
        click.option(
            "--type",
            "algorithm",
            type=click.Choice(sorted(ALGORITHMS)),
            default="sha256",
            show_default=True,
            help="Hash algorithm.",
        ),
        click.option(
            "--base16",
            "base",
            flag_value="base16",
            default=True,
            help="Hexadecimal (default).",
        ),
        click.option("--base32", "base", flag_value="base32", help="Nix base32."),
        click.option("--base64", "base", flag_value="base64", help="Base64."),
        click.option("--sri", "base", flag_value="sri", help="SRI, ALGO-BASE64."),
        click.option(
            "--truncate",
            is_flag=True,
            help="Fold hashes longer than 160 bits to 160 bits (XOR).",
        ),
        click.argument("paths", nargs=-1, required=True, type=click.Path()),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def format_hash(digest: Hash, base: str, truncate: bool = False) -> str:
    """Return ``digest`` as ``nix-hash`` prints it in ``base``, or as SRI.

    :param truncate: fold a digest longer than :data:`TRUNCATED_SIZE` bytes
        to that size first (``nix-hash --truncate``).
    """
    raw = digest.digest
    if truncate and len(raw) > TRUNCATED_SIZE:
        raw = compress_hash(raw, TRUNCATED_SIZE)

    if base == "base16":
        return raw.hex()
    if base == "base32":
        return base32.encode(raw)
    encoded = base64.b64encode(raw).decode("ascii")
    return f"{digest.algorithm}-{encoded}" if base == "sri" else encoded


def hash_file(path: str, algorithm: str) -> Hash:
    """Return the ``algorithm`` hash of the bytes of the file at ``path``.

    A symlink is followed, as ``nix-hash --flat`` does.

    :raises PyguixError: when ``path`` is not a readable regular file.
    """
    try:
        if not os.path.isfile(path):
            raise PyguixError(
                f"'{path}' is not a regular file",
                "use 'pyguix hash path' for directories and symlinks",
            )
        with open(path, "rb") as file:
            digest = hashlib.file_digest(file, algorithm).digest()
    except OSError as error:
        raise PyguixError(
            f"cannot read '{path}': {error.strerror}",
            "check that the file exists and that you may read it",
        ) from None
    return Hash(algorithm, digest)


@click.group()
def command() -> None:
    """Compute NAR or file hashes, as nix-hash."""


@command.command("path")
@_hash_options
def path_command(
    algorithm: str, base: str, truncate: bool, paths: tuple[str, ...]
) -> None:
    """Print the hash of the NAR of each PATH (nix-hash PATH)."""
    for path in paths:
        if not os.path.lexists(path):
            raise PyguixError(
                f"'{path}' does not exist",
                "give the path of an existing file, directory or symlink",
            )
        digest, _ = hash_path(path, algorithm)
        click.echo(format_hash(digest, base, truncate))


@command.command("file")
@_hash_options
def file_command(
    algorithm: str, base: str, truncate: bool, paths: tuple[str, ...]
) -> None:
    """Print the hash of the contents of each FILE (nix-hash --flat FILE)."""
    for path in paths:
        click.echo(format_hash(hash_file(path, algorithm), base, truncate))
