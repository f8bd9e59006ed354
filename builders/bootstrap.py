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

XXX: libraries that glibc or an extension load with dlopen at run time
(``libgcc_s`` for thread cancellation, NSS modules) are not listed; builders
that need them must have them in their inputs.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import sysconfig

__all__ = [
    "UNBOUND_MODULES",
    "interpreter_executable",
    "interpreter_identity",
    "interpreter_paths",
]

#: Extension modules whose libraries are not bound into sandboxes.
UNBOUND_MODULES = frozenset({"_tkinter", "_curses", "_curses_panel", "readline", "nis"})


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


def interpreter_paths() -> list[str]:
    """Return the host paths to bind read-only so the interpreter runs inside.

    The list is sorted, with no entry below another, so binding the entries in
    order never hides one under the next.  The answer is computed once (one
    ``ldd`` run over the interpreter and its extension modules) and cached.
    """
    return list(_interpreter_paths())


@functools.cache
def _interpreter_paths() -> tuple[str, ...]:
    prefixes = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix)}
    paths = set(prefixes)
    paths.add(interpreter_executable())
    paths.update(_linked_libraries([interpreter_executable(), *_extension_modules()]))
    return tuple(_outermost(paths))


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
