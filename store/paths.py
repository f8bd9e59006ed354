"""Name store items: store paths, their validation and their computation.

A store path is ``<store dir>/<hash part>-<name>``.  The hash part is 32
characters of Nix base32: the sha256 of a *fingerprint*, XOR-folded to 20
bytes.  The fingerprint (Nix's ``Store::makeStorePath``) is::

    <type>:sha256:<inner hash in base16>:<store dir>:<name>

where the type says how the item was made:

``text[:REF...]``
    text added with its references (``add-text-to-store``, ``.drv`` files);
    the inner hash is the sha256 of the text, references are sorted.
``source[:REF...][:self]``
    a tree added recursively with sha256; the inner hash is the NAR hash.
``output:NAME``
    an output of a derivation; the inner hash is the derivation's hash
    modulo (see ``derivations``), and the name gets ``-NAME`` unless NAME is
    ``out``.  Fixed outputs other than recursive sha256 use ``output:out``
    with the inner hash ``sha256("fixed:out:[r:]ALGO:HEX:")``.

Store path names follow Nix 2.8's ``checkName``: 1 to 211 characters from
``[0-9a-zA-Z+._?=-]``.  Nix 2.8 accepts a leading dot (current Nix rejects
only ``.``/``..`` components; the Guix daemon rejects any leading dot); we
keep 2.8's rule so that every path Nix 2.8 makes can be named here.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from store import base32
from store.errors import InvalidPathError
from store.hash import Hash, compress_hash

__all__ = [
    "CHECK_SUFFIX",
    "HASH_PART_LENGTH",
    "MAX_NAME_LENGTH",
    "StorePath",
    "check_name",
    "fixed_output_fingerprint",
    "is_within",
    "make_fixed_output_path",
    "make_output_path",
    "make_store_path",
    "make_text_path",
    "output_path_name",
]

HASH_PART_LENGTH = 32
MAX_NAME_LENGTH = 211

CHECK_SUFFIX = "-check"
"""What ``build --check`` appends to an output's path to keep, outside the
database, a rebuild that differs from the valid output (as Nix does)."""


def is_within(path: str, directory: str) -> bool:
    """Tell whether ``path`` is ``directory`` or below it, both absolute
    and without ``.``, ``..`` or repeated slashes."""
    return path == directory or path.startswith(directory.rstrip("/") + "/")


_NAME_CHARS = re.compile(r"[0-9a-zA-Z+\-._?=]*")
_HASH_PART = re.compile(r"[0123456789abcdfghijklmnpqrsvwxyz]{32}")

Method = Literal["flat", "recursive"]


_NAME_HINT = (
    f"use at most {MAX_NAME_LENGTH} characters among letters, digits and + - . _ ? ="
)
"""What to do about a name :func:`_name_problem` refuses."""


def _name_problem(name: str) -> str | None:
    """Return why ``name`` cannot name a store item, or ``None``."""
    if not name:
        return "the name is empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"the name is longer than {MAX_NAME_LENGTH} characters"
    match = _NAME_CHARS.match(name)
    assert match is not None
    if match.end() != len(name):
        return f"the name contains the character {name[match.end()]!r}"
    return None


def check_name(name: str) -> None:
    """Check that ``name`` may name a store item, as Nix 2.8's ``checkName``.

    :raises InvalidPathError: saying which rule ``name`` breaks.
    """
    problem = _name_problem(name)
    if problem is not None:
        raise InvalidPathError(name, problem, _NAME_HINT)


@dataclass(frozen=True, slots=True, order=True)
class StorePath:
    """A path to a store item, in a given store directory.

    Ordering and equality follow the full path, so sorted store paths are in
    the order Nix's ``StorePathSet`` keeps them.
    """

    store_dir: str
    """The logical store directory, such as ``/nix/store``."""

    hash_part: str
    """The 32 Nix base32 characters after the store directory."""

    name: str
    """What follows the hash part and its dash."""

    @classmethod
    def from_string(cls, path: str, store_dir: str) -> StorePath:
        """Parse ``path``, which must be directly in ``store_dir``.

        :raises InvalidPathError: saying what is wrong with ``path``.
        """
        prefix = store_dir.rstrip("/") + "/"
        if not path.startswith(prefix):
            raise InvalidPathError(
                path,
                f"it is not in the store '{store_dir}'",
                f"give a path of the form {prefix}HASH-NAME, as "
                "'pyguix store add' prints them",
            )
        return cls.from_base_name(path[len(prefix) :], store_dir, path)

    @classmethod
    def from_base_name(
        cls, base_name: str, store_dir: str, given: str | None = None
    ) -> StorePath:
        """Parse ``HASH-NAME``, the last component of a store path."""
        given = given or base_name
        prefix = store_dir.rstrip("/") + "/"
        if "/" in base_name:
            item = prefix + base_name.split("/", 1)[0]
            raise InvalidPathError(
                given,
                "it names a file inside a store item",
                f"give the store item itself, '{item}'",
            )
        form_hint = (
            f"a store path is {prefix}HASH-NAME, with a hash part of 32 Nix "
            "base32 characters, as 'pyguix store add' prints it"
        )
        if len(base_name) < HASH_PART_LENGTH + 2 or base_name[32] != "-":
            raise InvalidPathError(
                given, "it does not have the form HASH-NAME", form_hint
            )
        hash_part, name = base_name[:32], base_name[33:]
        if not _HASH_PART.fullmatch(hash_part):
            raise InvalidPathError(given, "its hash part is not Nix base32", form_hint)
        problem = _name_problem(name)
        if problem is not None:
            raise InvalidPathError(given, problem, _NAME_HINT)
        return cls(store_dir.rstrip("/"), hash_part, name)

    @property
    def base_name(self) -> str:
        """Return ``HASH-NAME``."""
        return f"{self.hash_part}-{self.name}"

    def is_derivation(self) -> bool:
        """Tell whether this path names a ``.drv`` file."""
        return self.name.endswith(".drv")

    def __str__(self) -> str:
        return f"{self.store_dir}/{self.hash_part}-{self.name}"


def make_store_path(
    kind: str, inner_hash: bytes, name: str, store_dir: str
) -> StorePath:
    """Return the store path of fingerprint ``kind``, as Nix's
    ``Store::makeStorePath``.

    :param kind: ``text``, ``source`` or ``output:NAME``, with its references
        already appended (see :func:`make_text_path`).
    :param inner_hash: a sha256 digest, printed in base16 in the fingerprint.
    """
    check_name(name)
    store_dir = store_dir.rstrip("/")
    fingerprint = f"{kind}:sha256:{inner_hash.hex()}:{store_dir}:{name}"
    digest = hashlib.sha256(fingerprint.encode()).digest()
    return StorePath(store_dir, base32.encode(compress_hash(digest, 20)), name)


def _with_references(kind: str, references: Iterable[str], self_reference: bool) -> str:
    """Append sorted references (full paths) to ``kind``, as Nix's ``makeType``."""
    parts = [kind, *sorted(set(references))]
    if self_reference:
        parts.append("self")
    return ":".join(parts)


