"""The derivation record: what to build, from what, and where results go.

A derivation (Guix's ``<derivation>``, Nix's ``Derivation``) names its
outputs, the input derivations it uses (with the output names used from
each), its input sources, the ``system`` it builds for, the ``builder``, its
``args`` and its ``env``.  Records are immutable; the field names are those of
the ATerm and of Nix's ``derivation show`` JSON (see :mod:`derivations.aterm_writer`).

Strings are ``str``.  A ``.drv`` file may hold bytes that are not UTF-8 (Nix
copies string literals byte for byte); they are decoded with
``surrogateescape``, so writing the record back gives the same bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from store.errors import PyguixError
from store.hash import Hash

__all__ = [
    "Derivation",
    "DerivationError",
    "DerivationOutput",
    "byte_order",
    "name_from_outputs",
    "name_from_path",
]


class DerivationError(PyguixError):
    """Report a derivation that is inconsistent or cannot be used.

    :param path: the derivation path (or name) concerned.
    """

    def __init__(self, path: str, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.path = path


@dataclass(frozen=True, slots=True)
class DerivationOutput:
    """One output of a derivation: its path and, if fixed, its content hash."""

    path: str
    """The full store path of the output; ``""`` while it is being computed."""

    hash_algo: str | None = None
    """For a fixed output, ``md5``, ``sha1``, ``sha256`` or ``sha512``."""

    hash: bytes | None = None
    """For a fixed output, the digest declared up front."""

    recursive: bool = False
    """For a fixed output, whether the hash is of the NAR (else of the file)."""

    def is_fixed(self) -> bool:
        """Tell whether this output's content hash is declared up front."""
        return self.hash is not None

    @property
    def content_hash(self) -> Hash | None:
        """Return the declared hash as a :class:`Hash`, if fixed."""
        if self.hash_algo is None or self.hash is None:
            return None
        return Hash(self.hash_algo, self.hash)

    @property
    def method_algo(self) -> str:
        """Return the ATerm's third field: ``[r:]ALGO``, or ``""`` if not fixed."""
        if self.hash_algo is None:
            return ""
        return ("r:" if self.recursive else "") + self.hash_algo


@dataclass(frozen=True, slots=True, eq=True)
class Derivation:
    """A build recipe, as Guix's ``<derivation>`` and Nix's ``Derivation``.

    The mappings must not be mutated after construction; ATerm writing sorts
    them, so their order does not matter.
    """

    name: str
    """The derivation's name: its path's name without ``.drv``."""

    outputs: Mapping[str, DerivationOutput]
    """Output name to output."""

    input_derivations: Mapping[str, frozenset[str]]
    """Input derivation path to the names of the outputs used from it."""

    input_sources: frozenset[str]
    """Store paths used as they are."""

    system: str
    """The platform to build on, such as ``x86_64-linux``."""

    builder: str
    """The program to run."""

    args: tuple[str, ...]
    """Its arguments, in order."""

    env: Mapping[str, str]
    """Its environment."""

    path: str = ""
    """The derivation path, when known."""

    def __hash__(self) -> int:
        return hash((self.path, self.name, self.builder, self.args))

    def is_fixed_output(self) -> bool:
        """Tell whether this is a fixed-output derivation: one output named
        ``out`` whose hash is declared (Guix's ``fixed-output-derivation?``)."""
        output = self.outputs.get("out")
        return len(self.outputs) == 1 and output is not None and output.is_fixed()

    def output_path(self, output: str = "out") -> str:
        """Return the path of ``output``.

        :raises DerivationError: if there is no such output.
        """
        found = self.outputs.get(output)
        if found is None:
            raise DerivationError(
                self.path or self.name,
                f"derivation '{self.path or self.name}' has no output '{output}'",
                f"its outputs are: {', '.join(sorted(self.outputs))}",
            )
        return found.path

    def output_paths(self) -> dict[str, str]:
        """Return output name to output path, sorted by name."""
        return {name: self.outputs[name].path for name in sorted(self.outputs)}

    def references(self) -> set[str]:
        """Return what the ``.drv`` file refers to: input derivations and sources."""
        return set(self.input_derivations) | set(self.input_sources)


def name_from_path(path: str) -> str:
    """Return the derivation name in derivation path ``path`` (``.drv`` dropped).

    :raises DerivationError: if ``path`` does not name a ``.drv`` file.
    """
    base = path.rsplit("/", 1)[-1]
    if not base.endswith(".drv") or len(base) < 38 or base[32] != "-":
        raise DerivationError(
            path,
            f"'{path}' is not a derivation path",
            "a derivation path looks like STORE/HASH-NAME.drv",
        )
    return base[33:-4]


def byte_order(text: str) -> bytes:
    """Return the key that sorts strings by their bytes, as Nix's ``std::map``."""
    return text.encode("utf-8", "surrogateescape")


def name_from_outputs(outputs: Mapping[str, DerivationOutput]) -> str:
    """Return the derivation name that the output paths are named after
    (``NAME`` for ``out``, ``NAME-OUTPUT`` otherwise)."""
    output, value = min(outputs.items(), key=lambda item: (item[0] != "out", item[0]))
    base = value.path.rsplit("/", 1)[-1][33:]
    return base if output == "out" else base[: -len(output) - 1]
