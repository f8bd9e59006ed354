"""G-expressions: Python builder source with holes for store references.

Guix's gexps (``guix/gexp.scm``) are S-expressions whose ``#$`` escapes
refer to file-like objects, derivation outputs and the derivation's own
outputs.  pyguix builders are Python, so a gexp here is a *template* of
Python source plus named references::

    g = gexp('''
        os.makedirs($out)
        shutil.copy(${src}, os.path.join($out, "hello.txt"))
        lib = ${glibc:lib}
    ''', src=plain_file("hello", "hi\\n"), glibc=some_derivation)

Placeholder grammar (``$`` never appears otherwise)::

    $$                  a literal dollar sign
    $NAME  ${NAME}      the reference NAME, or an own output when NAME is out
    ${NAME:OUTPUT}      the output OUTPUT of the reference NAME
    ${output}           the derivation's own output "out"  (= $out)
    ${output:OUTPUT}    the derivation's own output OUTPUT

NAME is a Python identifier.  The template's common indentation and a
leading newline are removed first (``textwrap.dedent``).  References may be file-like objects (any
type with a registered compiler, see :func:`register_compiler`),
derivation records, store paths (strings or ``StorePath`` records, which
become strings), nested gexps (their code is
inlined as is, their references merged), lists and tuples of those
(expanded as a Python list or tuple literal), and plain data (``str``,
``int``, ``float``, ``bool``, ``None``, ``bytes`` and lists, tuples, dicts
and sets of them, written with ``repr``, dict keys and set elements sorted
so that equal values always give the same text).

Expansion (Guix's ``gexp->sexp``) puts ``repr()`` of the store path of a
file-like object or derivation output in place of its placeholder, and
``os.environ["OUTPUT"]`` in place of an own output; the builder prologue
imports ``os``.  The result depends only on the template and the values
of the references, never on object identities or dict ordering.

Compilers follow Guix's ``define-gexp-compiler``: a registry from type to
a lowering procedure, an ``expand`` procedure giving the text of the
lowered object, and a ``fingerprint`` giving a canonical description of
the object's content, used as the key of the persistent lowering cache.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import textwrap
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from derivations.derivation import Derivation
from derivations.modules import module_tree_digest, source_module_closure
from store.errors import PyguixError
from store.paths import StorePath

__all__ = [
    "Compiler",
    "DerivationRef",
    "Gexp",
    "GexpError",
    "GexpInput",
    "GexpText",
    "Hole",
    "OwnOutput",
    "Sequence",
    "compiler_for",
    "expand_gexp",
    "gexp",
    "gexp_fingerprint",
    "gexp_inputs",
    "gexp_modules",
    "gexp_outputs",
    "gexp_text",
    "is_file_like",
    "is_derivation",
    "plain_repr",
    "register_compiler",
    "shared_record",
    "with_imported_modules",
]


class GexpError(PyguixError):
    """Report a malformed gexp template or an unusable reference.

    :param placeholder: the placeholder or reference name at fault, if any.
    """

    def __init__(
        self, message: str, hint: str | None = None, placeholder: str = ""
    ) -> None:
        super().__init__(message, hint)
        self.placeholder = placeholder


R = TypeVar("R")


# ---------------------------------------------------------------------------
# Records that hold records


_EQUAL_PAIRS: set[tuple[int, int]] | None = None
"""The pairs of records found equal by the comparison under way, by id."""

_SHARED = "__shared_record__"
"""The class attribute marking the classes :func:`shared_record` made."""


def shared_record(cls: type[R]) -> type[R]:
    """Make the frozen dataclass ``cls`` cheap to hash and compare when its
    instances share the records they hold, however deep they nest.

    Gexps and file-like objects refer to each other and share what they
    refer to, so they form a graph, not a tree; the generated ``__hash__``
    and ``__eq__`` visit a shared record once per path to it, a cost
    exponential in the graph's depth, and recurse once per level, which
    exhausts Python's stack on long chains.  Instead:

    - the hash is kept in the instance once computed, and left out when it
      is pickled or copied, since string hashes differ between processes;
      the records below one are hashed first, deepest first, from an
      explicit stack, so computing a hash never recurses more than a level;
    - equality first compares hashes, then walks both graphs side by side
      from an explicit stack, and a comparison remembers the pairs it found
      equal, so comparing two equal graphs built apart visits each pair of
      records once.  Note: the pairs are kept by ``id`` only while the
      outermost comparison runs, when both graphs are alive.
    """
    compute_hash = cls.__hash__
    assert compute_hash is not None, f"{cls.__name__} is not hashable"

    def __hash__(self: Any) -> int:
        cached: int | None = self.__dict__.get("_hash")
        if cached is None:
            _hash_below(self)
            cached = compute_hash(self)
            object.__setattr__(self, "_hash", cached)
        return cached

    def __eq__(self: Any, other: object) -> bool:
        if self is other:
            return True
        if other.__class__ is not self.__class__:
            return NotImplemented
        if hash(self) != hash(other):
            return False
        return _graphs_equal(self, other)

    def __getstate__(self: Any) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if key != "_hash"}

    cls.__hash__ = __hash__  # type: ignore[method-assign]
    cls.__eq__ = __eq__  # type: ignore[method-assign]
    cls.__getstate__ = __getstate__  # type: ignore[method-assign]
    setattr(cls, _SHARED, True)
    return cls


def _is_shared(value: object) -> bool:
    """Tell whether ``value`` is an instance of a :func:`shared_record` class."""
    return getattr(type(value), _SHARED, False) is True


def _fields(value: object, hashed: bool) -> Iterator[Any]:
    """Yield the field values of the dataclass instance ``value`` that its
    generated ``__hash__`` (``hashed``) or ``__eq__`` uses."""
    for item in dataclasses.fields(value):  # type: ignore[arg-type]
        used = item.compare if not hashed or item.hash is None else item.hash
        if used:
            yield getattr(value, item.name)


def _hashed_parts(value: object) -> Iterator[Any]:
    """Yield what hashing ``value`` hashes in turn: the items of a tuple or
    frozenset, the hashed fields of a dataclass instance, nothing else."""
    if isinstance(value, tuple | frozenset):
        yield from value
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        yield from _fields(value, hashed=True)


def _hash_below(root: object) -> None:
    """Hash the shared records below ``root`` that have no hash yet, each
    after those below it (a post-order from an explicit stack)."""
    seen = {id(root)}
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        value, expanded = stack.pop()
        if expanded:
            if value is not root and _is_shared(value):
                hash(value)
            continue
        stack.append((value, True))
        for part in _hashed_parts(value):
            settled = _is_shared(part) and "_hash" in part.__dict__
            if not settled and id(part) not in seen and _may_hold_records(part):
                seen.add(id(part))
                stack.append((part, False))


def _may_hold_records(value: object) -> bool:
    """Tell whether ``value`` may be or hold a record (not a scalar)."""
    return not isinstance(value, str | bytes | int | float | type(None))


def _graphs_equal(left: Any, right: Any) -> bool:
    """Compare two shared records of the same class and hash, field by
    field, from an explicit stack (see :func:`shared_record`)."""
    global _EQUAL_PAIRS
    outermost = _EQUAL_PAIRS is None
    known = _EQUAL_PAIRS = set() if _EQUAL_PAIRS is None else _EQUAL_PAIRS
    try:
        assumed: set[tuple[int, int]] = set()
        if not _walk_equal(left, right, known, assumed):
            return False
        known.update(assumed)
        return True
    finally:
        if outermost:
            _EQUAL_PAIRS = None


def _walk_equal(
    left: Any, right: Any, known: set[tuple[int, int]], assumed: set[tuple[int, int]]
) -> bool:
    """Tell whether ``left`` equals ``right``, taking the pairs of records
    in ``known`` as equal and adding those compared to ``assumed``: any
    difference makes the whole comparison false, so they are equal if none
    is found."""
    stack = [(left, right)]
    while stack:
        a, b = stack.pop()
        if a is b:
            continue
        if _is_shared(a) and a.__class__ is b.__class__:
            pair = (id(a), id(b))
            if pair in known or pair in assumed:
                continue
            if hash(a) != hash(b):
                return False
            assumed.add(pair)
            stack.extend(zip(_fields(a, False), _fields(b, False), strict=True))
        elif type(a) is type(b) and type(a) in (tuple, list):
            if len(a) != len(b):
                return False
            stack.extend(zip(a, b, strict=True))
        elif a != b:
            return False
    return True


# ---------------------------------------------------------------------------
# Compilers: the file-like registry


@dataclass(frozen=True)
class Compiler:
    """How to lower, expand and fingerprint one type of file-like object."""

    lower: Callable[[Any, str], Any]
    """``lower(obj, system)`` returns a monadic value of a derivation, a store
    path, or another file-like object to lower in turn."""

    expand: Callable[[Any, Any, str], str] | None = None
    """``expand(obj, lowered, output)`` returns the path text of ``obj``; by
    default the output's path of a derivation, or the store path."""

    fingerprint: Callable[[Any, Callable[[Any], Any]], Any] | None = None
    """``fingerprint(obj, fingerprint_of)`` returns plain data (lists,
    strings, numbers, bytes) describing ``obj``'s content and options,
    calling ``fingerprint_of`` for the objects it refers to; ``None`` (or no
    procedure) means ``obj`` is never kept in the persistent cache.  Note:
    what ``fingerprint_of`` returns must go into the data as it is, never
    looked into: it may stand for a digest not computed yet."""


