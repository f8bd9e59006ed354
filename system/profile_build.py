"""Build a profile in its builder: the build side of :mod:`system.profiles`.

What Guix's ``guix/build/profiles.scm`` and ``guix/build/union.scm`` do
for ``profile-derivation``, here for the profile builder: it imports this
module (copied into the store with it) and calls :func:`build_profile`
with the manifest entries baked in, their items already store paths.  It
uses the standard library only, and must stay so: it runs under the
bootstrap interpreter with nothing else on ``sys.path``.

A profile is made in four steps:

1. the entries are checked: two entries of the same name and output with
   different store items conflict, and the build fails naming both (Guix's
   ``&profile-collision-error``); an entry given twice is kept once;
2. the union of the items (Guix's ``union-build``): an entry one item has
   is a symlink to it; a directory several items have is a real directory
   merging theirs; a file several items have is linked to the first one,
   with a warning naming both items when the files differ (identical files
   are no collision); a file in one item and a directory in another fails
   the build;
3. the ``manifest`` file, Guix's manifest format version 4 (see
   :func:`manifest_text`);
4. ``etc/profile``, POSIX shell exporting the search paths that match
   files in the profile, ``PATH`` first (see :func:`profile_text`).

A ``manifest`` or ``etc/profile`` an item provides is replaced, and an
``etc`` linked to an item's is made a real directory first.

An entry is ``(name, version, output, item, search_paths)``; a search
path is ``(variable, files, separator, file_type, file_pattern)``, Guix's
``search-path-specification->sexp`` order: ``separator`` ``None`` means
the variable takes a single value, ``file_type`` is ``"directory"`` or
``"regular"``, ``file_pattern`` a regular expression the base names of the
files under ``files`` must match (``None``: ``files`` themselves).
"""

from __future__ import annotations

import os
import re
import stat
import sys
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = [
    "PATH_SEARCH_PATH",
    "PROFILE_VARIABLE",
    "build_profile",
    "check_entries",
    "evaluate_search_paths",
    "manifest_text",
    "profile_text",
    "union_build",
    "write_sexp",
]

SearchPathData = tuple[str, Sequence[str], str | None, str, str | None]
Entry = tuple[str, str, str, str, Sequence[SearchPathData]]

PATH_SEARCH_PATH: SearchPathData = ("PATH", ("bin", "sbin"), ":", "directory", None)
"""The search path of ``PATH``, which every profile has (Guix's ``$PATH``)."""

PROFILE_VARIABLE = "GUIX_PROFILE"
"""The variable that, set when ``etc/profile`` is sourced, replaces the
profile's store path in the values it exports (as Guix's)."""

MANIFEST_HEADER = """\
;; The manifest of this profile, written when it was built: the entries it
;; holds, in Guix's manifest format version 4.  It is data for tools that
;; read profiles, not a manifest to build a profile from.

"""

PROFILE_HEADER = """\
# Source this file to set the search paths of this profile, such as PATH.
# Set GUIX_PROFILE first to refer to the profile by a stable name, as in
#
#   GUIX_PROFILE=/run/current-system/profile; . "$GUIX_PROFILE/etc/profile"
#
# Otherwise the values refer to this very profile in the store.

"""


# ---------------------------------------------------------------------------
# Entries


def check_entries(entries: Sequence[Entry]) -> list[Entry]:
    """Return ``entries`` without repeats, first occurrence first.

    :raises SystemExit: naming both items when two entries have the same
        name and output but different items (Guix's
        ``check-for-collisions``).
    """
    kept: list[Entry] = []
    seen: dict[tuple[str, str], Entry] = {}
    for entry in entries:
        name, _, output, item, _ = entry
        other = seen.get((name, output))
        if other is None:
            seen[(name, output)] = entry
            kept.append(entry)
        elif other[3] != item:
            raise SystemExit(
                f"profile: conflicting entries for '{name}:{output}': "
                f"'{other[3]}' and '{item}'; keep one of them in the packages"
            )
    return kept


# ---------------------------------------------------------------------------
# Union


def union_build(output: str, items: Sequence[str], names: Sequence[str]) -> None:
    """Make ``output`` a directory merging the trees ``items`` with symlinks.

    ``names[i]`` names the package of ``items[i]`` in collision warnings.

    :raises SystemExit: when a file of one item is a directory in another.
    """
    for item, name in zip(items, names, strict=True):
        if not os.path.isdir(item):
            raise SystemExit(
                f"profile: package '{name}' is '{item}', which is not a directory"
            )
    os.mkdir(output)
    _merge(output, "", list(zip(items, names, strict=True)))


def _merge(output: str, relative: str, sources: list[tuple[str, str]]) -> None:
    """Fill the directory ``output/relative`` from the same directory of
    each ``(item, name)`` of ``sources``."""
    found: dict[str, list[tuple[str, str]]] = {}
    for item, name in sources:
        for entry in sorted(os.listdir(os.path.join(item, relative))):
            found.setdefault(entry, []).append((item, name))
    for entry in sorted(found):
        path = os.path.join(relative, entry)
        _link_entry(output, path, found[entry])


