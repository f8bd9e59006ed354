"""Convert derivations to and from the JSON of Nix's ``derivation show``.

The shape Nix 2.8 prints (``nix show-derivation``, ``libstore``'s
``Derivation`` to JSON), one object per derivation path::

    {"DRVPATH": {
        "outputs": {"out": {"path": "...", "hashAlgo": "r:sha256", "hash": "HEX"}},
        "inputSrcs": ["..."],
        "inputDrvs": {"DRVPATH": ["out"]},
        "system": "...", "builder": "...", "args": ["..."],
        "env": {"KEY": "VALUE"}}}

``hashAlgo`` and ``hash`` appear only for fixed outputs.  Lists and keys are
sorted as in the ATerm.  Strings that are not UTF-8 are kept as surrogate
escapes in Python; :func:`dumps` writes them back as the raw bytes, as Nix
does.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from derivations.derivation import (
    Derivation,
    DerivationError,
    DerivationOutput,
    byte_order,
    name_from_path,
)
from store.hash import ALGORITHMS

__all__ = ["dumps", "from_json", "loads", "to_json"]


def _sorted(items: Iterable[str]) -> list[str]:
    return sorted(items, key=byte_order)


def _output_to_json(output: DerivationOutput) -> dict[str, str]:
    result = {"path": output.path}
    if output.hash is not None:
        result["hashAlgo"] = output.method_algo
        result["hash"] = output.hash.hex()
    return result


def to_json(drv: Derivation) -> dict[str, Any]:
    """Return the JSON object Nix prints for ``drv`` (without its path key)."""
    return {
        "outputs": {
            name: _output_to_json(drv.outputs[name]) for name in _sorted(drv.outputs)
        },
        "inputSrcs": _sorted(drv.input_sources),
        "inputDrvs": {
            path: _sorted(drv.input_derivations[path])
            for path in _sorted(drv.input_derivations)
        },
        "system": drv.system,
        "builder": drv.builder,
        "args": list(drv.args),
        "env": {key: drv.env[key] for key in _sorted(drv.env)},
    }


def dumps(drvs: Iterable[Derivation]) -> bytes:
    """Return ``derivation show``'s JSON for ``drvs``, keyed by path, as bytes."""
    document = {drv.path: to_json(drv) for drv in drvs}
    text = json.dumps(document, indent=2, ensure_ascii=False)
    return text.encode("utf-8", "surrogateescape") + b"\n"


def loads(data: bytes) -> dict[str, Any]:
    """Parse JSON bytes that may hold raw bytes that are not UTF-8."""
    document: dict[str, Any] = json.loads(data.decode("utf-8", "surrogateescape"))
    return document


def _fail(path: str, what: str) -> DerivationError:
    return DerivationError(
        path,
        f"derivation '{path}' in JSON: {what}",
        "give the JSON that 'derivation show' prints",
    )


def _output_from_json(path: str, name: str, value: Any) -> DerivationOutput:
    if not isinstance(value, dict) or not isinstance(value.get("path"), str):
        raise _fail(path, f"output '{name}' has no path")
    method_algo, digest = value.get("hashAlgo"), value.get("hash")
    if method_algo is None and digest is None:
        return DerivationOutput(value["path"])
    if not isinstance(method_algo, str) or not isinstance(digest, str):
        raise _fail(path, f"output '{name}' has a bad hashAlgo or hash")
    recursive = method_algo.startswith("r:")
    algo = method_algo[2:] if recursive else method_algo
    try:
        raw = bytes.fromhex(digest)
    except ValueError:
        raise _fail(path, f"output '{name}' hash '{digest}' is not base16") from None
    if ALGORITHMS.get(algo) != len(raw):
        raise _fail(path, f"output '{name}' hash is not a {method_algo} hash")
    return DerivationOutput(value["path"], algo, raw, recursive)


def _strings(path: str, value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(path, f"'{what}' is not a list of strings")
    return value


def from_json(path: str, value: Any) -> Derivation:
    """Return the derivation that ``value``, Nix's JSON of ``path``, describes.

    The result is not checked against a store; write it to ATerm and parse
    that to check it as a ``.drv``.

    :raises DerivationError: if a field is missing or has the wrong type.
    """
    if not isinstance(value, dict):
        raise _fail(path, "not an object")
    outputs, inputs, env = (
        value.get("outputs"),
        value.get("inputDrvs"),
        value.get("env"),
    )
    if (
        not isinstance(outputs, dict)
        or not isinstance(inputs, dict)
        or not isinstance(env, dict)
    ):
        raise _fail(path, "'outputs', 'inputDrvs' and 'env' must be objects")
    for field in ("system", "builder"):
        if not isinstance(value.get(field), str):
            raise _fail(path, f"'{field}' must be a string")
    if not all(isinstance(v, str) for v in env.values()):
        raise _fail(path, "'env' values must be strings")
    return Derivation(
        name=name_from_path(path),
        outputs={
            name: _output_from_json(path, name, out) for name, out in outputs.items()
        },
        input_derivations={
            drv: frozenset(_strings(path, names, f"inputDrvs.{drv}"))
            for drv, names in inputs.items()
        },
        input_sources=frozenset(_strings(path, value.get("inputSrcs"), "inputSrcs")),
        system=value["system"],
        builder=value["builder"],
        args=tuple(_strings(path, value.get("args"), "args")),
        env=dict(env),
        path=path,
    )
