"""Profiles: the packages of a system merged into one store item.

Guix's ``profile-derivation`` (``guix/profiles.scm``): a profile is a
file-like object whose output is

- the union of the packages' trees, with symlinks into them;
- ``manifest``, the entries of the profile in Guix's manifest format
  version 4: ``(manifest (version 4) (packages (ENTRY ...)))``, each entry
  ``(NAME VERSION OUTPUT ITEM [(search-paths (SPEC ...))])``, in the order
  the packages were given;
- ``etc/profile``, POSIX shell exporting the search paths that match files
  of the profile, such as
  ``export PATH="${GUIX_PROFILE:-/pyguix/store/…-profile}/bin${PATH:+:}$PATH"``.

The builder is :mod:`system.profile_build`, which documents the union's
handling of collisions and both file formats.

A package is any file-like object, derivation or store path (its output
``out``) or a :class:`ManifestEntry` given as it is.  Its name and version
come from its *store name*: the ``name`` of the file-like object,
derivation or store path (the base of its base, for a ``file_append``),
split as Guix's ``package-name->name+version`` does: the first hyphen
followed by a digit starts the version, so ``hello-2.12`` is ``hello``
``2.12``; a name without one has the version ``""``.  Its search paths are
its ``search_paths`` attribute (:class:`SearchPath` records), if it has one.

A package's entry is for its output ``out``; a :class:`ManifestEntry` may
name another output of a file-like object or derivation.

XXX: packages are store items without metadata, so entries never have
propagated inputs or properties.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from derivations.file_like import FileAppend
from derivations.gexp import (
    Compiler,
    Gexp,
    gexp,
    gexp_fingerprint,
    is_derivation,
    is_file_like,
    register_compiler,
    shared_record,
    with_imported_modules,
)
from derivations.lowering import gexp_to_derivation
from derivations.monad import MValue
from store.errors import PyguixError
from store.paths import StorePath, check_name

__all__ = [
    "PATH_SEARCH_PATH",
    "ManifestEntry",
    "Profile",
    "ProfileError",
    "SearchPath",
    "package_manifest_entry",
    "package_name_version",
    "packages_manifest",
    "profile",
]


class ProfileError(PyguixError):
    """Report a package or search path a profile cannot hold.

    :param thing: the package or search path at fault.
    """

    def __init__(self, thing: object, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.thing = thing


# ---------------------------------------------------------------------------
# Search paths


_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_UNSAFE = re.compile(r'["$`\\\n]')
_FILE_TYPES = ("directory", "regular")


@dataclass(frozen=True)
class SearchPath:
    """An environment variable listing files of a profile (Guix's
    ``<search-path-specification>``)."""

    variable: str
    """The variable, such as ``PATH``."""

    files: tuple[str, ...]
    """Files relative to the profile whose existence adds them, in order."""

    separator: str | None = ":"
    """Between the values; ``None``: the variable takes the first match."""

    file_type: str = "directory"
    """What the matches must be: ``directory`` or ``regular``."""

    file_pattern: str | None = None
    """A regular expression for the base names of the files searched under
    ``files`` (recursively); ``None``: ``files`` themselves."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "files", tuple(self.files))
        _check_search_path(self)

    def to_data(self) -> tuple[Any, ...]:
        """Return the plain data the builder reads, in the order of Guix's
        ``search-path-specification->sexp``."""
        return (
            self.variable,
            self.files,
            self.separator,
            self.file_type,
            self.file_pattern,
        )


def _check_search_path(spec: SearchPath) -> None:
    """Reject what ``etc/profile`` could not write safely."""
    if not _VARIABLE.fullmatch(spec.variable):
        raise ProfileError(
            spec,
            f"search path variable '{spec.variable}' is not a shell variable name",
            "use letters, digits and underscores",
        )
    texts = [*spec.files, spec.separator or ""]
    if any(_UNSAFE.search(text) for text in texts) or not spec.files:
        raise ProfileError(
            spec,
            f"search path '{spec.variable}' has no files or a quote, '$', '`', "
            "backslash or newline in its files or separator",
            "list plain relative file names such as 'bin'",
        )
    if spec.file_type not in _FILE_TYPES:
        raise ProfileError(
            spec,
            f"search path '{spec.variable}' has file type '{spec.file_type}'",
            "use 'directory' or 'regular'",
        )


PATH_SEARCH_PATH = SearchPath("PATH", ("bin", "sbin"))
"""``PATH``, which every profile searches (Guix's ``$PATH``)."""


# ---------------------------------------------------------------------------
# Manifest entries