def make_text_path(
    name: str, text_hash: bytes, references: Iterable[str], store_dir: str
) -> StorePath:
    """Return the path of a text item, as Nix's ``makeTextPath``.

    :param text_hash: the sha256 digest of the text.
    :param references: full store paths the text refers to.
    """
    return make_store_path(
        _with_references("text", references, False), text_hash, name, store_dir
    )


def fixed_output_fingerprint(method: Method, content_hash: Hash) -> bytes:
    """Return the inner hash of a fixed output that is not a ``source`` path."""
    prefix = "r:" if method == "recursive" else ""
    text = f"fixed:out:{prefix}{content_hash.algorithm}:{content_hash.to_base16()}:"
    return hashlib.sha256(text.encode()).digest()


def make_fixed_output_path(
    method: Method,
    content_hash: Hash,
    name: str,
    store_dir: str,
    references: Iterable[str] = (),
    self_reference: bool = False,
) -> StorePath:
    """Return the path of content-addressed data, as Nix's
    ``makeFixedOutputPath``.

    A recursive sha256 hash gives a ``source`` path (``nix-store --add``);
    anything else an ``output:out`` path over :func:`fixed_output_fingerprint`.
    """
    if method == "recursive" and content_hash.algorithm == "sha256":
        kind = _with_references("source", references, self_reference)
        return make_store_path(kind, content_hash.digest, name, store_dir)
    assert not list(references) and not self_reference, "fixed outputs refer to nothing"
    inner = fixed_output_fingerprint(method, content_hash)
    return make_store_path("output:out", inner, name, store_dir)


def output_path_name(derivation_name: str, output: str) -> str:
    """Return the name of ``output``: the derivation's name, plus
    ``-OUTPUT`` unless it is ``out`` (Nix's ``outputPathName``)."""
    return derivation_name if output == "out" else f"{derivation_name}-{output}"


def make_output_path(
    output: str, derivation_hash: bytes, derivation_name: str, store_dir: str
) -> StorePath:
    """Return the path of an input-addressed output, as Nix's
    ``makeOutputPath``.

    :param derivation_hash: the derivation's hash modulo, for this output.
    """
    name = output_path_name(derivation_name, output)
    return make_store_path(f"output:{output}", derivation_hash, name, store_dir)
