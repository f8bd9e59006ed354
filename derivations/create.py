"""Create derivations, as Guix's ``derivation`` procedure, and read them back.

:func:`make_derivation` is the pure part: from a name, builder, arguments,
environment, inputs, sources, outputs and options, it computes the complete
record (output paths filled in), its ATerm and its derivation path, without
a store.  :func:`derivation` does that and writes the ``.drv`` into a store
with ``add_text``.  :func:`read_derivation` reads one back, memoised per
process (a derivation path names its content).

Guix's options that the daemon reads from the environment become variables
(``guix/derivations.scm``, ``user+system-env-vars``): ``preferLocalBuild``,
``allowSubstitutes``, ``allowedReferences``, ``disallowedReferences``,
``impureEnvVars``, ``guix properties`` and ``exportReferencesGraph``.  Every
output is also a variable, set to its path.  Inputs given twice are
coalesced with their output names merged (``coalesce-duplicate-inputs``).
"""

from __future__ import annotations

import dataclasses
import platform
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from derivations.aterm_parser import from_aterm
from derivations.aterm_writer import to_aterm
from derivations.derivation import Derivation, DerivationError, DerivationOutput
from derivations.hashing import ModuloCache, derivation_path, with_output_paths
from store.errors import InvalidPathError
from store.hash import ALGORITHMS, Hash
from store.paths import StorePath, check_name

__all__ = [
    "InputSpec",
    "clear_read_cache",
    "current_system",
    "derivation",
    "make_derivation",
    "read_derivation",
]

InputSpec = Derivation | str | tuple[Derivation | str, str | Iterable[str]]
"""An input: a derivation or its path (output ``out``), or one with the
output name(s) used."""

PropertyValue = str | int | bool | Sequence[Any]

_READ_CACHE: dict[tuple[str, str], Derivation] = {}


class _Reader(Protocol):
    """What reading derivations needs of a store (``store.local.LocalStore``)."""

    store_dir: str

    def physical(self, path: str) -> str: ...


class _Store(_Reader, Protocol):
    """What writing derivations needs of a store."""

    def add_text(self, name: str, text: bytes, references: Iterable[str]) -> Any: ...


def current_system() -> str:
    """Return this machine's system type, such as ``x86_64-linux``."""
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(
        platform.machine().lower(), platform.machine().lower()
    )
    return f"{machine}-{sys.platform.rstrip('0123456789')}"


def clear_read_cache() -> None:
    """Forget every derivation :func:`read_derivation` has read."""
    _READ_CACHE.clear()


def read_derivation(store: _Reader, path: str) -> Derivation:
    """Read and parse the derivation at ``path`` in ``store`` (Guix's
    ``read-derivation-from-file``), memoised per process.

    :raises DerivationParseError: if the file is not a derivation.
    :raises DerivationError: if there is no such file.
    :raises InvalidPathError: if ``path`` is not a store path.
    """
    key = (store.store_dir, path)
    found = _READ_CACHE.get(key)
    if found is None:
        StorePath.from_string(path, store.store_dir)
        try:
            with open(store.physical(path), "rb") as file:
                data = file.read()
        except FileNotFoundError:
            raise DerivationError(
                path,
                f"derivation '{path}' is not in the store",
                "create it, or add its .drv with 'pyguix derivation add'",
            ) from None
        found = from_aterm(data, store.store_dir, path=path)
        _READ_CACHE[key] = found
    return found


def _sexp(value: PropertyValue) -> str:
    """Write ``value`` as Guile's ``object->string`` would."""
    if isinstance(value, bool):
        return "#t" if value else "#f"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return "(" + " ".join(_sexp(item) for item in value) + ")"


def _properties(properties: Mapping[str, PropertyValue]) -> str:
    # XXX: keys become symbols and values strings, numbers, booleans or lists;
    # Guix accepts any Scheme object.
    pairs = (f"({key} . {_sexp(value)})" for key, value in properties.items())
    return "(" + " ".join(pairs) + ")"