_COMPILERS: dict[type, Compiler] = {}


def register_compiler(kind: type, compiler: Compiler) -> None:
    """Make instances of ``kind`` file-like (Guix's ``define-gexp-compiler``).

    Instances must be hashable and compare by value: lowering is memoised
    on them.
    """
    _COMPILERS[kind] = compiler


def compiler_for(obj: object) -> Compiler | None:
    """Return the compiler of ``obj``'s type (or a base type), or ``None``."""
    for kind in type(obj).__mro__:
        compiler = _COMPILERS.get(kind)
        if compiler is not None:
            return compiler
    return None


def is_file_like(obj: object) -> bool:
    """Tell whether ``obj`` has a compiler (Guix's ``file-like?``)."""
    return compiler_for(obj) is not None


def is_derivation(obj: object) -> bool:
    """Tell whether ``obj`` is a derivation record."""
    return isinstance(obj, Derivation)


# ---------------------------------------------------------------------------
# References and the gexp record


@dataclass(frozen=True)
class Hole:
    """A placeholder for the reference ``name``, or its ``output``."""

    name: str
    output: str | None = None


@dataclass(frozen=True)
class OwnOutput:
    """A placeholder for the derivation's own output ``name``."""

    name: str


@dataclass(frozen=True)
class DerivationRef:
    """A derivation record used as a reference, compared by its path."""

    path: str
    """The derivation path, which identifies the record."""

    derivation: Any = field(compare=False, repr=False)
    """The record itself."""


