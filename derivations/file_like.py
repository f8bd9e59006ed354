"""File-like objects: things a gexp can refer to that lower to store items.

Guix's file-like objects (``guix/gexp.scm``), with their names and
meanings:

``plain_file(name, content)``
    a file with ``content`` (text or bytes), added as text: no references.
``local_file(file, name=None, recursive=False, select=None)``
    a file of the host, resolved against the directory of the Python file
    that calls ``local_file``.  Flat by default: the file's bytes are added
    with a fixed-output flat sha256 path and the executable bit is lost;
    ``recursive=True`` adds the tree as ``nix-store --add`` does.
    ``select(path, stat)`` keeps only the entries it accepts.
``computed_file(name, gexp, local_build=True, options=None)``
    the output of a derivation whose builder is ``gexp``.
``program_file(name, gexp, modules=())``
    an executable script running ``gexp`` (see ``gexp_to_script``).
``mixed_text_file(name, *parts)``
    text made of strings and the paths of file-like objects, which stay
    references of the result.
``file_append(obj, *suffixes)``
    the path of ``obj`` followed by ``suffixes``, such as ``"/bin/sh"``.
``file_union(name, [(target, obj), ...])``
    a directory of symlinks ``target -> obj``.
``directory_union(name, things)``
    a directory merging the trees of ``things`` with symlinks (Guix's
    ``union-build``); one thing is returned as it is.
``text_file(name, text)``
    the same as ``plain_file``.

Objects are frozen dataclasses compared by value, so lowering memoises
them by value; each type registers a compiler (lowering, expansion and
fingerprint, see :func:`derivations.gexp.register_compiler`).
"""

from __future__ import annotations

import hashlib
import inspect
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

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
from derivations.lowering import expand_lowered, gexp_to_derivation, gexp_to_script
from derivations.lowering_cache import note_dependency
from derivations.monad import MValue, mreturn
from derivations.monad import text_file as monadic_text_file
from store.errors import PyguixError
from store.hash import Hash
from store.nar.writer import hash_path
from store.paths import StorePath, check_name

__all__ = [
    "ComputedFile",
    "DirectoryUnion",
    "FileAppend",
    "FileLikeError",
    "FileUnion",
    "LocalFile",
    "MixedTextFile",
    "PlainFile",
    "ProgramFile",
    "computed_file",
    "directory_union",
    "file_append",
    "file_union",
    "local_file",
    "mixed_text_file",
    "plain_file",
    "program_file",
    "text_file",
]

Select = Callable[[str, os.stat_result], bool]


