"""Lower file-like objects and gexps to derivations and store items.

This is the part of Guix's ``guix/gexp.scm`` that talks to the store:
``lower-object``, ``lower-gexp``, ``gexp->derivation``, ``gexp->script``
and ``imported-modules``.

Lowering an object runs its compiler (see :func:`derivations.gexp.register_compiler`),
which yields a derivation, a store path, or another file-like object
lowered in turn.  It is memoised twice:

- per store connection, with :func:`derivations.monad.mcached` keyed on the
  object (compared by value) and the system, as Guix's ``lower-object``;
- across processes, by :mod:`derivations.lowering_cache`, keyed on a
  digest of the object's *fingerprint* (its content and options).  The
  cache file is saved when the outermost lowering returns.

Above both, the commands that evaluate a file (``pyguix system``,
``pyguix build -f``) keep the paths a whole evaluation gave, checked
against every file it read (``derivations.lowering_cache.EvaluationCache``).

Object graphs are as deep as their users make them (a bootstrap chain of
packages is thousands of levels), so no step recurses once per level: the
store monad runs on an explicit stack, and so do keys (:func:`object_key`),
the walks of :mod:`derivations.gexp` and the hashes of input derivations.

**The bootstrap interpreter is impure.**  A gexp's builder is Python run by
the host's interpreter, ``os.path.realpath(sys.executable)``: that path is
the derivation's ``builder``, and its identity (``python-X.Y.Z at PATH``) is
in the environment variable ``PYGUIX_INTERPRETER``, so a different
interpreter gives different derivations.  Its standard library and
whatever else it loads come from the host, outside the store: this is the
one input pyguix does not track by content.  Builders run it as
``python -S -B -P BUILDER``: no ``site`` (no host site-packages, no user
site), no bytecode written, no script directory on ``sys.path``; the
variables ``PYTHONHASHSEED=0``, ``PYTHONDONTWRITEBYTECODE=1``,
``LC_ALL=C.UTF-8``, ``PYTHONIOENCODING=utf-8`` and ``SOURCE_DATE_EPOCH=1``
(the time tools should stamp, as Guix's build systems set it) make it
deterministic (``-I`` is not used, since it would ignore those variables;
the build environment is the derivation's own anyway).  Scripts
(:func:`gexp_to_script`) run outside builds with ``#!PYTHON -IB``: ``-B``
because a script run by root would otherwise write ``__pycache__`` into
the read-only module tree it imports, changing a valid store item.
XXX: ``-I`` ignores ``PYTHONHASHSEED``, so a script run inside a build
hashes strings with a random seed.

A builder script is ``NAME-builder``, text added to the store whose
references are the store items it names (sources and the module tree);
the outputs of input derivations it names are inputs of the derivation
instead, as they need not exist yet.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import platform
import sys
import tempfile
import weakref
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgpack

from derivations.create import derivation, read_derivation
from derivations.derivation import Derivation
from derivations.gexp import (
    DerivationRef,
    Gexp,
    GexpInput,
    compiler_for,
    expand_gexp,
    gexp,
    gexp_inputs,
    gexp_outputs,
    gexp_text,
    is_derivation,
)
from derivations.lowering_cache import CacheStats, LoweringCache, note_dependency
from derivations.modules import (
    PROJECT_ROOT,
    module_files,
    module_tree_digest,
    source_module_closure,
    write_module_tree,
)
from derivations.monad import (
    MValue,
    current_state,
    current_system,
    mcached,
    monadic,
    mreturn,
    text_file,
)
from store.errors import PyguixError
from store.paths import StorePath

__all__ = [
    "BUILDER_FLAGS",
    "Interpreter",
    "LoweredGexp",
    "LoweringError",
    "bootstrap_interpreter",
    "expand_lowered",
    "gexp_to_derivation",
    "gexp_to_script",
    "imported_modules",
    "lower_gexp",
    "lower_object",
    "lowering_cache",
    "lowering_stats",
    "object_key",
]

BUILDER_FLAGS = ("-S", "-B", "-P")
"""Interpreter flags of every builder, before the builder script."""

Lowered = Derivation | StorePath
T = TypeVar("T")


class LoweringError(PyguixError):
    """Report an object that cannot be lowered.

    :param thing: the object at fault.
    """

    def __init__(self, thing: object, reason: str, hint: str | None = None) -> None:
        super().__init__(f"cannot lower '{_describe(thing)}': {reason}", hint)
        self.thing = thing


def _describe(thing: object) -> str:
    """Return the ``repr`` of ``thing``, or its type and name when that
    nests too deep to print (the generated ``repr`` of a long chain)."""
    try:
        return repr(thing)
    except RecursionError:
        name = getattr(thing, "name", None)
        suffix = "" if name is None else f" {name!r}"
        return f"<{type(thing).__name__}{suffix}>"


# ---------------------------------------------------------------------------
# The bootstrap interpreter


@dataclass(frozen=True)
class Interpreter:
    """The host Python that runs builders and scripts."""

    path: str
    """Its real path, symlinks resolved."""

    version: str
    """Its version, such as ``3.11.2``."""

    @property
    def identity(self) -> str:
        """Return ``python-X.Y.Z at PATH``."""
        return f"python-{self.version} at {self.path}"


@functools.cache
def bootstrap_interpreter() -> Interpreter:
    """Return the interpreter running pyguix, which builders use too."""
    return Interpreter(os.path.realpath(sys.executable), platform.python_version())


# ---------------------------------------------------------------------------
# Per-store sessions: the persistent cache and the nesting depth


@dataclass
class _Session:
    """What lowering keeps per store object."""

    cache: LoweringCache
    depth: int = 0
    # XXX: fingerprints are memoised for the store's lifetime, so a local
    # file edited meanwhile keeps its old key, as Guix's add-to-store cache.
    fingerprints: dict[Any, bytes | None] = field(default_factory=dict)


_SESSIONS: weakref.WeakKeyDictionary[Any, _Session] = weakref.WeakKeyDictionary()


def _session(store: Any) -> _Session:
    """Return the lowering session of ``store``."""
    session = _SESSIONS.get(store)
    if session is None:
        session = _SESSIONS[store] = _Session(LoweringCache(store))
    return session


def lowering_cache(store: Any) -> LoweringCache:
    """Return the persistent lowering cache of ``store``."""
    return _session(store).cache


def lowering_stats(store: Any) -> CacheStats:
    """Return how many objects were lowered and how many came from the
    persistent cache, since ``store`` was opened."""
    return _session(store).cache.stats


# ---------------------------------------------------------------------------
# Stable keys


class _Unkeyable(Exception):
    """Raised inside fingerprinting for an object without a fingerprint."""


class _Pending:
    """What ``fingerprint_of`` gives for an object whose digest is not known
    yet: the digest is put in its place when the data is packed."""

    __slots__ = ("thing",)

    def __init__(self, thing: Any) -> None:
        self.thing = thing


@dataclass
class _Frame:
    """An object being fingerprinted, waiting for the objects it refers to."""

    thing: Any
    data: Any
    waiting: list[Any]
    """The referred objects not fingerprinted yet, last one first."""


@functools.cache
def _pyguix_version() -> str:
    """Return the installed pyguix version (read from its metadata, since
    the ``pyguix`` package is the layer above this one)."""
    try:
        return importlib.metadata.version("pyguix")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@functools.cache
def _toolchain_digest() -> str:
    """Return a digest of the code that turns objects into derivations, so
    that changing it never reuses entries it would now compute otherwise."""
    digest = hashlib.sha256()
    for name in (
        "gexp",
        "lowering",
        "file_like",
        "modules",
        "create",
        "aterm_writer",
        "hashing",
    ):
        path = PROJECT_ROOT / "derivations" / f"{name}.py"
        digest.update(path.read_bytes() if path.exists() else b"")
    return digest.hexdigest()


def _fingerprint(obj: Any, memo: dict[Any, bytes | None]) -> bytes:
    """Return the sha256 of ``obj``'s canonical fingerprint: the msgpack of
    its type's name and the data its compiler's ``fingerprint`` gives, in
    which each object it refers to stands for its own digest.

    Objects refer to objects as deep as a package chain goes, so this is a
    post-order walk from an explicit stack: an object's data is taken once,
    with a :class:`_Pending` mark for each object not fingerprinted yet;
    those are fingerprinted next, then the data is packed, marks replaced.
    ``memo`` keeps each digest, or ``None`` for an object without one.

    :raises _Unkeyable: when ``obj`` or something it refers to has none.
    :raises LoweringError: when an object refers to itself.
    """
    known = _known_digest(obj, memo)
    if known is not None:
        return known
    stack: list[_Frame] = []
    active: set[Any] = set()
    frame = _start_frame(obj, memo, active)
    try:
        while True:
            while frame.waiting and _known_digest(frame.waiting[-1], memo) is not None:
                frame.waiting.pop()
            if frame.waiting:
                stack.append(frame)
                frame = _start_frame(frame.waiting.pop(), memo, active)
                continue
            digest = memo[frame.thing] = _digest(frame.thing, frame.data, memo)
            active.discard(frame.thing)
            if not stack:
                return digest
            frame = stack.pop()
    except _Unkeyable:
        # What refers to an object without a fingerprint has none either.
        for waiting in [*stack, frame]:
            memo[waiting.thing] = None
        raise


def _known_digest(obj: Any, memo: dict[Any, bytes | None]) -> bytes | None:
    """Return the digest of ``obj`` if it needs no walk: a derivation, a
    store path or an object in ``memo``.

    :raises _Unkeyable: when ``memo`` says ``obj`` has no fingerprint.
    """
    if is_derivation(obj):
        return hashlib.sha256(b"derivation\0" + obj.path.encode()).digest()
    if isinstance(obj, StorePath):
        return hashlib.sha256(b"path\0" + str(obj).encode()).digest()
    if obj not in memo:
        return None
    digest = memo[obj]
    if digest is None:
        raise _Unkeyable()
    return digest


def _start_frame(obj: Any, memo: dict[Any, bytes | None], active: set[Any]) -> _Frame:
    """Run the fingerprint procedure of ``obj`` and add it to ``active``,
    the objects whose data is taken but not packed yet.

    :raises _Unkeyable: when ``obj`` or an object it refers to has no
        fingerprint (``obj`` is then recorded as such).
    """
    waiting: dict[Any, _Pending] = {}

    def fingerprint_of(other: Any) -> Any:
        known = _known_digest(other, memo)
        if known is not None:
            return known
        if other in active or other == obj:
            raise LoweringError(obj, "it refers to itself", "break the cycle")
        return waiting.setdefault(other, _Pending(other))

    try:
        compiler = compiler_for(obj)
        if compiler is None or compiler.fingerprint is None:
            raise _Unkeyable()
        data = compiler.fingerprint(obj, fingerprint_of)
    except _Unkeyable:
        memo[obj] = None
        raise
    active.add(obj)
    return _Frame(obj, data, list(reversed(waiting)))


def _digest(obj: Any, data: Any, memo: dict[Any, bytes | None]) -> bytes:
    """Return the sha256 of the msgpack of ``obj``'s type name and ``data``."""
    kind = f"{type(obj).__module__}.{type(obj).__qualname__}"
    digest = hashlib.sha256()
    for chunk in _packed([kind, data], memo):
        digest.update(chunk)
    return digest.digest()