def _option_env(
    allowed_references: Iterable[str] | None,
    disallowed_references: Iterable[str] | None,
    references_graphs: Iterable[tuple[str, str]] | None,
    local_build: bool,
    substitutable: bool,
    leaked_env_vars: Iterable[str] | None,
    properties: Mapping[str, PropertyValue] | None,
) -> dict[str, str]:
    """Return the variables Guix's options become (``user+system-env-vars``)."""
    env: dict[str, str] = {}
    if local_build:
        env["preferLocalBuild"] = "1"
    if not substitutable:
        env["allowSubstitutes"] = "0"
    if allowed_references is not None:
        env["allowedReferences"] = " ".join(allowed_references)
    if disallowed_references is not None:
        env["disallowedReferences"] = " ".join(disallowed_references)
    if leaked_env_vars is not None:
        env["impureEnvVars"] = " ".join(leaked_env_vars)
    if properties is not None:
        env["guix properties"] = _properties(properties)
    if references_graphs is not None:
        env["exportReferencesGraph"] = " ".join(
            f"{f} {p}" for f, p in references_graphs
        )
    return env


def _coalesce_inputs(
    inputs: Iterable[InputSpec] | Mapping[str, Iterable[str]],
) -> tuple[dict[str, set[str]], dict[str, Derivation]]:
    """Return inputs as path to output names, merged, and the records given."""
    merged: dict[str, set[str]] = {}
    records: dict[str, Derivation] = {}
    items: Iterable[Any] = inputs.items() if isinstance(inputs, Mapping) else inputs
    for item in items:
        target, outputs = item if isinstance(item, tuple) else (item, "out")
        if isinstance(target, Derivation):
            assert target.path, "an input derivation record must have its path"
            records[target.path] = target
            target = target.path
        names = {outputs} if isinstance(outputs, str) else set(outputs)
        merged.setdefault(target, set()).update(names)
    return merged, records


def _check_store_paths(paths: Iterable[str], store_dir: str, what: str) -> None:
    for path in paths:
        try:
            store_path = StorePath.from_string(path, store_dir)
        except InvalidPathError as error:
            raise DerivationError(path, f"{what} {error.message}", error.hint) from None
        if what == "input derivation" and not store_path.is_derivation():
            raise DerivationError(path, f"input derivation '{path}' is not a .drv")


def _fixed_output(
    name: str,
    outputs: Sequence[str],
    hash: Hash | bytes,
    hash_algo: str | None,
    recursive: bool,
) -> DerivationOutput:
    if isinstance(hash, Hash):
        hash_algo, digest = hash.algorithm, hash.digest
    else:
        digest = hash
    if list(outputs) != ["out"]:
        raise DerivationError(
            name, f"fixed-output derivation '{name}' must have one output, 'out'"
        )
    if hash_algo not in ALGORITHMS or ALGORITHMS[hash_algo] != len(digest):
        raise DerivationError(
            name,
            f"'{hash_algo}' with a {len(digest)}-byte digest is not a hash for '{name}'",
            f"use one of {', '.join(ALGORITHMS)} with a digest of its size",
        )
    return DerivationOutput("", hash_algo, digest, recursive)


def _outputs(
    name: str,
    outputs: Sequence[str],
    hash: Hash | bytes | None,
    hash_algo: str | None,
    recursive: bool,
) -> dict[str, DerivationOutput]:
    if not outputs or len(set(outputs)) != len(outputs):
        raise DerivationError(name, f"derivation '{name}' needs distinct output names")
    for output in outputs:
        check_name(f"{name}-{output}")
    if hash is not None:
        return {"out": _fixed_output(name, outputs, hash, hash_algo, recursive)}
    return {output: DerivationOutput("") for output in outputs}