class FileLikeError(PyguixError):
    """Report a file-like object that cannot be made.

    :param name: the file or target at fault.
    """

    def __init__(self, name: str, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.name = name


def _is_lowerable(thing: object) -> bool:
    """Tell whether ``thing`` is file-like, a derivation or a store path."""
    return is_file_like(thing) or is_derivation(thing) or isinstance(thing, StorePath)


def _check_name(name: str) -> None:
    """Reject a name that cannot name a store item, early."""
    check_name(name)


# ---------------------------------------------------------------------------
# plain-file


@dataclass(frozen=True)
class PlainFile:
    """A file holding ``content`` (Guix's ``plain-file``)."""

    name: str
    content: str | bytes

    def data(self) -> bytes:
        """Return the content as bytes (UTF-8 for text)."""
        return self.content.encode() if isinstance(self.content, str) else self.content


def plain_file(name: str, content: str | bytes) -> PlainFile:
    """Return a file named ``name`` with ``content``.

    :raises FileLikeError: when ``content`` is neither text nor bytes.
    """
    _check_name(name)
    if not isinstance(content, str | bytes):
        raise FileLikeError(
            name,
            f"the content of plain file '{name}' is of type "
            f"{type(content).__name__}, not text or bytes",
            "give a str or bytes (str(...) turns a value into text)",
        )
    return PlainFile(name, content)


text_file = plain_file


def _lower_plain(obj: PlainFile, system: str) -> MValue[Any]:
    return monadic_text_file(obj.name, obj.data())


register_compiler(
    PlainFile,
    Compiler(_lower_plain, fingerprint=lambda obj, _: [obj.name, obj.data()]),
)


# ---------------------------------------------------------------------------
# local-file


@dataclass(frozen=True)
class LocalFile:
    """A file or tree of the host (Guix's ``local-file``)."""

    file: str
    """Its absolute path."""

    name: str
    """The store item's name."""

    recursive: bool = False
    """Add the tree as a NAR (``source`` path), not the file's bytes."""

    select: Select | None = None
    """Keep only the entries ``select(path, stat)`` accepts."""


def local_file(
    file: str | os.PathLike[str],
    name: str | None = None,
    *,
    recursive: bool = False,
    select: Select | None = None,
) -> LocalFile:
    """Return the host file ``file`` as a file-like object.

    A relative ``file`` is resolved against the directory of the Python
    file that calls ``local_file`` (the current directory when there is
    none, as in an interactive session).

    :raises FileLikeError: when ``file`` does not exist, or is a directory
        and ``recursive`` is false.
    """
    caller = inspect.currentframe()
    caller = caller.f_back if caller is not None else None
    source = caller.f_globals.get("__file__") if caller is not None else None
    base = os.path.dirname(os.path.abspath(source)) if source else os.getcwd()
    path = os.path.normpath(os.path.join(base, os.fspath(file)))
    _check_local(path, recursive)
    note_dependency(path)
    name = name or os.path.basename(path)
    _check_name(name)
    return LocalFile(path, name, recursive, select)


def _check_local(path: str, recursive: bool) -> None:
    """Reject a missing file, or a directory added flat."""
    if not os.path.lexists(path):
        raise FileLikeError(
            path, f"local file '{path}' does not exist", "check the file name"
        )
    if not recursive and not os.path.isfile(path):
        raise FileLikeError(
            path,
            f"local file '{path}' is not a regular file",
            "pass recursive=True to add a directory or symlink",
        )


@contextmanager
def _selected(obj: LocalFile) -> Iterator[str]:
    """Yield a path holding ``obj``'s content: the file itself, or a
    temporary copy of the entries ``select`` keeps."""
    if obj.select is None:
        yield obj.file
        return
    with tempfile.TemporaryDirectory(prefix="pyguix-select-") as temp:
        copy = os.path.join(temp, "selected")
        _copy_selected(obj.file, copy, obj.select)
        yield copy


def _copy_selected(source: str, target: str, select: Select) -> None:
    """Copy ``source`` to ``target``, skipping entries ``select`` rejects."""
    info = os.lstat(source)
    if stat.S_ISDIR(info.st_mode):
        os.mkdir(target)
        for entry in sorted(os.listdir(source)):
            path = os.path.join(source, entry)
            if select(path, os.lstat(path)):
                _copy_selected(path, os.path.join(target, entry), select)
    elif stat.S_ISLNK(info.st_mode):
        os.symlink(os.readlink(source), target)
    else:
        shutil.copy2(source, target)


def _content_hash(obj: LocalFile) -> str:
    """Return the sha256 of ``obj``'s bytes (flat) or NAR (recursive)."""
    note_dependency(obj.file)
    with _selected(obj) as path:
        if obj.recursive:
            nar_hash, _ = hash_path(path)
            return nar_hash.to_base16()
        digest = hashlib.sha256()
        with open(path, "rb") as file:
            for chunk in iter(lambda: file.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()


def _lower_local(obj: LocalFile, system: str) -> MValue[Any]:
    def add(state: Any) -> StorePath:
        _check_local(obj.file, obj.recursive)
        note_dependency(obj.file)
        with _selected(obj) as path:
            if obj.recursive:
                added: StorePath = state.store.add_path(path, name=obj.name)
                return added
            return _add_flat(state.store, path, obj.name)

    return MValue(add, "local-file")


def _add_flat(store: Any, path: str, name: str) -> StorePath:
    """Add the bytes of ``path`` flat, dropping its executable bit (Guix's
    ``local-file`` semantics; the store keeps the bit, as ``nix-store
    --add-fixed`` does)."""
    expected: StorePath = store.add_path(path, name=name, recursive=False, dry_run=True)
    if store.is_valid(expected):
        return expected
    with tempfile.TemporaryDirectory(prefix="pyguix-flat-") as temp:
        copy = os.path.join(temp, "file")
        shutil.copyfile(path, copy)
        os.chmod(copy, 0o444)
        added: StorePath = store.add_path(copy, name=name, recursive=False)
    assert added == expected, (added, expected)
    return added


register_compiler(
    LocalFile,
    Compiler(
        _lower_local,
        fingerprint=lambda obj, _: [obj.name, obj.recursive, _content_hash(obj)],
    ),
)


# ---------------------------------------------------------------------------
# computed-file and program-file


Options = tuple[tuple[str, Any], ...]

_MAPPING_OPTIONS = ("env_vars", "properties")


def _freeze_option(value: Any) -> Any:
    """Return ``value`` made hashable (lists and mappings as tuples)."""
    if isinstance(value, Mapping):
        return tuple(sorted((key, _freeze_option(item)) for key, item in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_freeze_option(item) for item in value)
    return value


def _thaw_options(options: Options) -> dict[str, Any]:
    """Return frozen options as keyword arguments."""
    thawed = dict(options)
    for key in _MAPPING_OPTIONS:
        if key in thawed and thawed[key] is not None:
            thawed[key] = dict(thawed[key])
    return thawed


def _option_fingerprint(value: Any, fingerprint_of: Callable[[Any], Any]) -> Any:
    """Return plain data for a frozen option value."""
    if isinstance(value, tuple):
        return [_option_fingerprint(item, fingerprint_of) for item in value]
    if isinstance(value, Hash):
        return value.to_string()
    if value is None or isinstance(value, str | bytes | int | float | bool):
        return value
    return fingerprint_of(value)


@shared_record
@dataclass(frozen=True)
class ComputedFile:
    """The output of a derivation built by ``gexp`` (Guix's ``computed-file``)."""

    name: str
    gexp: Gexp
    local_build: bool = True
    options: Options = ()
    """Further keyword arguments of ``gexp_to_derivation``, frozen."""


def computed_file(
    name: str,
    g: Gexp,
    *,
    local_build: bool = True,
    options: Mapping[str, Any] | None = None,
) -> ComputedFile:
    """Return the output ``out`` of a derivation named ``name`` running
    ``g``; ``options`` are further ``gexp_to_derivation`` keywords (the
    ``modules`` option tags ``g``)."""
    _check_name(name)
    settings = dict(options or {})
    modules = settings.pop("modules", ())
    if modules:
        g = with_imported_modules(modules, g)
    frozen = tuple(
        sorted((key, _freeze_option(value)) for key, value in settings.items())
    )
    return ComputedFile(name, g, local_build, frozen)


def _lower_computed(obj: ComputedFile, system: str) -> MValue[Any]:
    return gexp_to_derivation(
        obj.name,
        obj.gexp,
        system=system,
        local_build=obj.local_build,
        **_thaw_options(obj.options),
    )


def _computed_fingerprint(
    obj: ComputedFile, fingerprint_of: Callable[[Any], Any]
) -> Any:
    options = [
        [key, _option_fingerprint(value, fingerprint_of)] for key, value in obj.options
    ]
    return [
        obj.name,
        gexp_fingerprint(obj.gexp, fingerprint_of),
        obj.local_build,
        options,
    ]


register_compiler(
    ComputedFile, Compiler(_lower_computed, fingerprint=_computed_fingerprint)
)


@shared_record
@dataclass(frozen=True)
class ProgramFile:
    """An executable script running ``gexp`` (Guix's ``program-file``)."""

    name: str
    gexp: Gexp


def program_file(name: str, g: Gexp, *, modules: Iterable[str] = ()) -> ProgramFile:
    """Return a script named ``name`` running ``g`` with ``modules`` (and
    those ``g`` was tagged with) on its ``sys.path``."""
    _check_name(name)
    return ProgramFile(name, with_imported_modules(modules, g))


register_compiler(
    ProgramFile,
    Compiler(
        lambda obj, system: gexp_to_script(obj.name, obj.gexp, system=system),
        fingerprint=lambda obj, of: [obj.name, gexp_fingerprint(obj.gexp, of)],
    ),
)


# ---------------------------------------------------------------------------
# mixed-text-file and file-append


_MIXED_TEXT_BUILDER = """
with open($out, "w", encoding="utf-8") as file:
    file.write("".join($parts))
"""


@shared_record
@dataclass(frozen=True)
class MixedTextFile:
    """Text made of strings and file-like objects' paths (Guix's
    ``mixed-text-file``)."""

    name: str
    parts: tuple[Any, ...]


def mixed_text_file(name: str, *parts: Any) -> MixedTextFile:
    """Return a file named ``name`` holding ``parts`` concatenated, each
    file-like one replaced by its store path (and kept as a reference).

    :raises FileLikeError: on a part that is neither text nor file-like.
    """
    _check_name(name)
    for part in parts:
        if not (isinstance(part, str) or _is_lowerable(part)):
            raise FileLikeError(
                name,
                f"mixed text file '{name}' has a part {part!r} that is neither text nor file-like",
            )
    return MixedTextFile(name, tuple(parts))


def _mixed_gexp(obj: MixedTextFile) -> Gexp:
    return gexp(_MIXED_TEXT_BUILDER, parts=list(obj.parts))


register_compiler(
    MixedTextFile,
    Compiler(
        lambda obj, system: gexp_to_derivation(
            obj.name, _mixed_gexp(obj), system=system, local_build=True
        ),
        fingerprint=lambda obj, of: [obj.name, gexp_fingerprint(_mixed_gexp(obj), of)],
    ),
)


@shared_record
@dataclass(frozen=True)
class FileAppend:
    """The path of ``base`` followed by ``suffixes`` (Guix's ``file-append``)."""

    base: Any
    suffixes: tuple[str, ...]


def file_append(obj: Any, *suffixes: str) -> FileAppend:
    """Return the path of ``obj`` with ``suffixes`` appended, such as
    ``file_append(bash, "/bin/bash")``."""
    if not _is_lowerable(obj):
        raise FileLikeError(
            repr(obj), f"file_append needs a file-like object, not {obj!r}"
        )
    return FileAppend(obj, tuple(suffixes))


def _expand_append(obj: FileAppend, lowered: Any, output: str) -> str:
    """Return the path text of ``obj``: that of the object it appends to,
    found below any nested appends without recursion, then the suffixes,
    innermost first.  ``lowered`` is what that object lowered to."""
    suffixes = [obj.suffixes]
    base = obj.base
    while isinstance(base, FileAppend):
        suffixes.append(base.suffixes)
        base = base.base
    text = expand_lowered(base, lowered, output)
    return text + "".join("".join(group) for group in reversed(suffixes))


register_compiler(
    FileAppend,
    Compiler(
        lambda obj, system: mreturn(obj.base),
        expand=_expand_append,
        fingerprint=lambda obj, of: [of(obj.base), list(obj.suffixes)],
    ),
)


# ---------------------------------------------------------------------------
# file-union and directory-union


_FILE_UNION_BUILDER = """
os.mkdir($out)
for target, source in $entries:
    if not os.path.exists(source):
        raise SystemExit(f"file union: '{source}' for '{target}' does not exist")
    path = os.path.join($out, target)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.symlink(source, path)
"""


@shared_record
@dataclass(frozen=True)
class FileUnion:
    """A directory of symlinks to file-like objects (Guix's ``file-union``)."""

    name: str
    entries: tuple[tuple[str, Any], ...]


def file_union(name: str, entries: Iterable[tuple[str, Any]]) -> FileUnion:
    """Return a directory named ``name`` where each relative ``target`` is a
    symlink to the file-like object paired with it.

    :raises FileLikeError: on a duplicate, absolute or ``..`` target, or a
        source that is not file-like.
    """
    _check_name(name)
    pairs = tuple((target, source) for target, source in entries)
    seen: set[str] = set()
    for target, source in pairs:
        _check_target(name, target, seen)
        if not _is_lowerable(source):
            raise FileLikeError(
                target, f"file union '{name}': '{target}' is not file-like: {source!r}"
            )
    return FileUnion(name, pairs)


def _check_target(name: str, target: str, seen: set[str]) -> None:
    """Reject a target that is duplicate or leaves the union."""
    normal = os.path.normpath(target)
    if os.path.isabs(target) or normal == "." or normal.split(os.sep)[0] == "..":
        raise FileLikeError(
            target,
            f"file union '{name}': target '{target}' is not a relative path inside it",
        )
    if normal in seen:
        raise FileLikeError(
            target,
            f"file union '{name}': target '{target}' appears twice",
            "give each target once",
        )
    seen.add(normal)


def _union_gexp(obj: FileUnion) -> Gexp:
    return gexp(
        _FILE_UNION_BUILDER,
        entries=[(target, source) for target, source in obj.entries],
    )


register_compiler(
    FileUnion,
    Compiler(
        lambda obj, system: gexp_to_derivation(
            obj.name, _union_gexp(obj), system=system, local_build=True
        ),
        fingerprint=lambda obj, of: [obj.name, gexp_fingerprint(_union_gexp(obj), of)],
    ),
)


_DIRECTORY_UNION_BUILDER = """
def union(target, sources):
    # Link what only one source has; merge directories several sources have.
    os.mkdir(target)
    found = {}
    for source in sources:
        for entry in sorted(os.listdir(source)):
            found.setdefault(entry, []).append(os.path.join(source, entry))
    for entry in sorted(found):
        paths = found[entry]
        directories = [path for path in paths if os.path.isdir(path)]
        if len(paths) > 1 and len(directories) == len(paths):
            union(os.path.join(target, entry), directories)
            continue
        if len(paths) > 1:
            print(f"warning: collision on '{entry}', keeping '{paths[0]}'")
        os.symlink(paths[0], os.path.join(target, entry))


union($out, $things)
"""


@shared_record
@dataclass(frozen=True)
class DirectoryUnion:
    """A directory merging trees (Guix's ``directory-union``)."""

    name: str
    things: tuple[Any, ...]


def directory_union(name: str, things: Iterable[Any]) -> Any:
    """Return a directory named ``name`` merging the trees of ``things``
    with symlinks; a single thing is returned as it is."""
    items = tuple(things)
    if len(items) == 1:
        return items[0]
    _check_name(name)
    for thing in items:
        if not _is_lowerable(thing):
            raise FileLikeError(
                name, f"directory union '{name}': {thing!r} is not file-like"
            )
    return DirectoryUnion(name, items)


def _directory_gexp(obj: DirectoryUnion) -> Gexp:
    return gexp(_DIRECTORY_UNION_BUILDER, things=list(obj.things))


register_compiler(
    DirectoryUnion,
    Compiler(
        lambda obj, system: gexp_to_derivation(
            obj.name, _directory_gexp(obj), system=system, local_build=True
        ),
        fingerprint=lambda obj, of: [
            obj.name,
            gexp_fingerprint(_directory_gexp(obj), of),
        ],
    ),
)