@shared_record
@dataclass(frozen=True)
class Sequence:
    """A list or tuple holding references, expanded as a Python literal."""

    kind: str
    """``list`` or ``tuple``."""

    items: tuple[Any, ...]


@dataclass(frozen=True)
class Literal:
    """Plain data, kept as its deterministic ``repr`` text."""

    text: str


@shared_record
@dataclass(frozen=True)
class GexpText:
    """A gexp whose expanded code is itself the value: it expands to the
    ``repr`` of that code, and its references are inputs as usual.  Used to
    write scripts and mixed text files from a builder."""

    gexp: Gexp


@dataclass(frozen=True)
class GexpInput:
    """An input of a gexp: a file-like object, a derivation (as a
    :class:`DerivationRef`) or a store path string, and the output used."""

    thing: Any
    output: str = "out"


@shared_record
@dataclass(frozen=True)
class Gexp:
    """A G-expression: template parts and the references they name."""

    parts: tuple[str | Hole | OwnOutput, ...]
    """Literal source text and placeholders, in order."""

    references: tuple[tuple[str, Any], ...]
    """The references by name, sorted by name, frozen to hashable values."""

    modules: tuple[str, ...] = ()
    """Project modules the code imports (see :func:`with_imported_modules`)."""

    def reference(self, name: str) -> Any:
        """Return the frozen reference ``name``."""
        for key, value in self.references:
            if key == name:
                return value
        raise KeyError(name)


