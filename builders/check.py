"""Reproducibility checks: tell how a rebuilt output differs from the original.

``pyguix build --check`` (Nix's ``--check``, Guix's ``guix build --check``)
builds a derivation whose outputs are already valid once more and compares
the NAR hashes.  When they differ, the scheduler keeps the rebuild next to
the original (with a ``-check`` suffix) and calls :func:`compare_outputs` on
both trees to say *what* differs, then reports it with
:func:`format_check_report` or raises :class:`NondeterminismError`.

The comparison sees what a NAR sees, nothing more (store items are
canonical: no timestamps, no owners, modes only through the executable
bit).  For each path under either tree, in tree order (a directory, then its
entries sorted by bytes, as in a NAR), it reports one of:

- ``added`` / ``removed``: present in one tree only (the entries of an added
  or removed directory are not listed one by one);
- ``type``: a regular file, directory or symlink became another kind;
- ``symlink``: a symlink's target changed;
- ``executable``: a regular file gained or lost its executable bit;
- ``content``: a regular file's bytes changed, with a unified diff when both
  sides are small text (under :data:`DIFF_SIZE_LIMIT`, UTF-8, no NUL byte).

For anything subtler (archives, binaries), the report suggests
`diffoscope <https://diffoscope.org>`_, as Guix's and Nix's manuals do.
"""

from __future__ import annotations

import difflib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from store.errors import PyguixError

__all__ = [
    "DIFF_LINE_LIMIT",
    "DIFF_SIZE_LIMIT",
    "CheckResult",
    "DifferenceKind",
    "FileDifference",
    "NondeterminismError",
    "compare_outputs",
    "diffoscope_hint",
    "format_check_report",
]

DIFF_SIZE_LIMIT = 64 * 1024
"""Files up to this many bytes, on both sides, get a unified diff."""

DIFF_LINE_LIMIT = 40
"""Longest unified diff shown for one file, in lines; the rest is counted."""

_CHUNK = 1 << 16

DifferenceKind = Literal["added", "removed", "type", "symlink", "executable", "content"]


