"""Find the project modules a builder needs, and lay them out as a tree.

Guix's ``source-module-closure`` (``guix/modules.scm``) reads the
``define-module`` forms of the named modules and follows their imports,
keeping only Guix's own modules; ``imported-modules`` then copies them into
a "module-import" store item put on the builder's load path.  Here the
imports are found by parsing the modules with :mod:`ast` (every ``import``
and ``from ... import`` anywhere in the file, relative ones resolved), and
only this project's packages are kept: :data:`PROJECT_PACKAGES`.  A module
also needs its parent packages, whose ``__init__.py`` runs on import, so
those are part of the closure too.

The standard library and third-party modules are never copied: builders
run the bootstrap interpreter (see ``derivations.lowering``), whose
standard library they use as is.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from store.errors import PyguixError

__all__ = [
    "PROJECT_PACKAGES",
    "PROJECT_ROOT",
    "ModuleError",
    "module_file",
    "module_files",
    "module_tree_digest",
    "source_module_closure",
    "write_module_tree",
]

PROJECT_PACKAGES = ("store", "derivations", "builders", "system", "pyguix")
"""The top-level packages of this project, the only ones copied."""

PROJECT_ROOT = Path(__file__).resolve().parent.parent
"""The directory holding the project's packages."""


class ModuleError(PyguixError):
    """Report a module name that is not one of the project's modules.

    :param module: the module name as given.
    """

    def __init__(self, module: str, reason: str) -> None:
        super().__init__(
            f"cannot import module '{module}' into a builder: {reason}",
            f"name a module of the packages {', '.join(PROJECT_PACKAGES)}",
        )
        self.module = module


def is_project_module(module: str) -> bool:
    """Tell whether ``module`` belongs to one of :data:`PROJECT_PACKAGES`."""
    return module.split(".")[0] in PROJECT_PACKAGES


def module_file(module: str, root: Path = PROJECT_ROOT) -> Path | None:
    """Return the source file of ``module`` under ``root``, or ``None``."""
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _is_package(module: str, root: Path) -> bool:
    """Tell whether ``module`` is a package (a directory) under ``root``."""
    return root.joinpath(*module.split(".")).is_dir()


def _imports(module: str, root: Path) -> set[str]:
    """Return the modules ``module``'s source imports, absolute names."""
    path = module_file(module, root)
    assert path is not None, module
    tree = ast.parse(path.read_bytes(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.update(_from_import(node, package, root))
    return found


def _from_import(node: ast.ImportFrom, package: str, root: Path) -> set[str]:
    """Return the modules named by one ``from X import a, b`` statement."""
    base = node.module or ""
    if node.level:
        anchor = package.split(".")
        anchor = anchor[: len(anchor) - (node.level - 1)] if node.level > 1 else anchor
        base = ".".join(part for part in (*anchor, base) if part)
    found = {base} if base else set()
    for alias in node.names:
        candidate = f"{base}.{alias.name}" if base else alias.name
        if alias.name != "*" and module_file(candidate, root) is not None:
            found.add(candidate)
    return found


def _with_parents(module: str, root: Path) -> list[str]:
    """Return ``module`` and its parent packages that have an ``__init__``."""
    parts = module.split(".")
    names = [".".join(parts[:count]) for count in range(1, len(parts))]
    parents = [
        name
        for name in names
        if (root.joinpath(*name.split(".")) / "__init__.py").is_file()
    ]
    return [*parents, module]


def source_module_closure(
    modules: Iterable[str], root: Path = PROJECT_ROOT
) -> tuple[str, ...]:
    """Return the sorted names of ``modules``, their parent packages and,
    recursively, the project modules they import (Guix's
    ``source-module-closure``).

    :raises ModuleError: when a module given is not a project module or has
        no source file under ``root``.
    """
    return _closure(tuple(sorted(set(modules))), root)


@functools.lru_cache(maxsize=256)
def _closure(modules: tuple[str, ...], root: Path) -> tuple[str, ...]:
    """Compute :func:`source_module_closure` (memoised per process)."""
    for module in modules:
        _check_module(module, root)
    seen: set[str] = set()
    pending = [parent for module in modules for parent in _with_parents(module, root)]
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        seen.add(module)
        for imported in _imports(module, root):
            if is_project_module(imported) and module_file(imported, root) is not None:
                pending.extend(_with_parents(imported, root))
    return tuple(sorted(seen))


def _check_module(module: str, root: Path) -> None:
    """Reject a module that is not one of the project's source modules."""
    if not is_project_module(module):
        raise ModuleError(module, "it is not part of this project")
    if module_file(module, root) is None:
        raise ModuleError(module, f"it has no source file under '{root}'")


def module_files(
    modules: Iterable[str], root: Path = PROJECT_ROOT
) -> list[tuple[str, Path]]:
    """Return ``(relative target, source file)`` for each module, sorted."""
    files = []
    for module in modules:
        path = module_file(module, root)
        assert path is not None, module
        files.append((path.relative_to(root).as_posix(), path))
    return sorted(files)


def module_tree_digest(modules: Iterable[str], root: Path = PROJECT_ROOT) -> str:
    """Return a sha256 (hex) of the module tree's file names and contents,
    which changes whenever a module that would be copied changes.

    Memoised on the files' sizes and modification times.
    """
    files = module_files(modules, root)
    stamps = tuple(
        (target, path.stat().st_mtime_ns, path.stat().st_size) for target, path in files
    )
    return _tree_digest(tuple(files), stamps)


@functools.lru_cache(maxsize=256)
def _tree_digest(
    files: tuple[tuple[str, Path], ...], stamps: tuple[object, ...]
) -> str:
    """Compute :func:`module_tree_digest` for ``files``."""
    digest = hashlib.sha256()
    for target, path in files:
        content = path.read_bytes()
        digest.update(f"{target}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()


def write_module_tree(
    modules: Iterable[str], directory: str, root: Path = PROJECT_ROOT
) -> None:
    """Copy the source files of ``modules`` under ``directory``, at their
    package paths, read-only and not executable, so the tree's NAR depends
    only on the modules' contents."""
    for target, path in module_files(modules, root):
        destination = os.path.join(directory, target)
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        with open(destination, "wb") as out:
            out.write(path.read_bytes())
        os.chmod(destination, 0o444)