def _packed(data: Any, memo: dict[Any, bytes | None]) -> Iterator[bytes]:
    """Yield the bytes of ``msgpack.packb(data, use_bin_type=True)``, each
    :class:`_Pending` mark packed as the digest in ``memo``, with no limit on
    nesting (the packer's is 511 levels, and fingerprints of nested gexps
    go deeper): containers are written here, from an explicit stack, and
    the packer writes the rest."""
    packer = msgpack.Packer(use_bin_type=True)
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list | tuple):
            yield _header(len(item), 0x90, 0xDC)
            stack.extend(reversed(item))
        elif isinstance(item, dict):
            yield _header(len(item), 0x80, 0xDE)
            for key, value in reversed(list(item.items())):
                stack += [value, key]
        elif isinstance(item, _Pending):
            yield packer.pack(memo[item.thing])
        else:
            yield packer.pack(item)


def _header(length: int, fixed: int, sized: int) -> bytes:
    """Return a msgpack array or map header: ``fixed`` holds up to 15 items
    in its low bits, ``sized`` is followed by a 16-bit and ``sized + 1`` by a
    32-bit count."""
    if length < 16:
        return bytes([fixed | length])
    if length < 1 << 16:
        return bytes([sized]) + length.to_bytes(2, "big")
    return bytes([sized + 1]) + length.to_bytes(4, "big")


