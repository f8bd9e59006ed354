"""Compute a derivation's hash modulo, its output paths and its own path.

Nix's ``hashDerivationModulo`` (``libstore/derivations.cc``, 2.8) and Guix's
``derivation-hash`` (``guix/derivations.scm``):

* a fixed-output derivation hashes to
  ``sha256("fixed:out:[r:]ALGO:HEX:OUTPATH")``: its declared output alone, so
  changing a fetcher's builder changes nothing downstream;
* any other derivation hashes to the sha256 of its ATerm in which each input
  derivation path is replaced by the base16 hash modulo of that input (its
  ``.drv`` as written, outputs filled in), re-sorted by that hex string; two
  inputs with the same hash have their output names merged (Nix 2.8's
  ``inputs2[hex].insert(o)``; the Guix daemon overwrites instead).

Every output of a derivation has the same hash, except that a fixed-output
one has only ``out``.  Output paths are computed on the *masked* derivation
(empty output paths and output variables): ``makeOutputPath`` over the hash,
or ``makeFixedOutputPath`` for a fixed output.  The derivation path is a text
path over the sha256 of the ATerm, referring to the inputs and sources.

Input hashes are memoised in a :class:`ModuloCache` keyed by derivation path:
a derivation path names its content, so the cache never goes stale.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Mapping

from derivations.aterm_writer import to_aterm
from derivations.derivation import Derivation, DerivationError, DerivationOutput
from store.paths import (
    StorePath,
    make_fixed_output_path,
    make_output_path,
    make_text_path,
)

__all__ = [
    "ModuloCache",
    "OutputPathMismatch",
    "Resolver",
    "check_output_paths",
    "derivation_path",
    "hash_derivation_modulo",
    "with_output_paths",
    "without_output_paths",
]

Resolver = Callable[[str], Derivation]
"""Return the derivation at a derivation path (reading it from a store)."""


class ModuloCache:
    """Memoise hash modulo per derivation path (Nix's ``drvHashes``)."""

    def __init__(self) -> None:
        self.hashes: dict[str, dict[str, bytes]] = {}

    def __len__(self) -> int:
        return len(self.hashes)

    def clear(self) -> None:
        """Forget every hash."""
        self.hashes.clear()


DEFAULT_CACHE = ModuloCache()
"""The per-process cache used when none is given."""


def _fixed_output_hash(drv: Derivation, store_dir: str | None) -> dict[str, bytes]:
    """Hash a fixed output by what it declares; like Nix 2.8, its path is
    computed from the hash and the name, not taken from the derivation."""
    output = drv.outputs["out"]
    if store_dir is None:
        known = drv.path or output.path
        assert known, "the store directory of a fixed output must be known"
        store_dir = known.rsplit("/", 1)[0]
    path = _output_path(drv, "out", b"", store_dir)
    assert output.hash is not None
    text = f"fixed:out:{output.method_algo}:{output.hash.hex()}:{path}"
    return {"out": hashlib.sha256(text.encode()).digest()}


def _input_hash(
    path: str, resolve: Resolver, cache: ModuloCache
) -> Mapping[str, bytes]:
    """Return the hash modulo of input derivation ``path`` (Nix's
    ``pathDerivationModulo``), memoised."""
    found = cache.hashes.get(path)
    if found is None:
        _hash_closure(path, resolve, cache)
        found = cache.hashes[path]
    return found


def _hash_closure(path: str, resolve: Resolver, cache: ModuloCache) -> None:
    """Put in ``cache`` the hash modulo of ``path`` and of the derivations
    it depends on that are not there yet, each after its inputs.

    An explicit stack, not recursion: a chain of thousands of derivations
    would exhaust Python's.  Each hash is then computed with its inputs'
    hashes already cached, so :func:`hash_derivation_modulo` does not
    come back here.
    """
    stack: list[tuple[str, Derivation | None]] = [(path, None)]
    while stack:
        current, drv = stack.pop()
        if current in cache.hashes:
            continue

        if drv is None:
            drv = resolve(current)
            stack.append((current, drv))
            stack.extend(
                (input_path, None)
                for input_path in drv.input_derivations
                if input_path not in cache.hashes
            )
            continue

        cache.hashes[current] = hash_derivation_modulo(drv, resolve, False, cache)


def _replaced_inputs(
    drv: Derivation, resolve: Resolver, cache: ModuloCache
) -> dict[str, set[str]]:
    """Return ``drv``'s inputs keyed by their hex hash modulo, merged."""
    inputs: dict[str, set[str]] = {}
    for path, outputs in drv.input_derivations.items():
        hashes = _input_hash(path, resolve, cache)
        for output in outputs:
            digest = hashes.get(output)
            if digest is None:
                raise DerivationError(
                    path,
                    f"derivation '{drv.path or drv.name}' uses output '{output}' "
                    f"of '{path}', which has no such output",
                    f"its outputs are: {', '.join(sorted(hashes))}",
                )
            inputs.setdefault(digest.hex(), set()).add(output)
    return inputs


def hash_derivation_modulo(
    drv: Derivation,
    resolve: Resolver,
    mask_outputs: bool,
    cache: ModuloCache | None = None,
    store_dir: str | None = None,
) -> dict[str, bytes]:
    """Return the hash modulo of ``drv`` for each output, as Nix 2.8's
    ``hashDerivationModulo``.

    :param resolve: returns an input derivation from its path.
    :param mask_outputs: hash with empty output paths and output variables,
        as when computing ``drv``'s own output paths.
    :param cache: memo of input hashes (default: the per-process one).
    :param store_dir: the store directory, for a fixed-output derivation
        whose paths are not filled in yet (default: taken from its paths).
    :raises DerivationError: if an input lacks an output it is used for.
    """
    if drv.is_fixed_output():
        return _fixed_output_hash(drv, store_dir)
    inputs = _replaced_inputs(drv, resolve, DEFAULT_CACHE if cache is None else cache)
    digest = hashlib.sha256(to_aterm(drv, mask_outputs, inputs)).digest()
    return {output: digest for output in drv.outputs}


def _output_path(drv: Derivation, output: str, digest: bytes, store_dir: str) -> str:
    value = drv.outputs[output]
    content_hash = value.content_hash
    if content_hash is None:
        return str(make_output_path(output, digest, drv.name, store_dir))
    if value.recursive:
        return str(
            make_fixed_output_path("recursive", content_hash, drv.name, store_dir)
        )
    return str(make_fixed_output_path("flat", content_hash, drv.name, store_dir))


def with_output_paths(
    drv: Derivation,
    store_dir: str,
    resolve: Resolver,
    cache: ModuloCache | None = None,
) -> Derivation:
    """Return ``drv`` with its output paths computed and filled into its
    outputs and into the env variables named after them (Guix's
    ``add-output-paths``, Nix's ``prim_derivationStrict``).

    :raises DerivationError: if an input lacks an output it is used for.
    """
    hashes = hash_derivation_modulo(drv, resolve, True, cache, store_dir)
    paths = {
        name: _output_path(drv, name, hashes.get(name, b""), store_dir)
        for name in drv.outputs
    }
    outputs = {
        name: DerivationOutput(paths[name], out.hash_algo, out.hash, out.recursive)
        for name, out in drv.outputs.items()
    }
    env = dict(drv.env)
    env.update(paths)
    return dataclasses.replace(drv, outputs=outputs, env=env)


def without_output_paths(drv: Derivation) -> Derivation:
    """Return ``drv`` as it was before its output paths were computed: empty
    output paths and output variables."""
    outputs = {
        name: DerivationOutput("", out.hash_algo, out.hash, out.recursive)
        for name, out in drv.outputs.items()
    }
    env = {key: "" if key in drv.outputs else value for key, value in drv.env.items()}
    return dataclasses.replace(drv, outputs=outputs, env=env)


class OutputPathMismatch(DerivationError):
    """Report an output path, or output variable, that is not the computed one.

    :param output: the output name.
    :param actual: the path the derivation gives.
    :param expected: the path computed from the derivation.
    """

    def __init__(
        self, drv: Derivation, output: str, actual: str, expected: str
    ) -> None:
        where = drv.path or drv.name
        super().__init__(
            where,
            f"output '{output}' of derivation '{where}' is '{actual}', "
            f"but its computed path is '{expected}'",
            "the derivation was changed after its output paths were computed; "
            "recreate it",
        )
        self.output = output
        self.actual = actual
        self.expected = expected


def check_output_paths(
    drv: Derivation,
    store_dir: str,
    resolve: Resolver,
    cache: ModuloCache | None = None,
) -> None:
    """Check that ``drv``'s output paths, and the variables named after its
    outputs, are the ones computed from it (Nix's ``checkInvariants``).

    :raises OutputPathMismatch: naming the first output that differs.
    """
    computed = with_output_paths(without_output_paths(drv), store_dir, resolve, cache)
    for name in sorted(drv.outputs):
        expected = computed.outputs[name].path
        if drv.outputs[name].path != expected:
            raise OutputPathMismatch(drv, name, drv.outputs[name].path, expected)
        if drv.env.get(name) != expected:
            raise OutputPathMismatch(drv, name, drv.env.get(name, ""), expected)


def derivation_path(
    drv: Derivation, store_dir: str, aterm: bytes | None = None
) -> StorePath:
    """Return the derivation path of ``drv``, as Nix's ``writeDerivation``:
    the text path of its ATerm, referring to its inputs and sources.

    :param aterm: ``to_aterm(drv)``, if already computed.
    """
    text = to_aterm(drv) if aterm is None else aterm
    return make_text_path(
        drv.name + ".drv",
        hashlib.sha256(text).digest(),
        drv.references(),
        store_dir,
    )