def _link_entry(output: str, path: str, sources: list[tuple[str, str]]) -> None:
    """Make ``output/path``, which each of ``sources`` has."""
    target = os.path.join(output, path)
    directories = [os.path.isdir(os.path.join(item, path)) for item, _ in sources]
    if len(sources) > 1 and all(directories):
        os.mkdir(target)
        _merge(output, path, sources)
        return
    if any(directories) and not all(directories):
        owners = ", ".join(f"'{name}'" for name, _ in _owners(path, sources))
        raise SystemExit(
            f"profile: '{path}' is a file in some of {owners} and a directory "
            "in others; remove one of these packages"
        )
    first, name = sources[0]
    for item, other in sources[1:]:
        if not _same_file(os.path.join(first, path), os.path.join(item, path)):
            _warn_collision(path, (name, first), (other, item))
    os.symlink(os.path.join(first, path), target)


def _owners(path: str, sources: list[tuple[str, str]]) -> Iterator[tuple[str, str]]:
    """Yield ``(package, file)`` for each source of ``path``."""
    for item, name in sources:
        yield name, os.path.join(item, path)


def _same_file(left: str, right: str) -> bool:
    """Tell whether ``left`` and ``right`` are the same file or regular
    files with the same bytes (Guix's ``file=?``)."""
    if os.path.realpath(left) == os.path.realpath(right):
        return True
    try:
        a, b = os.stat(left), os.stat(right)
    except OSError:
        return False
    if not (stat.S_ISREG(a.st_mode) and stat.S_ISREG(b.st_mode)):
        return False
    if a.st_size != b.st_size:
        return False
    with open(left, "rb") as one, open(right, "rb") as two:
        while chunk := one.read(1 << 16):
            if chunk != two.read(len(chunk)):
                return False
    return True


def _warn_collision(path: str, kept: tuple[str, str], dropped: tuple[str, str]) -> None:
    """Report that packages ``kept`` and ``dropped`` both provide ``path``,
    differently, and that the first one's is linked."""
    print(
        f"warning: profile: packages '{kept[0]}' and '{dropped[0]}' both provide "
        f"'{path}', differently: linking '{kept[1]}/{path}', "
        f"not '{dropped[1]}/{path}'",
        file=sys.stderr,
    )


def _ensure_writable_directory(directory: str) -> None:
    """Make ``directory`` a real directory: create it, or replace a symlink
    to a directory by a directory of symlinks to its entries (Guix's
    ``ensure-writable-directory``)."""
    if not os.path.lexists(directory):
        os.mkdir(directory)
    elif os.path.islink(directory) and os.path.isdir(directory):
        target = os.path.realpath(directory)
        os.remove(directory)
        os.mkdir(directory)
        for entry in sorted(os.listdir(target)):
            os.symlink(os.path.join(target, entry), os.path.join(directory, entry))
    elif not os.path.isdir(directory):
        raise SystemExit(f"profile: '{directory}' is a file, not a directory")


def _replace(path: str) -> None:
    """Remove ``path`` if there is a file (or symlink) there."""
    if os.path.lexists(path):
        os.remove(path)


# ---------------------------------------------------------------------------
# The manifest


class Symbol(str):
    """A string written as an S-expression symbol, not a string."""

    __slots__ = ()


_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _string_text(text: str) -> str:
    """Return ``text`` as an S-expression string, as Guile writes it."""
    escaped = "".join(
        _ESCAPES.get(char, char if char.isprintable() else f"\\x{ord(char):x};")
        for char in text
    )
    return f'"{escaped}"'


def write_sexp(value: Any) -> str:
    """Return the S-expression of ``value`` on one line: a :class:`Symbol`
    as a symbol, other strings quoted, ``None`` and booleans as ``#f`` and
    ``#t``, integers as they are, lists and tuples as lists."""
    if isinstance(value, Symbol):
        return str(value)
    if isinstance(value, str):
        return _string_text(value)
    if value is None or value is False:
        return "#f"
    if value is True:
        return "#t"
    if isinstance(value, int):
        return str(value)
    return "(" + " ".join(write_sexp(item) for item in value) + ")"


def _search_path_sexp(spec: SearchPathData) -> list[Any]:
    """Return ``spec`` as Guix's ``search-path-specification->sexp``."""
    variable, files, separator, file_type, pattern = spec
    return [variable, list(files), separator, Symbol(file_type), pattern]


def _entry_sexp(entry: Entry) -> list[Any]:
    """Return ``entry`` as a version 4 manifest entry; empty fields are
    left out, as Guix's ``manifest->gexp`` does."""
    name, version, output, item, search_paths = entry
    sexp: list[Any] = [name, version, output, item]
    if search_paths:
        specs = [_search_path_sexp(spec) for spec in search_paths]
        sexp.append([Symbol("search-paths"), specs])
    return sexp