def object_key(
    obj: Any, system: str, store_dir: str, memo: dict[Any, bytes | None] | None = None
) -> bytes | None:
    """Return the persistent cache key of ``obj`` lowered for ``system`` in
    ``store_dir``, or ``None`` if ``obj`` cannot be keyed by content."""
    try:
        fingerprint = _fingerprint(obj, {} if memo is None else memo)
    except _Unkeyable:
        return None
    header = [
        "pyguix-lowering",
        _pyguix_version(),
        bootstrap_interpreter().identity,
        _toolchain_digest(),
        store_dir,
        system,
    ]
    return hashlib.sha256(
        msgpack.packb([*header, fingerprint], use_bin_type=True)
    ).digest()


# ---------------------------------------------------------------------------
# lower-object


def lower_object(obj: Any, system: str | None = None) -> MValue[Lowered]:
    """Return the derivation or store path ``obj`` lowers to (Guix's
    ``lower-object``), for ``system`` or the current system.

    Derivations and store paths lower to themselves.

    :raises LoweringError: when ``obj`` is not file-like.
    """
    if is_derivation(obj) or isinstance(obj, StorePath):
        return mreturn(obj)
    if compiler_for(obj) is None:
        raise LoweringError(
            obj, "it is not a file-like object", "register a compiler for its type"
        )
    return _lower_memoised(obj, system)


