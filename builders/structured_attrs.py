"""Structured attributes: the ``__json`` of a derivation, as its builder sees it.

Spec: Nix 2.8 ``ParsedDerivation`` (``libstore/parsed-derivations.cc``) and
``LocalDerivationGoal::writeStructuredAttrs`` and ``checkOutputs``
(``libstore/build/local-derivation-goal.cc``); golden vectors from Nix 2.8
in ``fixtures/structured/``.

A derivation is *structured* when its environment has ``__json``, a JSON
object (Nix's ``__structuredAttrs = true``).  Its builder then gets none of
the derivation's variables (:mod:`builders.environment`); instead the build
directory holds two files:

``.attrs.json``
    the object, with ``outputs`` set to ``{output name: output path}`` and,
    for each ``NAME: [PATH, ...]`` of ``exportReferencesGraph``, ``NAME``
    set to the closure of those paths as a list of path-info objects
    (``path``, ``narHash`` as ``sha256:<base32>``, ``narSize``,
    ``references``, ``closureSize``, and ``ca`` when the item has one),
    sorted by path.  It is written as nlohmann::json writes it: no spaces,
    keys sorted by their UTF-8 bytes, non-ASCII text as is, floats in
    shortest form with exponent from 1e15 (:func:`to_attrs_json`).
``.attrs.sh``
    one bash declaration per key that is a shell name and whose value is
    simple (a string, a number that is whole once rounded to a 32-bit
    float, ``null``, a Boolean) or a list or object of simple values;
    anything else is left out (:func:`to_attrs_sh`).  Grammar, one line a
    key, in key order::

        declare NAME=VALUE
        declare -a NAME=(VALUE VALUE ... )
        declare -A NAME=([KEY]=VALUE [KEY]=VALUE ... )

    where a string is single-quoted (``'`` as ``'\\''``), a number is the
    C ``int`` Nix converts it to (so it wraps at 32 bits), ``null`` is
    ``''``, true is ``1`` and false is empty; each list item and object
    entry is followed by a space.

In both files each output's placeholder (``builtins.placeholder``) is
replaced by the output's path, as Nix rewrites them.

Where Nix accepts a value by accident of its JSON library, this module
follows it when the meaning is plain (a lone string where a list of strings
is expected is a one-item list) and refuses it otherwise (an
``outputChecks`` entry that is not an object, which Nix ignores silently).

Note: nlohmann::json's float printer (Grisu2) gives the shortest digits for
all but a few rare doubles, where Python's ``repr`` may print one digit
fewer; floats from the Nix evaluator have six significant digits and print
alike.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from derivations.derivation import Derivation
from store import base32
from store.database import PathInfo
from store.errors import PyguixError

__all__ = [
    "ATTRS_JSON",
    "ATTRS_SH",
    "OutputChecks",
    "StructuredAttrsError",
    "attrs_files",
    "exported_graphs",
    "graph_objects",
    "hash_placeholder",
    "output_checks",
    "parse_structured_attrs",
    "path_info_object",
    "prepare_structured_attrs",
    "rewrite_placeholders",
    "strings_attr",
    "to_attrs_json",
    "to_attrs_sh",
]

ATTRS_JSON = ".attrs.json"
ATTRS_SH = ".attrs.sh"

_SHELL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CHECK_LISTS = (
    "allowedReferences",
    "allowedRequisites",
    "disallowedReferences",
    "disallowedRequisites",
)


class _Store(Protocol):
    """What :func:`graph_objects` needs of a store (``store.local.LocalStore``)."""

    def query_requisites(
        self, paths: Iterable[str], include_outputs: bool = False
    ) -> set[str]: ...

    def query_path_info(self, path: str) -> PathInfo | None: ...


class StructuredAttrsError(PyguixError):
    """Report a ``__json`` that Nix would refuse, or a value of the wrong type.

    :param drv_path: the derivation.
    """

    def __init__(self, drv_path: str, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.drv_path = drv_path


@dataclass(frozen=True)
class OutputChecks:
    """What ``outputChecks`` asks of one output."""

    lists: dict[str, list[str]] = field(default_factory=dict)
    """``allowedReferences`` and the like, by name: store paths or output
    names, as given."""
    max_size: int | None = None
    """The most bytes the output's NAR may have."""
    max_closure_size: int | None = None
    """The most bytes the NARs of the output's closure may have together."""


# ---------------------------------------------------------------------------
# Reading the attributes


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number '{text}' is out of range")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"'{name}' is not JSON")


def parse_structured_attrs(drv: Derivation) -> dict[str, Any] | None:
    """Return the structured attributes of ``drv``, or ``None`` if it has none
    (Nix's ``ParsedDerivation::getStructuredAttrs``).

    :raises StructuredAttrsError: when ``__json`` is not a JSON object.
    """
    text = drv.env.get("__json")
    if text is None:
        return None
    try:
        attrs = json.loads(text, parse_float=_finite, parse_constant=_no_constant)
    except ValueError as error:
        raise StructuredAttrsError(
            drv.path,
            f"cannot process the '__json' attribute of '{drv.path}': {error}",
            hint="'__json' must be the JSON text of an object",
        ) from None
    if not _is_unicode(text, attrs):
        raise StructuredAttrsError(
            drv.path,
            f"the '__json' attribute of '{drv.path}' is not valid UTF-8",
            hint="'__json' must be UTF-8 text, without lone surrogate escapes",
        )
    if not isinstance(attrs, dict):
        raise StructuredAttrsError(
            drv.path,
            f"the '__json' attribute of '{drv.path}' is not a JSON object",
            hint="'__json' must be the JSON text of an object",
        )
    return attrs


