"""Write a derivation as ATerm, byte for byte as Nix 2.8 does.

Nix's ``Derivation::unparse`` (``libstore/derivations.cc``).  Grammar, with
no whitespace and no trailing newline::

    drv      = "Derive(" "[" outputs "]" "," "[" inputs "]" ","
               "[" sources "]" "," raw "," quoted ","
               "[" args "]" "," "[" envs "]" ")"
    output   = "(" raw "," raw "," raw "," raw ")"     name, path, [r:]algo, hex
    input    = "(" raw "," "[" raw ("," raw)* "]" ")"   .drv path, output names
    envs     = env ("," env)*      env = "(" quoted "," quoted ")"
    raw      = '"' bytes, printed as they are '"'
    quoted   = '"' bytes, with " \\ LF CR TAB as \\" \\\\ \\n \\r \\t '"'

``raw`` strings (output names and paths, hash fields, input paths and output
names, sources, and the ``system``) are printed without escaping, as
``printUnquotedString``; ``quoted`` ones (builder, args, env keys and values)
through ``printString``.  Outputs, inputs (and each input's output names),
sources and env keys are sorted by their bytes, as Nix's ``std::map`` and
``std::set`` keep them; args keep their order.

*Masking* (``unparse(maskOutputs=true)``) prints every output path as ``""``
and the value of every env variable named after an output as ``""``: the
form hashed to compute output paths.  Hash modulo also replaces the input
derivations by the hashes of their own modulo, see :mod:`derivations.hashing`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from derivations.derivation import Derivation, byte_order

__all__ = ["to_aterm", "encode"]

_SPECIAL = re.compile(r'["\\\n\r\t]')
_ESCAPES = str.maketrans(
    {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
)


def encode(text: str) -> bytes:
    """Return the bytes of a record string (``surrogateescape`` UTF-8)."""
    return text.encode("utf-8", "surrogateescape")


def _quoted(text: str) -> str:
    if _SPECIAL.search(text) is None:
        return '"' + text + '"'
    return '"' + text.translate(_ESCAPES) + '"'


def _raw_list(items: Iterable[str]) -> str:
    return "[" + ",".join(f'"{item}"' for item in sorted(items, key=byte_order)) + "]"


def _outputs(drv: Derivation, mask_outputs: bool) -> str:
    parts = []
    for name in sorted(drv.outputs, key=byte_order):
        output = drv.outputs[name]
        path = "" if mask_outputs else output.path
        digest = output.hash.hex() if output.hash is not None else ""
        parts.append(f'("{name}","{path}","{output.method_algo}","{digest}")')
    return "[" + ",".join(parts) + "]"


def _inputs(inputs: Mapping[str, Iterable[str]]) -> str:
    parts = [
        f'("{path}",{_raw_list(inputs[path])})'
        for path in sorted(inputs, key=byte_order)
    ]
    return "[" + ",".join(parts) + "]"


def _env(drv: Derivation, mask_outputs: bool) -> str:
    parts = []
    for key in sorted(drv.env, key=byte_order):
        value = "" if mask_outputs and key in drv.outputs else drv.env[key]
        parts.append(f"({_quoted(key)},{_quoted(value)})")
    return "[" + ",".join(parts) + "]"


def to_aterm(
    drv: Derivation,
    mask_outputs: bool = False,
    input_derivations: Mapping[str, Iterable[str]] | None = None,
) -> bytes:
    """Return the ATerm of ``drv``, as Nix's ``Derivation::unparse``.

    :param mask_outputs: print output paths, and env variables named after
        outputs, as ``""``.
    :param input_derivations: print these inputs instead of ``drv``'s (hash
        modulo passes hex hashes in place of ``.drv`` paths).
    """
    inputs = drv.input_derivations if input_derivations is None else input_derivations
    text = "".join(
        (
            "Derive(",
            _outputs(drv, mask_outputs),
            ",",
            _inputs(inputs),
            ",",
            _raw_list(drv.input_sources),
            ',"',
            drv.system,
            '",',
            _quoted(drv.builder),
            ",[",
            ",".join(_quoted(arg) for arg in drv.args),
            "],",
            _env(drv, mask_outputs),
            ")",
        )
    )
    return encode(text)