def make_derivation(
    store_dir: str,
    name: str,
    builder: str,
    args: Iterable[str] = (),
    *,
    env: Mapping[str, str] | None = None,
    inputs: Iterable[InputSpec] | Mapping[str, Iterable[str]] = (),
    sources: Iterable[str] = (),
    outputs: Sequence[str] = ("out",),
    system: str | None = None,
    hash: Hash | bytes | None = None,
    hash_algo: str | None = None,
    recursive: bool = False,
    allowed_references: Iterable[str] | None = None,
    disallowed_references: Iterable[str] | None = None,
    references_graphs: Iterable[tuple[str, str]] | None = None,
    local_build: bool = False,
    substitutable: bool = True,
    leaked_env_vars: Iterable[str] | None = None,
    properties: Mapping[str, PropertyValue] | None = None,
    resolve: Any = None,
    cache: ModuloCache | None = None,
) -> tuple[Derivation, bytes]:
    """Return a derivation with its paths computed, and its ATerm, without a
    store (the pure part of Guix's ``derivation``).

    :param inputs: input derivations: records or paths (output ``out``), or
        ``(derivation, outputs)`` pairs, or a mapping path to output names.
        The same derivation given twice is one input with the outputs merged.
    :param sources: store paths used as they are.
    :param outputs: output names; a fixed-output derivation has only ``out``.
    :param system: the system to build on (default: :func:`current_system`).
    :param hash: the declared content hash of a fixed-output derivation, a
        :class:`Hash` or a digest with ``hash_algo``; ``recursive`` says it
        is the hash of the NAR.
    :param allowed_references: the only store paths (or output names) the
        outputs may refer to; ``disallowed_references`` those they must not.
    :param references_graphs: ``(file, path)`` pairs: the builder finds the
        closure of each path in the file.
    :param local_build: prefer building to substituting.
    :param substitutable: whether the outputs may be substituted.
    :param leaked_env_vars: variables a fixed-output build inherits.
    :param properties: free-form metadata, written as a Scheme alist.
    :param resolve: returns an input derivation from its path, for those not
        given as records.
    :raises DerivationError: on an invalid name, output, hash or input.
    """
    check_name(name + ".drv")
    input_map, records = _coalesce_inputs(inputs)
    source_set = frozenset(sources)
    _check_store_paths(input_map, store_dir, "input derivation")
    _check_store_paths(source_set, store_dir, "input source")

    # Options become variables; then every output is a variable, empty for now.
    full_env = _option_env(
        allowed_references,
        disallowed_references,
        references_graphs,
        local_build,
        substitutable,
        leaked_env_vars,
        properties,
    )
    full_env.update(env or {})
    declared = _outputs(name, outputs, hash, hash_algo, recursive)
    full_env.update(dict.fromkeys(declared, ""))

    masked = Derivation(
        name=name,
        outputs=declared,
        input_derivations={path: frozenset(o) for path, o in input_map.items()},
        input_sources=source_set,
        system=system or current_system(),
        builder=builder,
        args=tuple(args),
        env=full_env,
    )

    def resolve_input(path: str) -> Derivation:
        record = records.get(path)
        if record is not None:
            return record
        if resolve is None:
            raise DerivationError(path, f"input derivation '{path}' is unknown")
        found: Derivation = resolve(path)
        return found

    complete = with_output_paths(masked, store_dir, resolve_input, cache)
    aterm = to_aterm(complete)
    path = str(derivation_path(complete, store_dir, aterm))
    return dataclasses.replace(complete, path=path), aterm


def derivation(
    store: _Store,
    name: str,
    builder: str,
    args: Iterable[str] = (),
    **options: Any,
) -> Derivation:
    """Create a derivation and write its ``.drv`` into ``store``, as Guix's
    ``derivation``; return the record, its path set.

    Takes the keyword options of :func:`make_derivation`; input derivations
    not given as records are read from ``store``.

    :raises DerivationError: on an invalid name, output, hash or input.
    """
    options.setdefault("resolve", lambda path: read_derivation(store, path))
    drv, aterm = make_derivation(store.store_dir, name, builder, args, **options)
    written = str(store.add_text(name + ".drv", aterm, sorted(drv.references())))
    assert written == drv.path, (written, drv.path)
    _READ_CACHE[(store.store_dir, drv.path)] = drv
    return drv