def _is_unicode(text: str, attrs: Any) -> bool:
    """Whether ``text`` and the strings it decodes to are valid Unicode, as
    Nix's JSON parser demands (it refuses ``\\ud800`` alone, for example)."""
    try:
        text.encode()
        if "\\ud" in text.lower():
            json.dumps(attrs, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return False
    return True


def strings_attr(drv: Derivation, attrs: Mapping[str, Any], name: str) -> list[str]:
    """Return attribute ``name`` as a list of strings, empty if absent (Nix's
    ``getStringsAttr`` in structured mode).

    :raises StructuredAttrsError: when it is not a list of strings.
    """
    value = attrs.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _type_error(drv, name, "a list of strings")
    return value


def _items(drv: Derivation, value: Any, what: str) -> list[str]:
    """Return a list of strings given as a list, or as one string, as Nix's
    JSON library iterates a lone value as a one-item list."""
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(item, str) for item in items):
        raise _type_error(drv, what, "a list of strings")
    return items


def _type_error(drv: Derivation, what: str, expected: str) -> StructuredAttrsError:
    return StructuredAttrsError(
        drv.path,
        f"the structured attribute '{what}' of '{drv.path}' must be {expected}",
        hint="fix that attribute of the derivation",
    )


def exported_graphs(drv: Derivation, attrs: Mapping[str, Any]) -> dict[str, list[str]]:
    """Return what ``exportReferencesGraph`` asks for: name to store paths.

    Absent, or not an object, it asks for nothing, as in Nix.

    :raises StructuredAttrsError: when a value is not a list of strings.
    """
    requests = attrs.get("exportReferencesGraph")
    if not isinstance(requests, dict):
        return {}
    return {
        name: _items(drv, paths, f"exportReferencesGraph.{name}")
        for name, paths in requests.items()
    }


def output_checks(
    drv: Derivation, attrs: Mapping[str, Any], output: str
) -> OutputChecks | None:
    """Return the ``outputChecks`` of ``output``, or ``None`` if it has none.

    :raises StructuredAttrsError: for an entry that is not an object, a size
        that is not a non-negative integer, or a list that is not of strings.
    """
    checks = attrs.get("outputChecks")
    if checks is None:
        return None
    if not isinstance(checks, dict):
        raise _type_error(drv, "outputChecks", "an object of output names")
    entry = checks.get(output)
    if entry is None:
        return None
    where = f"outputChecks.{output}"
    if not isinstance(entry, dict):
        raise _type_error(drv, where, "an object")

    lists = {
        name: _items(drv, entry[name], f"{where}.{name}")
        for name in _CHECK_LISTS
        if name in entry
    }
    max_size = _size(drv, entry, where, "maxSize")
    return OutputChecks(lists, max_size, _size(drv, entry, where, "maxClosureSize"))


def _size(
    drv: Derivation, entry: Mapping[str, Any], where: str, name: str
) -> int | None:
    value = entry.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _type_error(drv, f"{where}.{name}", "a non-negative number of bytes")
    return value


# ---------------------------------------------------------------------------
# Preparing the attributes for the builder


def hash_placeholder(output: str) -> str:
    """Return the placeholder of ``output`` (Nix's ``hashPlaceholder``).

    >>> hash_placeholder("out")
    '/1rz4g4znpzjwh1xymhjpm42vipw92pr73vdgl6xs1hycac8kf2n9'
    """
    digest = hashlib.sha256(f"nix-output:{output}".encode()).digest()
    return "/" + base32.encode(digest)


def path_info_object(info: PathInfo, closure_size: int) -> dict[str, Any]:
    """Return the object ``exportReferencesGraph`` gives for one item (Nix's
    ``pathInfoToJSON`` without impure information, with the closure size)."""
    item: dict[str, Any] = {
        "path": info.path,
        "narHash": info.nar_hash.to_string("base32"),
        "narSize": info.nar_size,
        "references": sorted(info.references),
        "closureSize": closure_size,
    }
    if info.ca:
        item["ca"] = info.ca
    return item


def graph_objects(store: _Store, paths: Iterable[str]) -> list[dict[str, Any]]:
    """Return the path-info objects of the closure of the valid ``paths``,
    with the outputs of the derivations in it (Nix's ``exportReferences``),
    sorted by path.

    Nix adds those outputs once and fails on an invalid one; here the valid
    ones are added, with their closures, until nothing more is found.
    """
    objects = []
    for item in sorted(store.query_requisites(paths, include_outputs=True)):
        closure_size = sum(
            _info(store, p).nar_size for p in store.query_requisites([item])
        )
        objects.append(path_info_object(_info(store, item), closure_size))
    return objects