_RESERVED = ("out", "output")
_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
_PLACEHOLDER = re.compile(
    rf"\$(?:(?P<dollar>\$)|(?P<bare>{_IDENTIFIER})"
    rf"|\{{(?P<name>[^}}:]*)(?::(?P<output>[^}}]*))?\}})"
)
_STORE_PATH_LIKE = re.compile(r"/(?:[^/]+/)+[0-9a-df-np-sv-z]{32}-[^/]+")


def plain_repr(value: object, where: str = "") -> str:
    """Return Python source for the plain data ``value``, deterministically.

    :raises GexpError: when ``value`` holds something that is not plain data.
    """
    if value is None or isinstance(value, bool | int | float | str | bytes):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(plain_repr(item, where) for item in value) + "]"
    if isinstance(value, tuple):
        items = [plain_repr(item, where) for item in value]
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    if isinstance(value, dict):
        pairs = sorted(
            (plain_repr(key, where), plain_repr(item, where))
            for key, item in value.items()
        )
        return "{" + ", ".join(f"{key}: {item}" for key, item in pairs) + "}"
    if isinstance(value, set | frozenset):
        items = sorted(plain_repr(item, where) for item in value)
        body = "{" + ", ".join(items) + "}" if items else ""
        if isinstance(value, frozenset) or not items:
            return f"{type(value).__name__}({body})"
        return body
    raise GexpError(
        f"the reference '{where}' holds {type(value).__name__} value {value!r}",
        "use file-like objects, derivations, store paths, gexps or plain data",
        where,
    )


def _holds_store_objects(value: object) -> bool:
    """Tell whether ``value`` is or contains something other than plain data."""
    if isinstance(value, list | tuple):
        return any(_holds_store_objects(item) for item in value)
    if isinstance(value, str):
        return _STORE_PATH_LIKE.fullmatch(value) is not None
    return (
        isinstance(value, Gexp | GexpText | StorePath)
        or is_file_like(value)
        or is_derivation(value)
    )


def _freeze(value: object, where: str) -> Any:
    """Return ``value`` as a hashable reference."""
    if isinstance(value, Gexp | GexpText):
        return value
    if is_derivation(value):
        return DerivationRef(str(value.path), value)  # type: ignore[attr-defined]
    if is_file_like(value):
        hash(value)
        return value
    if isinstance(value, str) and _STORE_PATH_LIKE.fullmatch(value):
        return value
    if isinstance(value, StorePath):
        return str(value)
    if isinstance(value, list | tuple) and _holds_store_objects(value):
        kind = "list" if isinstance(value, list) else "tuple"
        return Sequence(kind, tuple(_freeze(item, where) for item in value))
    return Literal(plain_repr(value, where))


def _parse(template: str, names: Iterable[str]) -> tuple[str | Hole | OwnOutput, ...]:
    """Split ``template`` into literal text and placeholders."""
    known = set(names)
    parts: list[str | Hole | OwnOutput] = []
    position = 0
    for match in _iter_placeholders(template):
        parts.append(template[position : match.start()])
        position = match.end()
        if match["dollar"]:
            parts.append("$")
            continue
        parts.append(_hole(match, known))
    parts.append(template[position:])
    return tuple(part for part in _merge_text(parts) if part != "")