@monadic
def _lower_memoised(obj: Any, system: str | None) -> Any:
    """Lower ``obj``, memoised per connection on ``(obj, system)``."""
    system = system or (yield current_system())
    lowered = yield mcached(
        "lower-object", (obj, system), lambda: _lower_fresh(obj, system)
    )
    return lowered


@monadic
def _lower_fresh(obj: Any, system: str) -> Any:
    """Lower ``obj`` through the persistent cache, then its compiler."""
    state = yield current_state()
    session = _session(state.store)
    key = object_key(obj, system, state.store.store_dir, session.fingerprints)
    if key is not None:
        found = session.cache.lookup(key)
        if found is not None:
            return _from_entry(state.store, *found)

    result = yield _batch(_run_compiler(obj, system, key))
    return result


@monadic
def _batch(mvalue: MValue[T]) -> Any:
    """Run ``mvalue`` as part of a lowering; the outermost one saves the
    persistent cache when it ends, so a big graph costs one write."""
    state = yield current_state()
    session = _session(state.store)
    session.depth += 1
    try:
        result = yield mvalue
    finally:
        session.depth -= 1
        if session.depth == 0:
            session.cache.save()
    return result


@monadic
def _run_compiler(obj: Any, system: str, key: bytes | None) -> Any:
    """Run ``obj``'s compiler, lowering what it returns until it is a
    derivation or a store path; remember the result under ``key``."""
    state = yield current_state()
    compiler = compiler_for(obj)
    assert compiler is not None
    result = yield compiler.lower(obj, system)
    while not (is_derivation(result) or isinstance(result, StorePath)):
        if compiler_for(result) is None:
            raise LoweringError(obj, f"its compiler returned {result!r}")
        result = yield lower_object(result, system)
    _remember(_session(state.store), key, result)
    return result