def _info(store: _Store, path: str) -> PathInfo:
    info = store.query_path_info(path)
    assert info is not None, path
    return info


def prepare_structured_attrs(
    attrs: Mapping[str, Any],
    outputs: Mapping[str, str],
    graphs: Mapping[str, list[dict[str, Any]]],
) -> dict[str, Any]:
    """Return the object of ``.attrs.json`` (Nix's ``prepareStructuredAttrs``).

    :param outputs: each output's path, by name.
    :param graphs: for each name of ``exportReferencesGraph``, the path-info
        objects of the closure (:func:`path_info_object`), sorted by path.
    """
    prepared = dict(attrs)
    prepared["outputs"] = dict(outputs)
    prepared.update(graphs)
    return prepared


def attrs_files(
    prepared: Mapping[str, Any], outputs: Mapping[str, str]
) -> dict[str, bytes]:
    """Return ``.attrs.json`` and ``.attrs.sh`` for ``prepared``, by file name,
    each output's placeholder replaced by its path."""
    files = {ATTRS_JSON: to_attrs_json(prepared), ATTRS_SH: to_attrs_sh(prepared)}
    return {
        name: rewrite_placeholders(text, outputs).encode()
        for name, text in files.items()
    }


def rewrite_placeholders(text: str, outputs: Mapping[str, str]) -> str:
    """Return ``text`` with each output's placeholder replaced by the output's
    path, as Nix rewrites the builder's arguments, environment and files."""
    for name, path in outputs.items():
        text = text.replace(hash_placeholder(name), path)
    return text


# ---------------------------------------------------------------------------
# .attrs.json: JSON as nlohmann::json writes it


def to_attrs_json(value: Any) -> str:
    """Return ``value`` as compact JSON, byte for byte as Nix 2.8 writes it."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int):
        # nlohmann keeps 64-bit integers; larger ones it reads as doubles.
        return str(value) if -(2**63) <= value < 2**64 else _float(float(value))
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ",".join(to_attrs_json(item) for item in value) + "]"
    assert isinstance(value, dict), value
    entries = (f"{to_attrs_json(k)}:{to_attrs_json(value[k])}" for k in sorted(value))
    return "{" + ",".join(entries) + "}"


def _float(value: float) -> str:
    """Print a float as nlohmann does: Python's shortest ``repr``, except that
    an exponent is used from 1e15 on, where ``repr`` waits for 1e16."""
    text = repr(value)
    if not 1e15 <= abs(value) < 1e16:
        return text
    sign = "-" if text.startswith("-") else ""
    digits = text.lstrip("-").split(".")[0] + text.split(".")[1]
    digits = digits.rstrip("0") or "0"
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{sign}{mantissa}e+15"


# ---------------------------------------------------------------------------
# .attrs.sh: bash declarations


def to_attrs_sh(attrs: Mapping[str, Any]) -> str:
    """Return the bash declarations of ``attrs`` (Nix's
    ``writeStructuredAttrsShell``); see the module's grammar."""
    lines = []
    for key in sorted(attrs):
        if _SHELL_NAME.fullmatch(key) is None:
            continue
        declaration = _declaration(key, attrs[key])
        if declaration is not None:
            lines.append(declaration + "\n")
    return "".join(lines)


def _declaration(key: str, value: Any) -> str | None:
    simple = _simple(value)
    if simple is not None:
        return f"declare {key}={simple}"
    if isinstance(value, list):
        items = [_simple(item) for item in value]
        if None in items:
            return None
        return f"declare -a {key}=({''.join(f'{item} ' for item in items)})"
    if isinstance(value, dict):
        entries = [(k, _simple(value[k])) for k in sorted(value)]
        if any(item is None for _, item in entries):
            return None
        pairs = "".join(f"[{_shell_quote(k)}]={item} " for k, item in entries)
        return f"declare -A {key}=({pairs})"
    return None


def _simple(value: Any) -> str | None:
    """Return the shell word of a simple value, or ``None`` for others."""
    if isinstance(value, str):
        return _shell_quote(value)
    if isinstance(value, bool):
        return "1" if value else ""
    if value is None:
        return "''"
    if isinstance(value, int):
        return str(_wrap_int32(value))
    if isinstance(value, float) and _is_whole_as_float32(value):
        return str(_double_to_int32(value))
    return None


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _is_whole_as_float32(value: float) -> bool:
    """Whether ``value``, rounded to a C ``float`` as Nix does first, is whole."""
    try:
        rounded = struct.unpack("f", struct.pack("f", value))[0]
    except OverflowError:
        return True  # infinity, which C's ceil leaves as it is
    return math.isinf(rounded) or rounded.is_integer()


def _wrap_int32(value: int) -> int:
    """Convert an integer to a C ``int`` as the compiler does: modulo 2**32."""
    return (value + 2**31) % 2**32 - 2**31


def _double_to_int32(value: float) -> int:
    """Convert a double to a C ``int`` as x86-64 does: truncated, or the
    smallest ``int`` when out of range."""
    if -(2.0**31) - 1 < value < 2.0**31:
        return int(value)
    return -(2**31)