def _iter_placeholders(template: str) -> Iterator[re.Match[str]]:
    """Yield each placeholder match, rejecting a ``$`` that starts none."""
    position = 0
    while (start := template.find("$", position)) >= 0:
        match = _PLACEHOLDER.match(template, start)
        if match is None:
            excerpt = template[start : start + 12]
            raise GexpError(
                f"the gexp template has a stray '$' at offset {start} ('{excerpt}')",
                "write $$ for a literal dollar sign, $name or ${name:output} for a reference",
                excerpt,
            )
        yield match
        position = match.end()


def _hole(match: re.Match[str], known: set[str]) -> Hole | OwnOutput:
    """Return the placeholder ``match`` names."""
    name = match["bare"] or match["name"]
    output = match["output"]
    if match["name"] is not None and not re.fullmatch(_IDENTIFIER, name):
        raise GexpError(
            f"the gexp placeholder '{match[0]}' has no valid name", None, match[0]
        )
    if output is not None and output == "":
        raise GexpError(
            f"the gexp placeholder '{match[0]}' has an empty output", None, match[0]
        )
    if name == "output":
        return OwnOutput(output or "out")
    if name == "out" and output is None:
        return OwnOutput("out")
    if name not in known:
        raise GexpError(
            f"the gexp placeholder '{match[0]}' names no reference '{name}'",
            f"pass {name}=... to gexp(), or write $$ for a literal dollar sign",
            name,
        )
    return Hole(name, output)


def _merge_text(
    parts: list[str | Hole | OwnOutput],
) -> Iterator[str | Hole | OwnOutput]:
    """Join adjacent literal strings."""
    text = ""
    for part in parts:
        if isinstance(part, str):
            text += part
            continue
        yield text
        text = ""
        yield part
    yield text


def gexp(template: str, **references: Any) -> Gexp:
    """Return the gexp of Python source ``template`` with ``references``.

    :raises GexpError: naming the placeholder that matches no reference,
        a reference named ``out``/``output`` (they are the own outputs), a
        reference that is not usable, or an output asked of plain data.
    """
    for name in _RESERVED:
        if name in references:
            raise GexpError(
                f"the gexp reference name '{name}' is reserved for the own outputs",
                "rename the reference",
                name,
            )
    frozen = tuple(
        sorted((name, _freeze(value, name)) for name, value in references.items())
    )
    parts = _parse(_dedent(template), references)
    for part in parts:
        if isinstance(part, Hole) and part.output is not None:
            _check_has_outputs(part, dict(frozen)[part.name])
    return Gexp(parts, frozen, _nested_modules(frozen))


def _dedent(template: str) -> str:
    """Remove the common indentation of ``template`` and its first newline,
    so that a triple-quoted template can be indented like its caller."""
    text = textwrap.dedent(template)
    return text[1:] if text.startswith("\n") else text


def _check_has_outputs(hole: Hole, value: Any) -> None:
    """Reject ``${name:output}`` where the reference has no outputs."""
    if isinstance(value, DerivationRef) or is_file_like(value):
        return
    raise GexpError(
        f"the gexp placeholder '${{{hole.name}:{hole.output}}}' asks an output of "
        f"'{hole.name}', which is not a derivation or file-like object",
        None,
        hole.name,
    )


def _nested_modules(references: Iterable[tuple[str, Any]]) -> tuple[str, ...]:
    """Return the modules of the gexps among ``references``."""
    modules: set[str] = set()
    for _, value in references:
        for nested in _nested_gexps(value):
            modules.update(nested.modules)
    return tuple(sorted(modules))


