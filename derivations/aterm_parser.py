"""Parse a derivation's ATerm strictly: accept only what Nix 2.8 writes.

Nix's ``parseDerivation`` (``libstore/derivations.cc``); the grammar is in
:mod:`derivations.aterm_writer`.  This parser is stricter than Nix's, so that
for every text it accepts, writing the record back gives the same bytes:

* escapes: only ``\\"``, ``\\\\``, ``\\n``, ``\\r`` and ``\\t``, and only in
  quoted strings (builder, args, env); a raw LF, CR or TAB in them, or any
  backslash in an unquoted field (paths, output names, hash fields, system),
  is something Nix never writes;
* outputs, input derivations, their output names, sources and env keys must
  be sorted by bytes without duplicates;
* every path must be a valid store path in the given store directory, input
  derivations must end in ``.drv``, output paths must be named after the
  derivation and the output;
* an output is input-addressed (``"",""``) or fixed (``[r:]ALGO`` and the
  digest in lowercase base16); a fixed output must be the only one, ``out``.
  Floating content-addressed, deferred and impure outputs are experimental in
  Nix and not supported here;
* nothing may follow the closing parenthesis.

The text is taken as bytes and decoded as UTF-8 with ``surrogateescape``:
bytes that are not UTF-8 survive the round trip.  Errors carry the byte
offset and show an excerpt with a caret.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import TypeVar

from derivations.aterm_fast import scan
from derivations.derivation import (
    Derivation,
    DerivationOutput,
    byte_order,
    name_from_outputs,
    name_from_path,
)
from store.errors import InvalidPathError, PyguixError
from store.hash import ALGORITHMS
from store.paths import StorePath, output_path_name

__all__ = ["DerivationParseError", "from_aterm"]

T = TypeVar("T")

_QUOTED_PLAIN = re.compile(r'[^"\\\n\r\t]*')
_RAW_PLAIN = re.compile(r'[^"\\]*')
_UNESCAPE = {'"': '"', "\\": "\\", "n": "\n", "r": "\r", "t": "\t"}
_HEX = re.compile(r"[0-9a-f]*")
_EXCERPT = 24


def _render(data: bytes) -> str:
    """Return ``data`` printable on one line, non-printable bytes as ``\\xNN``."""
    return "".join(chr(b) if 0x20 <= b < 0x7F else f"\\x{b:02x}" for b in data)


class DerivationParseError(PyguixError):
    """Report text that is not a derivation as Nix writes it.

    :param source: what was parsed (a file name or derivation path).
    :param offset: the byte offset of the problem.
    :param reason: what was expected there.
    """

    def __init__(self, source: str, data: bytes, offset: int, reason: str) -> None:
        start = max(0, offset - _EXCERPT)
        before = _render(data[start:offset])
        after = _render(data[offset : offset + _EXCERPT])
        excerpt = f"{before}{after}\n{' ' * len(before)}^"
        super().__init__(
            f"cannot parse derivation '{source}' at byte {offset}: {reason}\n{excerpt}",
            "a .drv file is the ATerm Derive(...) that Nix or pyguix writes",
        )
        self.source = source
        self.offset = offset
        self.reason = reason


class _Parser:
    """A cursor over the decoded text; positions are in characters."""

    def __init__(self, data: bytes, source: str) -> None:
        self.data = data
        self.text = data.decode("utf-8", "surrogateescape")
        self.source = source
        self.pos = 0

    def fail(self, reason: str, pos: int | None = None) -> DerivationParseError:
        where = self.pos if pos is None else pos
        offset = len(byte_order(self.text[:where]))
        return DerivationParseError(self.source, self.data, offset, reason)

    def expect(self, literal: str) -> None:
        if not self.text.startswith(literal, self.pos):
            raise self.fail(f"expected '{literal}'")
        self.pos += len(literal)

    def quoted(self) -> str:
        """Read a string written by ``printString``."""
        self.expect('"')
        chunks = []
        while True:
            match = _QUOTED_PLAIN.match(self.text, self.pos)
            assert match is not None
            chunks.append(match.group())
            self.pos = match.end()
            char = self.text[self.pos : self.pos + 1]
            if char == '"':
                self.pos += 1
                return "".join(chunks)
            if char == "\\":
                escaped = _UNESCAPE.get(self.text[self.pos + 1 : self.pos + 2])
                if escaped is None:
                    raise self.fail(
                        'unknown escape; Nix writes only \\" \\\\ \\n \\r \\t'
                    )
                chunks.append(escaped)
                self.pos += 2
            elif char:
                raise self.fail(f"raw {char!r} in a string; Nix escapes it")
            else:
                raise self.fail("unterminated string")

    def raw(self) -> str:
        """Read a string written by ``printUnquotedString``."""
        self.expect('"')
        match = _RAW_PLAIN.match(self.text, self.pos)
        assert match is not None
        end = match.end()
        if self.text[end : end + 1] != '"':
            what = "backslash" if end < len(self.text) else "end of text"
            raise self.fail(f"{what} in an unquoted string; Nix writes it raw", end)
        self.pos = end + 1
        return match.group()

    def items(self, item: Callable[[], T]) -> list[T]:
        """Read ``[item,item,...]``."""
        self.expect("[")
        result: list[T] = []
        if self.text.startswith("]", self.pos):
            self.pos += 1
            return result
        while True:
            result.append(item())
            if self.text.startswith(",", self.pos):
                self.pos += 1
            elif self.text.startswith("]", self.pos):
                self.pos += 1
                return result
            else:
                raise self.fail("expected ',' or ']'")

    def sorted_keys(self, keys: list[str], starts: list[int], what: str) -> None:
        """Check that ``keys`` increase strictly, by bytes."""
        for index in range(1, len(keys)):
            if byte_order(keys[index - 1]) >= byte_order(keys[index]):
                problem = "duplicate" if keys[index - 1] == keys[index] else "unsorted"
                raise self.fail(f"{problem} {what} '{keys[index]}'", starts[index])

    def located(self, item: Callable[[], T]) -> Callable[[], tuple[int, T]]:
        def read() -> tuple[int, T]:
            return self.pos, item()

        return read


class _Reader:
    """Read the fields of ``Derive(...)`` and check them."""

    def __init__(self, parser: _Parser, store_dir: str, name: str | None) -> None:
        self.p = parser
        self.store_dir = store_dir.rstrip("/")
        self.name = name

    def store_path(self, path: str, start: int, what: str) -> StorePath:
        try:
            return StorePath.from_string(path, self.store_dir)
        except InvalidPathError as error:
            raise self.p.fail(f"invalid {what}: {error.reason}", start) from None

    def output(self) -> tuple[int, str, DerivationOutput]:
        p = self.p
        start = p.pos
        p.expect("(")
        name = p.raw()
        path_start = p.pos + 1
        p.expect(",")
        path = p.raw()
        p.expect(",")
        algo_start = p.pos + 1
        method_algo = p.raw()
        p.expect(",")
        hash_start = p.pos + 1
        digest = p.raw()
        p.expect(")")
        if not name:
            raise p.fail("empty output name", start + 2)
        self.store_path(path, path_start, f"path of output '{name}'")
        if method_algo == "" and digest == "":
            return start, name, DerivationOutput(path)
        recursive = method_algo.startswith("r:")
        algo = method_algo[2:] if recursive else method_algo
        if algo not in ALGORITHMS:
            raise p.fail(
                f"unknown hash algorithm '{method_algo}' for output '{name}'",
                algo_start,
            )
        if len(digest) != 2 * ALGORITHMS[algo] or not _HEX.fullmatch(digest):
            raise p.fail(f"'{digest}' is not a base16 {algo} hash", hash_start)
        return (
            start,
            name,
            DerivationOutput(path, algo, bytes.fromhex(digest), recursive),
        )

    def outputs(self) -> dict[str, DerivationOutput]:
        p = self.p
        start = p.pos
        found = p.items(self.output)
        if not found:
            raise p.fail("a derivation has at least one output", start)
        p.sorted_keys(
            [name for _, name, _ in found], [s for s, _, _ in found], "output"
        )
        outputs = {name: output for _, name, output in found}
        fixed = [name for name, output in outputs.items() if output.is_fixed()]
        if fixed and (len(outputs) != 1 or fixed != ["out"]):
            raise p.fail("a fixed output must be the only output, named 'out'", start)
        return outputs

    def output_name(self) -> tuple[int, str]:
        start = self.p.pos
        name = self.p.raw()
        if not name:
            raise self.p.fail("empty output name", start)
        return start, name

    def input_derivation(self) -> tuple[int, str, frozenset[str]]:
        p = self.p
        start = p.pos
        p.expect("(")
        path = p.raw()
        if not self.store_path(path, start + 2, "input derivation").is_derivation():
            raise p.fail(f"input derivation '{path}' does not end in '.drv'", start + 2)
        p.expect(",")
        list_start = p.pos
        names = p.items(self.output_name)
        p.expect(")")
        if not names:
            raise p.fail(f"no output used from input '{path}'", list_start)
        p.sorted_keys([n for _, n in names], [s for s, _ in names], "output name")
        return start, path, frozenset(n for _, n in names)

    def source(self) -> tuple[int, str]:
        start = self.p.pos
        path = self.p.raw()
        self.store_path(path, start + 1, "input source")
        return start, path

    def env_entry(self) -> tuple[int, str, str]:
        p = self.p
        start = p.pos
        p.expect("(")
        key = p.quoted()
        p.expect(",")
        value = p.quoted()
        p.expect(")")
        return start, key, value

    def check_output_names(
        self, name: str, outputs: dict[str, DerivationOutput]
    ) -> None:
        for output, value in outputs.items():
            expected = output_path_name(name, output)
            if value.path.rsplit("/", 1)[-1][33:] != expected:
                raise self.p.fail(
                    f"output '{output}' is at '{value.path}', not named '{expected}'", 0
                )

    def derivation(self) -> Derivation:
        p = self.p
        p.expect("Derive(")
        outputs = self.outputs()
        p.expect(",")
        inputs = p.items(self.input_derivation)
        p.sorted_keys(
            [i[1] for i in inputs], [i[0] for i in inputs], "input derivation"
        )
        p.expect(",")
        sources = p.items(self.source)
        p.sorted_keys([s for _, s in sources], [o for o, _ in sources], "input source")
        p.expect(",")
        system = p.raw()
        p.expect(",")
        builder = p.quoted()
        p.expect(",")
        args = p.items(p.quoted)
        p.expect(",")
        env = p.items(self.env_entry)
        p.sorted_keys([e[1] for e in env], [e[0] for e in env], "env variable")
        p.expect(")")
        if p.pos != len(p.text):
            raise p.fail("trailing bytes after the derivation")
        name = self.name or name_from_outputs(outputs)
        self.check_output_names(name, outputs)
        return Derivation(
            name=name,
            outputs=outputs,
            input_derivations={path: names for _, path, names in inputs},
            input_sources=frozenset(s for _, s in sources),
            system=system,
            builder=builder,
            args=tuple(args),
            env={key: value for _, key, value in env},
        )


def from_aterm(
    data: bytes,
    store_dir: str,
    path: str = "",
    name: str | None = None,
    source: str | None = None,
    fast: bool = True,
) -> Derivation:
    """Parse ``data``, the ATerm of a derivation, as Nix's ``parseDerivation``.

    :param store_dir: the store directory every path must be in.
    :param path: the derivation path, if known; gives the name.
    :param name: the derivation name, if ``path`` is not given; otherwise
        inferred from the output paths.
    :param source: how to name the text in errors (default: ``path``).
    :param fast: try :mod:`derivations.aterm_fast` first (same result).
    :raises DerivationParseError: if ``data`` is not exactly what Nix writes.
    """
    if path:
        name = name_from_path(path)
    text = data.decode("utf-8", "surrogateescape")
    drv = scan(text, store_dir.rstrip("/"), name) if fast else None
    if drv is None:
        parser = _Parser(data, source or path or "<text>")
        drv = _Reader(parser, store_dir, name).derivation()
    return dataclasses.replace(drv, path=path) if path else drv
