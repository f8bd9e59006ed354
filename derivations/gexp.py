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


def shared_record(cls: type[R]) -> type[R]:
    """Make the frozen dataclass ``cls`` cheap to hash and compare when its
    instances share the records they hold.

    Gexps and file-like objects refer to each other and share what they
    refer to, so they form a graph, not a tree; the generated ``__hash__``
    and ``__eq__`` visit a shared record once per path to it, a cost
    exponential in the graph's depth.  Instead:

    - the hash is kept in the instance once computed, and left out when it
      is pickled or copied, since string hashes differ between processes;
    - equality first compares hashes, and a comparison remembers the pairs
      it found equal, so comparing two equal graphs built apart visits each
      pair of records once.  Note: the pairs are kept by ``id`` only while
      the outermost comparison runs, when both graphs are alive.
    """
    compute_hash = cls.__hash__
    compare = cls.__eq__
    assert compute_hash is not None, f"{cls.__name__} is not hashable"

    def __hash__(self: Any) -> int:
        cached: int | None = self.__dict__.get("_hash")
        if cached is None:
            cached = compute_hash(self)
            object.__setattr__(self, "_hash", cached)
        return cached

    def __eq__(self: Any, other: object) -> bool:
        global _EQUAL_PAIRS
        if self is other:
            return True
        if other.__class__ is not self.__class__:
            return NotImplemented
        if hash(self) != hash(other):
            return False
        outermost = _EQUAL_PAIRS is None
        pairs = _EQUAL_PAIRS = set() if _EQUAL_PAIRS is None else _EQUAL_PAIRS
        try:
            pair = (id(self), id(other))
            if pair in pairs:
                return True
            equal: bool = compare(self, other)
            if equal is True:
                pairs.add(pair)
            return equal
        finally:
            if outermost:
                _EQUAL_PAIRS = None

    def __getstate__(self: Any) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if key != "_hash"}

    cls.__hash__ = __hash__  # type: ignore[method-assign]
    cls.__eq__ = __eq__  # type: ignore[method-assign]
    cls.__getstate__ = __getstate__  # type: ignore[method-assign]
    return cls


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
    procedure) means ``obj`` is never kept in the persistent cache."""


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
    """Yield the gexps directly in ``value``."""
    if isinstance(value, Gexp):
        yield value
    elif isinstance(value, GexpText):
        yield value.gexp
    elif isinstance(value, Sequence):
        for item in value.items:
            yield from _nested_gexps(item)


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


def gexp_inputs(g: Gexp) -> tuple[GexpInput, ...]:
    """Return what ``g`` refers to, first occurrence first, without
    duplicates (Guix's ``gexp-inputs``): file-like objects and derivations
    with the output used, and store path strings; nested gexps and
    sequences are searched."""
    found: dict[GexpInput, None] = {}
    _collect_inputs(g, found)
    return tuple(found)


def _collect_inputs(g: Gexp, found: dict[GexpInput, None]) -> None:
    """Add the inputs of ``g`` to ``found``, in template order."""
    for part in g.parts:
        if isinstance(part, Hole):
            _collect_value(g.reference(part.name), part.output or "out", found)


def _collect_value(value: Any, output: str, found: dict[GexpInput, None]) -> None:
    """Add the inputs of one reference value to ``found``."""
    if isinstance(value, Gexp):
        _collect_inputs(value, found)
    elif isinstance(value, GexpText):
        _collect_inputs(value.gexp, found)
    elif isinstance(value, Sequence):
        for item in value.items:
            _collect_value(item, "out", found)
    elif isinstance(value, DerivationRef | str) or is_file_like(value):
        found.setdefault(GexpInput(value, output), None)


def gexp_outputs(g: Gexp) -> tuple[str, ...]:
    """Return the own outputs ``g`` mentions, sorted, or ``("out",)`` if none
    (Guix's ``gexp-outputs``; nested gexps count)."""
    names: set[str] = set()
    _collect_outputs(g, names)
    return tuple(sorted(names)) or ("out",)


def _collect_outputs(g: Gexp, names: set[str]) -> None:
    """Add the own outputs of ``g`` and its nested gexps to ``names``."""
    for part in g.parts:
        if isinstance(part, OwnOutput):
            names.add(part.name)
        elif isinstance(part, Hole):
            for nested in _nested_gexps(g.reference(part.name)):
                _collect_outputs(nested, names)


def gexp_modules(g: Gexp) -> tuple[str, ...]:
    """Return the modules ``g`` and its nested gexps were tagged with."""
    return g.modules


# ---------------------------------------------------------------------------
# Expansion


def expand_gexp(g: Gexp, path_of: Callable[[GexpInput], str]) -> str:
    """Return the Python code of ``g``, with ``path_of(input)`` giving the
    store path text of each file-like, derivation and store path input
    (Guix's ``gexp->sexp``)."""
    pieces: list[str] = []
    for part in g.parts:
        if isinstance(part, str):
            pieces.append(part)
        elif isinstance(part, OwnOutput):
            pieces.append(f"os.environ[{part.name!r}]")
        else:
            pieces.append(_expand_value(g.reference(part.name), part.output, path_of))
    return "".join(pieces)


def _expand_value(
    value: Any, output: str | None, path_of: Callable[[GexpInput], str]
) -> str:
    """Return the code of one reference value."""
    if isinstance(value, Literal):
        return value.text
    if isinstance(value, Gexp):
        return expand_gexp(value, path_of)
    if isinstance(value, GexpText):
        return repr(expand_gexp(value.gexp, path_of))
    if isinstance(value, Sequence):
        items = [_expand_value(item, None, path_of) for item in value.items]
        if value.kind == "tuple":
            return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
        return "[" + ", ".join(items) + "]"
    return repr(path_of(GexpInput(value, output or "out")))


def gexp_fingerprint(
    g: Gexp, fingerprint_of: Callable[[Any], Any], *, top: bool = True
) -> Any:
    """Return plain data describing ``g`` by content: its parts, its
    references (file-like ones through ``fingerprint_of``) and, at the top,
    its module closure with a digest of the modules' sources."""
    parts = [_part_fingerprint(part) for part in g.parts]
    references = [
        [name, _value_fingerprint(value, fingerprint_of)]
        for name, value in g.references
    ]
    modules: list[Any] = list(g.modules)
    if top and g.modules:
        closure = source_module_closure(g.modules)
        modules = [list(closure), module_tree_digest(closure)]
    return ["gexp", parts, references, modules]


def _part_fingerprint(part: str | Hole | OwnOutput) -> Any:
    """Return plain data for one template part."""
    if isinstance(part, str):
        return part
    if isinstance(part, OwnOutput):
        return ["own", part.name]
    return ["hole", part.name, part.output]


def _value_fingerprint(value: Any, fingerprint_of: Callable[[Any], Any]) -> Any:
    """Return plain data for one reference value."""
    if isinstance(value, Literal):
        return ["literal", value.text]
    if isinstance(value, Gexp):
        return gexp_fingerprint(value, fingerprint_of, top=False)
    if isinstance(value, GexpText):
        return ["text", gexp_fingerprint(value.gexp, fingerprint_of, top=False)]
    if isinstance(value, Sequence):
        return [
            value.kind,
            [_value_fingerprint(item, fingerprint_of) for item in value.items],
        ]
    if isinstance(value, DerivationRef):
        return ["derivation", value.path]
    if isinstance(value, str):
        return ["path", value]
    return fingerprint_of(value)