def _nested_gexps(value: Any) -> Iterator[Gexp]:
    """Yield the gexps directly in ``value``, in order."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, Gexp):
            yield item
        elif isinstance(item, GexpText):
            yield item.gexp
        elif isinstance(item, Sequence):
            pending.extend(reversed(item.items))


def with_imported_modules(modules: Iterable[str], g: Gexp) -> Gexp:
    """Return ``g`` tagged with the project ``modules`` its code imports
    (Guix's ``with-imported-modules``); they and their project imports are
    put on the builder's ``sys.path`` when ``g`` is lowered."""
    merged = tuple(sorted(set(g.modules) | set(modules)))
    return Gexp(g.parts, g.references, merged)


def gexp_text(g: Gexp) -> GexpText:
    """Return a reference that expands to the ``repr`` of ``g``'s code."""
    return GexpText(g)


# ---------------------------------------------------------------------------
# Inputs, outputs, modules
#
# Gexps nest as deep as their users build them (a chain of packages, each
# gexp quoting the one below), so every walk below uses an explicit stack;
# a work list popped from its end, children pushed in reverse, visits them
# in the order recursion would.


def gexp_inputs(g: Gexp) -> tuple[GexpInput, ...]:
    """Return what ``g`` refers to, first occurrence first, without
    duplicates (Guix's ``gexp-inputs``): file-like objects and derivations
    with the output used, and store path strings; nested gexps and
    sequences are searched."""
    found: dict[GexpInput, None] = {}
    visited: set[int] = set()
    pending: list[tuple[Any, str]] = [(g, "out")]
    while pending:
        value, output = pending.pop()
        if isinstance(value, GexpText):
            value = value.gexp
        if isinstance(value, Gexp):
            # A gexp met again adds nothing: its inputs are already found.
            if id(value) not in visited:
                visited.add(id(value))
                pending.extend(reversed(_hole_values(value)))
        elif isinstance(value, Sequence):
            pending.extend((item, "out") for item in reversed(value.items))
        elif isinstance(value, DerivationRef | str) or is_file_like(value):
            found.setdefault(GexpInput(value, output), None)
    return tuple(found)


def _hole_values(g: Gexp) -> list[tuple[Any, str]]:
    """Return the reference and output of each hole of ``g``, in order."""
    return [
        (g.reference(part.name), part.output or "out")
        for part in g.parts
        if isinstance(part, Hole)
    ]


def gexp_outputs(g: Gexp) -> tuple[str, ...]:
    """Return the own outputs ``g`` mentions, sorted, or ``("out",)`` if none
    (Guix's ``gexp-outputs``; nested gexps count)."""
    names: set[str] = set()
    visited = {id(g)}
    pending = [g]
    while pending:
        current = pending.pop()
        for part in current.parts:
            if isinstance(part, OwnOutput):
                names.add(part.name)
            elif isinstance(part, Hole):
                for nested in _nested_gexps(current.reference(part.name)):
                    if id(nested) not in visited:
                        visited.add(id(nested))
                        pending.append(nested)
    return tuple(sorted(names)) or ("out",)


def gexp_modules(g: Gexp) -> tuple[str, ...]:
    """Return the modules ``g`` and its nested gexps were tagged with."""
    return g.modules


# ---------------------------------------------------------------------------
# Expansion


@dataclass(frozen=True)
class _Close:
    """Expansion step: finish the text of a nested value, made of the
    pieces given since the matching ``_OPEN``, with ``finish``."""

    finish: Callable[[list[str]], str]


_OPEN = object()
"""Expansion step: start collecting the pieces of a nested value."""


def expand_gexp(g: Gexp, path_of: Callable[[GexpInput], str]) -> str:
    """Return the Python code of ``g``, with ``path_of(input)`` giving the
    store path text of each file-like, derivation and store path input
    (Guix's ``gexp->sexp``)."""
    pieces: list[list[str]] = [[]]
    steps: list[Any] = [g]
    while steps:
        step = steps.pop()
        if isinstance(step, str):
            pieces[-1].append(step)
        elif step is _OPEN:
            pieces.append([])
        elif isinstance(step, _Close):
            done = pieces.pop()
            pieces[-1].append(step.finish(done))
        elif isinstance(step, Gexp):
            steps.extend(reversed(_gexp_steps(step)))
        else:
            value, output = step
            steps.extend(reversed(_value_steps(value, output, path_of)))
    return "".join(pieces[0])


def _gexp_steps(g: Gexp) -> list[Any]:
    """Return the expansion steps of ``g``'s parts."""
    steps: list[Any] = []
    for part in g.parts:
        if isinstance(part, str):
            steps.append(part)
        elif isinstance(part, OwnOutput):
            steps.append(f"os.environ[{part.name!r}]")
        else:
            steps.append((g.reference(part.name), part.output))
    return steps


def _value_steps(
    value: Any, output: str | None, path_of: Callable[[GexpInput], str]
) -> list[Any]:
    """Return the expansion steps of one reference value."""
    if isinstance(value, Literal):
        return [value.text]
    if isinstance(value, Gexp):
        return [value]
    if isinstance(value, GexpText):
        return [_OPEN, value.gexp, _Close(lambda done: repr("".join(done)))]
    if isinstance(value, Sequence):
        steps: list[Any] = [_OPEN]
        for item in value.items:
            steps += [_OPEN, (item, None), _Close("".join)]
        return [*steps, _Close(functools.partial(_sequence_text, value.kind))]
    return [repr(path_of(GexpInput(value, output or "out")))]


def _sequence_text(kind: str, items: list[str]) -> str:
    """Return the literal of a list or tuple of the code ``items``."""
    if kind == "tuple":
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    return "[" + ", ".join(items) + "]"


# ---------------------------------------------------------------------------
# Fingerprints


def gexp_fingerprint(
    g: Gexp, fingerprint_of: Callable[[Any], Any], *, top: bool = True
) -> Any:
    """Return plain data describing ``g`` by content: its parts, its
    references (file-like ones through ``fingerprint_of``, called in the
    order they appear) and, at the top, its module closure with a digest of
    the modules' sources.

    The data nests as deep as the gexps do; it is built top down, each
    nested value written into the slot its container left for it.
    """
    root: list[Any] = [None]
    slots: list[tuple[list[Any], int, Any]] = [(root, 0, g)]
    while slots:
        container, index, value = slots.pop()
        container[index] = _shallow_fingerprint(value, fingerprint_of, slots)
    data: list[Any] = root[0]
    if top and g.modules:
        closure = source_module_closure(g.modules)
        data[3] = [list(closure), module_tree_digest(closure)]
    return data


def _shallow_fingerprint(
    value: Any,
    fingerprint_of: Callable[[Any], Any],
    slots: list[tuple[list[Any], int, Any]],
) -> Any:
    """Return the plain data of one gexp or reference value, leaving a slot
    in ``slots`` for each gexp, text or sequence item within it."""
    if isinstance(value, Gexp):
        references: list[list[Any]] = [[name, None] for name, _ in value.references]
        for pair, (_, item) in reversed(
            list(zip(references, value.references, strict=True))
        ):
            slots.append((pair, 1, item))
        parts = [_part_fingerprint(part) for part in value.parts]
        return ["gexp", parts, references, list(value.modules)]
    if isinstance(value, GexpText):
        text: list[Any] = ["text", None]
        slots.append((text, 1, value.gexp))
        return text
    if isinstance(value, Sequence):
        items: list[Any] = [None] * len(value.items)
        for index in reversed(range(len(items))):
            slots.append((items, index, value.items[index]))
        return [value.kind, items]
    if isinstance(value, Literal):
        return ["literal", value.text]
    if isinstance(value, DerivationRef):
        return ["derivation", value.path]
    if isinstance(value, str):
        return ["path", value]
    return fingerprint_of(value)


def _part_fingerprint(part: str | Hole | OwnOutput) -> Any:
    """Return plain data for one template part."""
    if isinstance(part, str):
        return part
    if isinstance(part, OwnOutput):
        return ["own", part.name]
    return ["hole", part.name, part.output]