@dataclass(frozen=True, slots=True)
class FileDifference:
    """One way in which the two trees differ at one path."""

    path: str
    """The path relative to the output's top, ``"."`` for the top itself."""

    kind: DifferenceKind
    """What differs (see the module's docstring)."""

    detail: str
    """A short description: ``"regular file -> directory"``, ``"12 -> 14 bytes"``."""

    diff: str | None = None
    """For a small text file whose content changed, its unified diff."""


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of comparing an output with its rebuild."""

    original: str
    """The physical path of the original output."""

    rebuilt: str
    """The physical path of the rebuild."""

    differences: tuple[FileDifference, ...]
    """Every difference, in tree order; empty if the trees are identical."""

    @property
    def identical(self) -> bool:
        """Tell whether the two trees have the same NAR."""
        return not self.differences


@dataclass(frozen=True, slots=True)
class _Node:
    """What the comparison knows of one path of a tree."""

    kind: str
    executable: bool = False
    size: int = 0
    target: str = ""


def _join(top: str, key: tuple[bytes, ...]) -> str:
    """Return the path of ``key`` under ``top``."""
    return os.fsdecode(os.path.join(os.fsencode(top), *key))


def _node(path: str) -> _Node:
    """Describe the file at ``path``, not following a symlink."""
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        return _Node("symlink", target=os.readlink(path))
    if stat.S_ISDIR(info.st_mode):
        return _Node("directory")
    if stat.S_ISREG(info.st_mode):
        return _Node("regular file", bool(info.st_mode & stat.S_IXUSR), info.st_size)
    return _Node("special file")


def _walk(top: str) -> dict[tuple[bytes, ...], _Node]:
    """Return every path under ``top`` (``top`` itself as ``()``), keyed by
    its components as bytes, so that sorting the keys gives NAR order."""
    nodes: dict[tuple[bytes, ...], _Node] = {}
    pending: list[tuple[bytes, ...]] = [()]
    while pending:
        key = pending.pop()
        node = _node(_join(top, key))
        nodes[key] = node
        if node.kind == "directory":
            names = os.listdir(os.fsencode(_join(top, key)))
            pending.extend((*key, name) for name in names)
    return nodes


def _same_bytes(left: str, right: str) -> bool:
    """Tell whether two regular files of the same size hold the same bytes."""
    with open(left, "rb") as one, open(right, "rb") as other:
        while True:
            chunk = one.read(_CHUNK)
            if chunk != other.read(_CHUNK):
                return False
            if not chunk:
                return True


def _text(path: str, size: int) -> list[str] | None:
    """Return the lines of a small UTF-8 text file, or ``None``."""
    if size > DIFF_SIZE_LIMIT:
        return None
    with open(path, "rb") as file:
        data = file.read(DIFF_SIZE_LIMIT + 1)
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        return None


def _unified_diff(
    original: str, rebuilt: str, name: str, sizes: tuple[int, int]
) -> str | None:
    """Return a unified diff of two small text files, cut to
    :data:`DIFF_LINE_LIMIT` lines, or ``None`` if either is not one."""
    before, after = _text(original, sizes[0]), _text(rebuilt, sizes[1])
    if before is None or after is None:
        return None
    lines = list(
        difflib.unified_diff(
            before, after, f"original/{name}", f"rebuilt/{name}", n=2, lineterm=""
        )
    )
    if not lines:
        return None  # differs only in a final newline or a line ending
    if len(lines) > DIFF_LINE_LIMIT:
        rest = len(lines) - DIFF_LINE_LIMIT
        lines = [*lines[:DIFF_LINE_LIMIT], f"... {rest} more diff lines"]
    return "\n".join(lines)


def _compare_node(
    name: str, before: _Node, after: _Node, paths: tuple[str, str]
) -> Iterator[FileDifference]:
    """Yield the differences between two nodes present in both trees."""
    if before.kind != after.kind:
        yield FileDifference(name, "type", f"{before.kind} -> {after.kind}")
    elif before.target != after.target:
        yield FileDifference(name, "symlink", f"'{before.target}' -> '{after.target}'")
    elif before.kind == "regular file":
        if before.executable != after.executable:
            modes = ("not executable", "executable")
            detail = f"{modes[before.executable]} -> {modes[after.executable]}"
            yield FileDifference(name, "executable", detail)
        if before.size != after.size or not _same_bytes(*paths):
            sizes = (before.size, after.size)
            detail = f"{before.size} -> {after.size} bytes"
            diff = _unified_diff(*paths, name, sizes)
            yield FileDifference(name, "content", detail, diff)


def compare_outputs(original: str, rebuilt: str) -> CheckResult:
    """Compare the trees at ``original`` and ``rebuilt`` as their NARs would be.

    :param original: the physical path of the valid output.
    :param rebuilt: the physical path of its rebuild.
    :return: every difference, in tree order (deterministic).
    :raises OSError: if either tree cannot be read.
    """
    before, after = _walk(original), _walk(rebuilt)
    found: list[FileDifference] = []
    gone: set[tuple[bytes, ...]] = set()

    for key in sorted(before.keys() | after.keys()):
        if any(key[:depth] in gone for depth in range(len(key))):
            continue
        name = b"/".join(key).decode("utf-8", "backslashreplace") or "."
        if key not in after or key not in before:
            kind: DifferenceKind = "removed" if key not in after else "added"
            found.append(
                FileDifference(name, kind, (before.get(key) or after[key]).kind)
            )
            gone.add(key)
            continue
        paths = (_join(original, key), _join(rebuilt, key))
        changes = list(_compare_node(name, before[key], after[key], paths))
        if any(change.kind == "type" for change in changes):
            gone.add(key)
        found.extend(changes)

    return CheckResult(original, rebuilt, tuple(found))


_LABELS: dict[str, str] = {
    "added": "only in the rebuild",
    "removed": "only in the original",
    "type": "changed type",
    "symlink": "changed symlink target",
    "executable": "changed executable bit",
    "content": "changed content",
}


def diffoscope_hint(result: CheckResult) -> str:
    """Return the suggestion to compare both trees in full with diffoscope."""
    return (
        f"run 'diffoscope {result.original} {result.rebuilt}' to see every difference"
    )


def format_check_report(
    result: CheckResult,
    *,
    drv_path: str | None = None,
    original_name: str | None = None,
    rebuilt_name: str | None = None,
    limit: int = 50,
) -> str:
    """Return the report of ``result``: a heading, then each differing file
    (with its diff, indented), then the diffoscope suggestion.

    :param drv_path: the derivation checked, named in the heading if given.
    :param original_name: how to name the original (its store path); its
        physical path by default.
    :param rebuilt_name: likewise for the rebuild.
    :param limit: how many differences to list; the rest are counted.
    """
    original = original_name or result.original
    rebuilt = rebuilt_name or result.rebuilt
    if result.identical:
        return f"output '{original}' is identical to its rebuild '{rebuilt}'"

    count = len(result.differences)
    who = f" of '{drv_path}'" if drv_path else ""
    lines = [
        f"output '{original}'{who} differs from its rebuild '{rebuilt}'"
        f" ({count} difference{'' if count == 1 else 's'}):"
    ]
    for difference in result.differences[:limit]:
        label = _LABELS[difference.kind]
        lines.append(f"  {label}: {difference.path} ({difference.detail})")
        if difference.diff:
            lines.extend(f"    {line}" for line in difference.diff.splitlines())
    if count > limit:
        lines.append(f"  ... and {count - limit} more")
    lines.append(f"hint: {diffoscope_hint(result)}")
    return "\n".join(lines)


class NondeterminismError(PyguixError):
    """Report that rebuilding a derivation gave a different output.

    Its message is the report of :func:`format_check_report` (without the
    hint line), its hint the diffoscope suggestion, its exit status 104,
    as Nix's for a check that found a difference.

    :param drv_path: the derivation checked.
    :param result: the comparison of one of its outputs with the rebuild.
    """

    exit_status = 104

    def __init__(
        self,
        drv_path: str,
        result: CheckResult,
        *,
        original_name: str | None = None,
        rebuilt_name: str | None = None,
    ) -> None:
        report = format_check_report(
            result,
            original_name=original_name,
            rebuilt_name=rebuilt_name,
        )
        body = report.rsplit("\nhint: ", 1)[0]
        super().__init__(
            f"derivation '{drv_path}' is not deterministic: {body}",
            diffoscope_hint(result),
        )
        self.drv_path = drv_path
        self.result = result