def _remember(session: _Session, key: bytes | None, result: Lowered) -> None:
    """Record ``result`` under ``key``, or count an unkeyed lowering."""
    if key is None:
        session.cache.stats.misses += 1
    elif isinstance(result, StorePath):
        session.cache.record(key, "path", str(result))
    else:
        session.cache.record(key, "drv", result.path)


def _from_entry(store: Any, kind: str, path: str) -> Lowered:
    """Return the derivation or store path a cache entry names."""
    if kind == "drv":
        return read_derivation(store, path)
    return StorePath.from_string(path, store.store_dir)


def expand_lowered(obj: Any, lowered: Lowered, output: str = "out") -> str:
    """Return the path text of ``obj``'s ``output``, once lowered to
    ``lowered`` (Guix's compiler ``expand``)."""
    compiler = compiler_for(obj)
    if compiler is not None and compiler.expand is not None:
        return compiler.expand(obj, lowered, output)
    if isinstance(lowered, Derivation):
        return lowered.output_path(output)
    return str(lowered)


# ---------------------------------------------------------------------------
# Imported modules


def imported_modules(modules: Iterable[str]) -> MValue[StorePath | None]:
    """Return the store item holding ``modules`` and, recursively, the
    project modules they import, under their package directories (Guix's
    ``imported-modules``, named ``module-import``); ``None`` if no modules."""
    closure = source_module_closure(modules)
    if not closure:
        return mreturn(None)
    for _, source in module_files(closure):
        note_dependency(source)
    digest = module_tree_digest(closure)

    def add() -> MValue[StorePath]:
        return MValue(
            lambda state: _add_module_tree(state.store, closure), "module-import"
        )

    return mcached("imported-modules", (closure, digest), add)


def _add_module_tree(store: Any, closure: tuple[str, ...]) -> StorePath:
    """Copy the modules into a temporary tree and add it to ``store``."""
    with tempfile.TemporaryDirectory(prefix="pyguix-modules-") as temp:
        tree = os.path.join(temp, "module-import")
        os.mkdir(tree)
        write_module_tree(closure, tree)
        path: StorePath = store.add_path(tree, name="module-import", recursive=True)
        return path


# ---------------------------------------------------------------------------
# lower-gexp


@dataclass(frozen=True)
class LoweredGexp:
    """A gexp with its inputs lowered (Guix's ``<lowered-gexp>``)."""

    code: str
    """The Python code, every reference expanded."""

    inputs: tuple[tuple[Derivation, tuple[str, ...]], ...]
    """Input derivations and the outputs used, sorted by derivation path."""

    sources: tuple[str, ...]
    """Store items used as they are, sorted (the module tree included)."""

    modules_item: str | None
    """The module tree to put on ``sys.path``, if any."""


@monadic
def lower_gexp(g: Gexp, system: str | None = None, modules: Iterable[str] = ()) -> Any:
    """Lower every input of ``g`` and expand its code (Guix's
    ``lower-gexp``); yield a :class:`LoweredGexp`."""
    state = yield current_state()
    system = system or state.system
    store_dir = state.store.store_dir.rstrip("/") + "/"
    inputs: dict[str, tuple[Derivation, set[str]]] = {}
    sources: set[str] = set()
    texts: dict[GexpInput, str] = {}

    for item in gexp_inputs(g):
        texts[item] = yield _lower_input(item, system, store_dir, inputs, sources)

    modules_item = yield imported_modules({*g.modules, *modules})
    if modules_item is not None:
        sources.add(str(modules_item))

    code = expand_gexp(g, texts.__getitem__)
    ordered = tuple(
        (inputs[path][0], tuple(sorted(inputs[path][1]))) for path in sorted(inputs)
    )
    modules_text = None if modules_item is None else str(modules_item)
    return LoweredGexp(code, ordered, tuple(sorted(sources)), modules_text)


