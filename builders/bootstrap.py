"""The bootstrap interpreter: what of the host a sandbox needs to run Python.

Builders are Python programs run by the host's own interpreter, bind-mounted
read-only into every sandbox and container.  It is the one impure input of
a build, named by :func:`interpreter_identity` inside each derivation.

:func:`interpreter_paths` lists what must be bound for ``sys.executable`` to
start inside an otherwise empty root: the interpreter's prefix (standard
library, ``libpython``, extension modules), the dynamic loader, and the
shared libraries the interpreter and its extension modules link against, as
``ldd`` resolves them on the host.  Each is bound at its own path.

Extension modules a build has no use for are left out with their libraries
(:data:`UNBOUND_MODULES`: the GUI toolkit, terminal line editing and
screen handling, NIS lookups): they would bind some thirty more libraries,
one mount each, into every sandbox, for modules that need a display, a
terminal or a network a build never has.  Importing one inside a sandbox
fails with ``ImportError``.

Finding them takes an ``ldd`` run over some seventy files, about 0.4 s,
so the answer is kept in a file (:data:`CACHE_FILE`, in a store's state
directory) with the signature (``lstat`` data) of every file it was
computed from: the interpreter, its extension modules and their directory,
the libraries found and the loader's cache ``/etc/ld.so.cache``
(:func:`user_cache_file` for programs run outside a store's commands).  A file
that changed, appeared or vanished, or another interpreter, makes it stale.

XXX: libraries that glibc or an extension load with dlopen at run time
(``libgcc_s`` for thread cancellation, NSS modules) are not listed; builders
that need them must have them in their inputs.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import sysconfig
import tempfile

__all__ = [
    "CACHE_FILE",
    "UNBOUND_MODULES",
    "interpreter_executable",
    "interpreter_identity",
    "interpreter_paths",
    "user_cache_file",
]

#: Extension modules whose libraries are not bound into sandboxes.
UNBOUND_MODULES = frozenset({"_tkinter", "_curses", "_curses_panel", "readline", "nis"})

CACHE_FILE = ("cache", "interpreter-paths.json")
"""The cache of :func:`interpreter_paths`, relative to a state directory."""

_LOADER_CACHE = "/etc/ld.so.cache"

_found: tuple[str, ...] | None = None
"""The answer of :func:`interpreter_paths`, once known in this process."""


def interpreter_executable() -> str:
    """Return the real path of the running interpreter, symlinks resolved."""
    return os.path.realpath(sys.executable)


def interpreter_identity() -> str:
    """Return a string naming the bootstrap interpreter: path and version.

    Example: ``"/usr/bin/python3.11 cpython-3.11.7"``.  It changes when the
    interpreter is replaced by another version or moved.
    """
    version = ".".join(map(str, sys.version_info[:3]))
    return f"{interpreter_executable()} {sys.implementation.name}-{version}"


def interpreter_paths(cache_file: str | None = None) -> list[str]:
    """Return the host paths to bind read-only so the interpreter runs inside.

    The list is sorted, with no entry below another, so binding the entries in
    order never hides one under the next.  The answer is computed once a
    process, or read from ``cache_file`` while it is still true there, and
    then written to it.
    """
    global _found
    if _found is None:
        _found = _read_cache(cache_file) if cache_file else None
    if _found is None:
        _found, inputs = _compute_paths()
        if cache_file:
            _write_cache(cache_file, _found, inputs)
    return list(_found)


def user_cache_file() -> str | None:
    """Return the cache file of :func:`interpreter_paths` for programs run
    outside a store's commands (a ``run-container`` script): under
    ``$XDG_CACHE_HOME``, or ``~/.cache``; ``None`` without a home."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    if not os.path.isabs(base):
        return None
    return os.path.join(base, "pyguix", CACHE_FILE[-1])


def _compute_paths() -> tuple[tuple[str, ...], list[str]]:
    """Return the paths to bind and the files they were found from."""
    prefixes = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix)}
    modules = _extension_modules()
    libraries = _linked_libraries([interpreter_executable(), *modules])
    paths = {*prefixes, interpreter_executable(), *libraries}
    directory = sysconfig.get_config_var("DESTSHARED") or ""
    inputs = [interpreter_executable(), directory, _LOADER_CACHE, *modules]
    return tuple(_outermost(paths)), sorted({*inputs, *libraries})


def _signature(path: str) -> list[int] | None:
    """Return what tells that ``path`` changed, or ``None`` if it is absent."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return [info.st_mtime_ns, info.st_size, info.st_ino, info.st_mode]


def _read_cache(cache_file: str) -> tuple[str, ...] | None:
    """Return the paths recorded in ``cache_file`` if every file they were
    found from is as it was, for this interpreter; otherwise ``None``."""
    try:
        with open(cache_file, encoding="utf-8") as handle:
            record = json.load(handle)
        if record["identity"] != interpreter_identity():
            return None
        for path, signature in record["inputs"].items():
            if _signature(path) != signature:
                return None
        return tuple(str(path) for path in record["paths"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _write_cache(cache_file: str, paths: tuple[str, ...], inputs: list[str]) -> None:
    """Record ``paths`` and the signatures of ``inputs`` in ``cache_file``,
    atomically; a cache that cannot be written is no error."""
    record = {
        "identity": interpreter_identity(),
        "paths": list(paths),
        "inputs": {path: _signature(path) for path in inputs},
    }
    directory = os.path.dirname(cache_file)
    with contextlib.suppress(OSError):
        os.makedirs(directory, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                json.dump(record, stream, sort_keys=True)
            os.rename(temporary, cache_file)
        except BaseException:
            os.unlink(temporary)
            raise


def _extension_modules() -> list[str]:
    directory = sysconfig.get_config_var("DESTSHARED") or ""
    if not os.path.isdir(directory):
        return []
    return sorted(
        os.path.join(directory, name)
        for name in os.listdir(directory)
        if name.endswith(".so") and name.split(".", 1)[0] not in UNBOUND_MODULES
    )


def _linked_libraries(files: list[str]) -> set[str]:
    """Return the libraries ``ldd`` resolves for ``files``, loader included."""
    result = subprocess.run(
        ["ldd", *files],
        capture_output=True,
        text=True,
        check=False,
        env={"LC_ALL": "C", "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )
    libraries: set[str] = set()
    for line in result.stdout.splitlines():
        library = _library_of(line.strip())
        if library is not None:
            libraries.add(library)
    return libraries


def _library_of(line: str) -> str | None:
    """Return the path in one ``ldd`` line, or ``None``.

    Lines look like ``libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)``
    or ``/lib64/ld-linux-x86-64.so.2 (0x...)``; ``linux-vdso.so.1`` has no
    file, and ``not found`` lines are skipped.
    """
    candidate = line.split("=>", 1)[1].strip() if "=>" in line else line
    path = candidate.split(" (", 1)[0].strip()
    if path.startswith("/") and os.path.exists(path):
        return path
    return None


def _outermost(paths: set[str]) -> list[str]:
    kept: list[str] = []
    for path in sorted(paths):
        if not any(path.startswith(parent.rstrip("/") + "/") for parent in kept):
            kept.append(path)
    return kept
