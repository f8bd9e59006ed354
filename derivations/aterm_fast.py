"""Parse a well-formed derivation ATerm quickly, or decline.

Loading the graph of a large closure parses thousands of ``.drv`` files, so
the common case goes through a few regular expressions instead of the
character-level parser of :mod:`derivations.aterm_parser`.  This module
accepts exactly the same texts as that parser (the same grammar and the same
checks) and returns ``None`` for anything else, so that the strict parser
runs and reports the problem with its offset.  Note: the property tests
check that both parsers agree; change them together.
"""

from __future__ import annotations

import functools
import re

from derivations.derivation import (
    Derivation,
    DerivationOutput,
    byte_order,
    name_from_outputs,
)
from store.hash import ALGORITHMS
from store.paths import MAX_NAME_LENGTH, output_path_name

__all__ = ["scan"]

_RAW = r'"[^"\\]*"'
_QUOTED = r'"[^"\\\n\r\t]*(?:\\["\\nrt][^"\\\n\r\t]*)*"'


def _list(item: str) -> str:
    return f"(?:{item}(?:,{item})*)?"


_OUTPUT = rf"\({_RAW},{_RAW},{_RAW},{_RAW}\)"
_INPUT = rf"\({_RAW},\[{_list(_RAW)}\]\)"
_ENV = rf"\({_QUOTED},{_QUOTED}\)"
_DERIVE = re.compile(
    rf"Derive\(\[({_list(_OUTPUT)})\],\[({_list(_INPUT)})\],\[({_list(_RAW)})\],"
    rf"({_RAW}),({_QUOTED}),\[({_list(_QUOTED)})\],\[({_list(_ENV)})\]\)"
)
_OUTPUT_ITEM = re.compile(r'\("([^"\\]*)","([^"\\]*)","([^"\\]*)","([^"\\]*)"\)')
_INPUT_ITEM = re.compile(rf'\("([^"\\]*)",\[({_list(_RAW)})\]\)')
_QUOTED_ITEM = re.compile(r'"([^"\\\n\r\t]*(?:\\["\\nrt][^"\\\n\r\t]*)*)"')
_ENV_ITEM = re.compile(rf"\({_QUOTED_ITEM.pattern},{_QUOTED_ITEM.pattern}\)")
_ESCAPE = re.compile(r"\\(.)")
_UNESCAPE = {'"': '"', "\\": "\\", "n": "\n", "r": "\r", "t": "\t"}
_HEX = re.compile(r"[0-9a-f]+")


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    return _ESCAPE.sub(lambda match: _UNESCAPE[match[1]], text)


def _raw_items(section: str) -> list[str]:
    return section[1:-1].split('","') if section else []


def _increasing(keys: list[str]) -> bool:
    """Tell whether ``keys`` increase strictly by bytes."""
    if len(keys) < 2:
        return True
    if "".join(keys).isascii():
        return all(a < b for a, b in zip(keys, keys[1:], strict=False))
    encoded = [byte_order(key) for key in keys]
    return all(a < b for a, b in zip(encoded, encoded[1:], strict=False))


@functools.lru_cache(maxsize=8)
def _store_path_pattern(store_dir: str) -> re.Pattern[str]:
    """Return what ``StorePath.from_string`` accepts in ``store_dir``."""
    return re.compile(
        re.escape(store_dir) + r"/[0123456789abcdfghijklmnpqrsvwxyz]{32}-"
        rf"[0-9a-zA-Z+\-._?=]{{1,{MAX_NAME_LENGTH}}}"
    )


def _store_path(path: str, store_dir: str) -> bool:
    return _store_path_pattern(store_dir).fullmatch(path) is not None


def _output(path: str, method_algo: str, digest: str) -> DerivationOutput | None:
    if not method_algo and not digest:
        return DerivationOutput(path)
    recursive = method_algo.startswith("r:")
    algo = method_algo[2:] if recursive else method_algo
    size = ALGORITHMS.get(algo)
    if size is None or len(digest) != 2 * size or not _HEX.fullmatch(digest):
        return None
    return DerivationOutput(path, algo, bytes.fromhex(digest), recursive)


def _outputs(section: str, store_dir: str) -> dict[str, DerivationOutput] | None:
    items = _OUTPUT_ITEM.findall(section)
    names = [item[0] for item in items]
    if not items or not all(names) or not _increasing(names):
        return None
    outputs = {}
    for name, path, method_algo, digest in items:
        output = _output(path, method_algo, digest)
        if output is None or not _store_path(path, store_dir):
            return None
        outputs[name] = output
    fixed = [name for name, output in outputs.items() if output.is_fixed()]
    if fixed and (len(outputs) != 1 or fixed != ["out"]):
        return None
    return outputs


def _inputs(section: str, store_dir: str) -> dict[str, frozenset[str]] | None:
    inputs = {}
    for path, names_section in _INPUT_ITEM.findall(section):
        names = _raw_items(names_section)
        if not _store_path(path, store_dir) or not path.endswith(".drv"):
            return None
        if not names or not all(names) or not _increasing(names):
            return None
        inputs[path] = frozenset(names)
    return inputs if _increasing(list(inputs)) else None


def _named_after(name: str, outputs: dict[str, DerivationOutput]) -> bool:
    return all(
        value.path.rsplit("/", 1)[-1][33:] == output_path_name(name, output)
        for output, value in outputs.items()
    )


def scan(text: str, store_dir: str, name: str | None) -> Derivation | None:
    """Return the derivation in ``text`` (decoded with ``surrogateescape``),
    or ``None`` if it is not one the strict parser accepts.

    :param name: the derivation name, or ``None`` to infer it from the
        output paths.
    """
    match = _DERIVE.fullmatch(text)
    if match is None:
        return None
    outputs_s, inputs_s, sources_s, system, builder, args_s, env_s = match.groups()
    outputs = _outputs(outputs_s, store_dir)
    inputs = _inputs(inputs_s, store_dir)
    sources = _raw_items(sources_s)
    env_items = _ENV_ITEM.findall(env_s)
    keys = [_unescape(key) for key, _ in env_items]
    if outputs is None or inputs is None or not _increasing(sources):
        return None
    if not _increasing(keys) or not all(_store_path(s, store_dir) for s in sources):
        return None
    if name is None:
        name = name_from_outputs(outputs)
    if not _named_after(name, outputs):
        return None
    return Derivation(
        name=name,
        outputs=outputs,
        input_derivations=inputs,
        input_sources=frozenset(sources),
        system=system[1:-1],
        builder=_unescape(builder[1:-1]),
        args=tuple(_unescape(arg) for arg in _QUOTED_ITEM.findall(args_s)),
        env={
            key: _unescape(value)
            for key, (_, value) in zip(keys, env_items, strict=True)
        },
    )