@monadic
def _lower_input(
    item: GexpInput,
    system: str,
    store_dir: str,
    inputs: dict[str, tuple[Derivation, set[str]]],
    sources: set[str],
) -> Any:
    """Lower one gexp input, record it in ``inputs`` or ``sources``, and
    return its path text."""
    thing = item.thing
    if isinstance(thing, str):
        if thing.startswith(store_dir):
            sources.add(thing)
        return thing
    if isinstance(thing, DerivationRef):
        _add_input(inputs, thing.derivation, item.output)
        return thing.derivation.output_path(item.output)
    lowered = yield lower_object(thing, system)
    if isinstance(lowered, Derivation):
        _add_input(inputs, lowered, item.output)
    else:
        sources.add(str(lowered))
    return expand_lowered(thing, lowered, item.output)


def _add_input(
    inputs: dict[str, tuple[Derivation, set[str]]], drv: Derivation, output: str
) -> None:
    """Record output ``output`` of ``drv`` as used."""
    drv.output_path(output)
    inputs.setdefault(drv.path, (drv, set()))[1].add(output)


# ---------------------------------------------------------------------------
# gexp->derivation


def _builder_text(name: str, lowered: LoweredGexp) -> str:
    """Return the builder script: a prologue, then the gexp's code."""
    lines = [
        f"# Builder of {name}, run by the bootstrap interpreter.",
        "import os",
        "import sys",
    ]
    if lowered.modules_item is not None:
        lines.append(f"sys.path.insert(0, {lowered.modules_item!r})")
    code = lowered.code if lowered.code.endswith("\n") else lowered.code + "\n"
    return "\n".join(lines) + "\n\n" + code


def _base_env(env_vars: Mapping[str, str] | None) -> dict[str, str]:
    """Return the builder environment: the determinism variables, the
    interpreter identity, then ``env_vars``."""
    env = {
        "LC_ALL": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONIOENCODING": "utf-8",
        "SOURCE_DATE_EPOCH": "1",
        "PYGUIX_INTERPRETER": bootstrap_interpreter().identity,
    }
    env.update(env_vars or {})
    return env


@monadic
def _lower_path_list(
    things: Iterable[Any] | None,
    system: str,
    inputs: dict[str, tuple[Derivation, set[str]]],
    sources: set[str],
) -> Any:
    """Lower allowed/disallowed references: output names and store path
    strings stay, file-like objects and derivations become their paths."""
    if things is None:
        return None
    result: list[str] = []
    for thing in things:
        if isinstance(thing, str):
            result.append(thing)
            continue
        lowered = yield lower_object(thing, system)
        if isinstance(lowered, Derivation):
            _add_input(inputs, lowered, "out")
        else:
            sources.add(str(lowered))
        result.append(expand_lowered(thing, lowered))
    return result


@monadic
def _lower_graphs(
    graphs: Iterable[tuple[str, Any]] | None,
    system: str,
    inputs: dict[str, tuple[Derivation, set[str]]],
    sources: set[str],
) -> Any:
    """Lower ``(file, object)`` references graphs to ``(file, path)``."""
    if graphs is None:
        return None
    result: list[tuple[str, str]] = []
    for file, thing in graphs:
        paths = yield _lower_path_list([thing], system, inputs, sources)
        result.append((file, paths[0]))
    return result