def manifest_text(entries: Sequence[Entry]) -> str:
    """Return the ``manifest`` file of a profile of ``entries``, in order.

    The grammar (Guix's manifest format version 4, one entry a line)::

        manifest = "(manifest (version 4) (packages (" entry* ")))"
        entry    = "(" name version output item [search-paths] ")"
        search-paths = "(search-paths (" spec* "))"
        spec     = "(" variable "(" file* ")" separator type pattern ")"

    where the names, versions, outputs, items, variables and files are
    strings, a separator or pattern a string or ``#f``, a type a symbol.
    """
    lines = [write_sexp(_entry_sexp(entry)) for entry in entries]
    packages = "\n  (" + "\n   ".join(lines) + ")" if lines else " ()"
    return f"{MANIFEST_HEADER}(manifest\n (version 4)\n (packages{packages}))\n"


# ---------------------------------------------------------------------------
# etc/profile


def _matches(directory: str, spec: SearchPathData) -> list[str]:
    """Return the files of ``spec`` found under ``directory``, in order
    (Guix's ``search-path-as-list`` for one directory)."""
    _, files, _, file_type, pattern = spec
    found: list[str] = []
    for file in files:
        path = os.path.join(directory, file)
        if pattern is None:
            if _has_type(path, file_type):
                found.append(path)
        else:
            found.extend(_find_files(path, file_type, re.compile(pattern)))
    return found


def _has_type(path: str, file_type: str) -> bool:
    """Tell whether ``path``, symlinks followed, is of ``file_type``."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    if file_type == "directory":
        return stat.S_ISDIR(mode)
    if file_type == "regular":
        return stat.S_ISREG(mode)
    return False


def _find_files(top: str, file_type: str, pattern: re.Pattern[str]) -> list[str]:
    """Return the files under ``top`` of ``file_type`` whose base name
    ``pattern`` matches, depth first in name order, symlinks followed."""
    found: list[str] = []
    for root, directories, files in os.walk(top, followlinks=True):
        directories.sort()
        for entry in directories + files:
            path = os.path.join(root, entry)
            if pattern.search(entry) and _has_type(path, file_type):
                found.append(path)
    return sorted(found)


def evaluate_search_paths(
    directory: str, specs: Sequence[SearchPathData]
) -> list[tuple[SearchPathData, str]]:
    """Return ``(spec, value)`` for each of ``specs`` that matches files
    under ``directory`` (Guix's ``evaluate-search-paths``): a variable
    without separator takes the first match, others all of them."""
    values: list[tuple[SearchPathData, str]] = []
    for spec in specs:
        found = _matches(directory, spec)
        if not found:
            continue
        separator = spec[2]
        values.append((spec, found[0] if separator is None else separator.join(found)))
    return values


def _definition(output: str, spec: SearchPathData, value: str) -> str:
    """Return the ``export`` line of ``spec``, ``output`` in ``value``
    replaced by ``${GUIX_PROFILE:-output}`` (Guix's ``abstract-profile``),
    prepended to the variable's current value when it has a separator."""
    variable, _, separator, _, _ = spec
    prefix = f"${{{PROFILE_VARIABLE}:-{output}}}"
    parts = value.split(separator) if separator is not None else [value]
    abstract = [prefix + part[len(output) :] for part in parts]
    if separator is None:
        return f'export {variable}="{abstract[0]}"'
    joined = separator.join(abstract)
    return f'export {variable}="{joined}${{{variable}:+{separator}}}${variable}"'


def profile_text(output: str, specs: Sequence[SearchPathData]) -> str:
    """Return ``etc/profile`` for the profile ``output``: an ``export`` line
    for each of ``specs`` matching files in it, in order."""
    lines = [
        _definition(output, spec, value)
        for spec, value in evaluate_search_paths(output, specs)
    ]
    return PROFILE_HEADER + "".join(line + "\n" for line in lines)


def _search_paths(entries: Sequence[Entry]) -> list[SearchPathData]:
    """Return ``PATH``'s search path then those of ``entries``, each once."""
    specs: list[SearchPathData] = []
    for spec in [PATH_SEARCH_PATH, *(s for e in entries for s in e[4])]:
        frozen = (spec[0], tuple(spec[1]), spec[2], spec[3], spec[4])
        if frozen not in specs:
            specs.append(frozen)
    return specs


# ---------------------------------------------------------------------------
# The profile


def build_profile(output: str, entries: Sequence[Entry]) -> None:
    """Build the profile of ``entries`` in ``output`` (Guix's
    ``build-profile``): their union, ``manifest`` and ``etc/profile``.

    :raises SystemExit: on conflicting entries or a file colliding with a
        directory.
    """
    kept = check_entries(entries)
    union_build(output, [entry[3] for entry in kept], [entry[0] for entry in kept])

    manifest = os.path.join(output, "manifest")
    _replace(manifest)
    with open(manifest, "w", encoding="utf-8") as file:
        file.write(manifest_text(kept))

    _ensure_writable_directory(os.path.join(output, "etc"))
    profile = os.path.join(output, "etc", "profile")
    _replace(profile)
    with open(profile, "w", encoding="utf-8") as file:
        file.write(profile_text(output, _search_paths(kept)))