@dataclass(frozen=True)
class ManifestEntry:
    """A package of a profile (Guix's ``<manifest-entry>``)."""

    name: str
    version: str
    item: Any
    """The file-like object, derivation or store path of the package."""

    output: str = "out"
    search_paths: tuple[SearchPath, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "search_paths", tuple(self.search_paths))


def package_name_version(name: str) -> tuple[str, str]:
    """Return the name and version of the store name ``name`` (Guix's
    ``package-name->name+version``): the version starts after the first
    hyphen followed by a digit; without one, it is ``""``.

    >>> package_name_version("hello-2.12")
    ('hello', '2.12')
    >>> package_name_version("example-tools")
    ('example-tools', '')
    """
    match = re.search(r"-[0-9]", name)
    if match is None:
        return name, ""
    return name[: match.start()], name[match.start() + 1 :]


_HASH_PART = re.compile(r"[0-9a-df-np-sv-z]{32}-")


def _store_name(thing: Any) -> str:
    """Return the store name of the package ``thing``."""
    if isinstance(thing, FileAppend):
        return _store_name(thing.base)
    if isinstance(thing, str):
        base = thing.rstrip("/").rsplit("/", 1)[-1]
        if _HASH_PART.match(base):
            return base[33:]
    elif isinstance(thing, StorePath) or is_derivation(thing) or is_file_like(thing):
        name = getattr(thing, "name", None)
        if isinstance(name, str):
            return name
    raise ProfileError(
        thing,
        f"package {thing!r} has no store name",
        "give file-like objects, derivations or store paths as packages",
    )


def package_manifest_entry(thing: Any) -> ManifestEntry:
    """Return the manifest entry of the package ``thing`` (Guix's
    ``package->manifest-entry``), named as the module docstring says.

    :raises ProfileError: when ``thing`` is not a package.
    """
    if isinstance(thing, ManifestEntry):
        return thing
    name, version = package_name_version(_store_name(thing))
    search_paths = tuple(getattr(thing, "search_paths", ()))
    for spec in search_paths:
        if not isinstance(spec, SearchPath):
            raise ProfileError(
                thing,
                f"package '{name}' has a search path {spec!r} that is not a SearchPath",
            )
    return ManifestEntry(name, version, thing, "out", search_paths)


def packages_manifest(things: Iterable[Any]) -> tuple[ManifestEntry, ...]:
    """Return the entries of ``things`` in order, each once (Guix's
    ``packages->manifest``)."""
    entries: dict[ManifestEntry, None] = {}
    for thing in things:
        entries.setdefault(package_manifest_entry(thing), None)
    return tuple(entries)


# ---------------------------------------------------------------------------
# Profiles


@shared_record
@dataclass(frozen=True)
class Profile:
    """A profile of manifest entries (Guix's ``<profile>``)."""

    name: str
    entries: tuple[ManifestEntry, ...]


def profile(name: str, packages: Iterable[Any]) -> Profile:
    """Return the profile named ``name`` of ``packages``.

    :raises ProfileError: on a package that is not one.
    """
    check_name(name)
    return Profile(name, packages_manifest(packages))


_PROFILE_BUILDER = """
from system import profile_build

profile_build.build_profile($out, [
ENTRIES])
"""


def _profile_gexp(obj: Profile) -> Gexp:
    """Return the builder of ``obj``: each entry's item is a reference of
    its own, so that it can name the item's output."""
    lines: list[str] = []
    references: dict[str, Any] = {}
    for index, entry in enumerate(obj.entries):
        hole = (
            f"item{index}" if entry.output == "out" else f"item{index}:{entry.output}"
        )
        lines.append(f"    (*$meta{index}, ${{{hole}}}, $paths{index}),\n")
        references[f"meta{index}"] = (entry.name, entry.version, entry.output)
        references[f"item{index}"] = entry.item
        references[f"paths{index}"] = [spec.to_data() for spec in entry.search_paths]
    template = _PROFILE_BUILDER.replace("ENTRIES", "".join(lines))
    code = gexp(template, **references)
    return with_imported_modules(["system.profile_build"], code)


def _lower_profile(obj: Profile, system: str) -> MValue[Any]:
    return gexp_to_derivation(
        obj.name, _profile_gexp(obj), system=system, local_build=True
    )


def _profile_fingerprint(obj: Profile, fingerprint_of: Callable[[Any], Any]) -> Any:
    return [obj.name, gexp_fingerprint(_profile_gexp(obj), fingerprint_of)]


register_compiler(Profile, Compiler(_lower_profile, fingerprint=_profile_fingerprint))