def gexp_to_derivation(
    name: str,
    g: Gexp,
    *,
    system: str | None = None,
    env_vars: Mapping[str, str] | None = None,
    modules: Iterable[str] = (),
    hash: Any = None,
    hash_algo: str | None = None,
    recursive: bool = False,
    local_build: bool = False,
    substitutable: bool = True,
    allowed_references: Iterable[Any] | None = None,
    disallowed_references: Iterable[Any] | None = None,
    references_graphs: Iterable[tuple[str, Any]] | None = None,
    leaked_env_vars: Iterable[str] | None = None,
    properties: Mapping[str, Any] | None = None,
    script_name: str | None = None,
) -> MValue[Derivation]:
    """Return a derivation that runs ``g`` as its builder (Guix's
    ``gexp->derivation``).

    The builder script ``script_name`` (default ``NAME-builder``) is the
    gexp's code after a prologue importing ``os`` and ``sys`` and putting
    the module tree of ``modules`` (and those ``g`` was tagged with) on
    ``sys.path``.  The derivation's inputs are exactly the derivation
    outputs ``g`` refers to; its sources the builder, the store items ``g``
    refers to and the module tree; its outputs those ``g`` mentions
    (``out`` if none, only ``out`` for a fixed-output derivation).

    :param hash: the declared hash of a fixed-output derivation, with
        ``hash_algo`` and ``recursive`` as for ``derivations.create``.
    :param references_graphs: ``(file, object)`` pairs; the closure of each
        object's path is written to ``file`` in the build directory.
    :param allowed_references: output names, store paths or file-like
        objects the outputs may refer to; ``disallowed_references`` the
        same for those they must not.
    """

    @monadic
    def make() -> Any:
        state = yield current_state()
        target = system or state.system
        lowered = yield lower_gexp(g, target, modules)
        inputs = {drv.path: (drv, set(outputs)) for drv, outputs in lowered.inputs}
        sources = set(lowered.sources)
        allowed = yield _lower_path_list(allowed_references, target, inputs, sources)
        disallowed = yield _lower_path_list(
            disallowed_references, target, inputs, sources
        )
        graphs = yield _lower_graphs(references_graphs, target, inputs, sources)

        builder = yield text_file(
            script_name or f"{name}-builder",
            _builder_text(name, lowered).encode(),
            sorted(sources),
        )
        return derivation(
            state.store,
            name,
            bootstrap_interpreter().path,
            [*BUILDER_FLAGS, str(builder)],
            env=_base_env(env_vars),
            inputs=[(drv, sorted(outputs)) for drv, outputs in inputs.values()],
            sources=sorted({str(builder), *sources}),
            outputs=("out",) if hash is not None else gexp_outputs(g),
            system=target,
            hash=hash,
            hash_algo=hash_algo,
            recursive=recursive,
            allowed_references=allowed,
            disallowed_references=disallowed,
            references_graphs=graphs,
            local_build=local_build,
            substitutable=substitutable,
            leaked_env_vars=leaked_env_vars,
            properties=properties,
        )

    return _batch(make())


# ---------------------------------------------------------------------------
# gexp->script


_SCRIPT_WRITER = """
with open($out, "w", encoding="utf-8") as script:
    script.write($text)
os.chmod($out, 0o555)
"""


def gexp_to_script(
    name: str, g: Gexp, modules: Iterable[str] = (), *, system: str | None = None
) -> MValue[Derivation]:
    """Return a derivation whose output is an executable script running
    ``g`` (Guix's ``gexp->script``): ``#!PYTHON -IB``, a prologue putting
    the module tree on ``sys.path``, then the code; mode 0555, built
    locally, not substitutable."""

    @monadic
    def make() -> Any:
        item = yield imported_modules({*g.modules, *modules})
        interpreter = bootstrap_interpreter().path.replace("$", "$$")
        header = f"#!{interpreter} -IB\n# Script {name.replace('$', '$$')}.\nimport os\nimport sys\n"
        if item is None:
            script = gexp(header + "\n$body\n", body=g)
        else:
            script = gexp(
                header + "sys.path.insert(0, $modules)\n\n$body\n",
                body=g,
                modules=str(item),
            )
        writer = gexp(_SCRIPT_WRITER, text=gexp_text(script))
        untagged = Gexp(writer.parts, writer.references, ())
        drv = yield gexp_to_derivation(
            name, untagged, system=system, local_build=True, substitutable=False
        )
        return drv

    return make()
