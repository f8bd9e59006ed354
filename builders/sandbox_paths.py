"""Host paths bound into every build's sandbox: Nix's ``sandbox-paths``.

A build sees only its input closure and the bootstrap interpreter.  Nix's
``sandbox-paths`` (and ``extra-sandbox-paths``) setting adds host paths,
read-only, to every sandbox: most often ``/bin/sh`` for builders that are
shell one-liners, or a device such as ``/dev/kvm``.  pyguix takes the same
entries from ``pyguix build --sandbox-path``:

``PATH``
    the host's ``PATH`` at the same place inside;
``TARGET=SOURCE``
    the host's ``SOURCE`` at ``TARGET`` inside;
either, ending in ``?``
    optional: skipped when the source does not exist, where a missing
    required source fails the build.

What these paths hold is outside the store, so a build that reads them
is no longer a function of its inputs alone: the user who adds them takes
that on, as with Nix.  Targets that would hide what the sandbox itself
provides (``/``, the store, ``/tmp``, ``/proc``, ``/dev``) are refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from builders.container import BindMount
from store.errors import PyguixError
from store.paths import is_within

__all__ = ["SandboxPath", "SandboxPathError", "sandbox_path_mounts"]

_RESERVED = ("/", "/tmp", "/proc", "/dev")
"""Targets the sandbox sets up itself."""


class SandboxPathError(PyguixError):
    """Report a ``--sandbox-path`` entry that cannot be used."""


@dataclass(frozen=True)
class SandboxPath:
    """One host path bound read-only into build sandboxes."""

    target: str
    """Where the path appears inside the sandbox."""
    source: str
    """The path on the host."""
    optional: bool = False
    """Skip the entry when ``source`` does not exist."""

    @classmethod
    def from_spec(cls, spec: str, store_dir: str) -> SandboxPath:
        """Parse ``TARGET[=SOURCE][?]``, as an entry of Nix's ``sandbox-paths``.

        :raises SandboxPathError: on a relative or reserved path, or a
            required source that does not exist.
        """
        optional = spec.endswith("?")
        entry = spec[:-1] if optional else spec
        target, _, source = entry.partition("=")
        path = cls(_normal(target, spec), _normal(source or target, spec), optional)
        path.check(store_dir)
        return path

    def check(self, store_dir: str) -> None:
        """Refuse a target that would hide the sandbox's own files, or a
        required source that does not exist."""
        store = os.path.normpath(store_dir)
        hides_store = is_within(store, self.target) or is_within(self.target, store)
        if self.target in _RESERVED or hides_store:
            raise SandboxPathError(
                f"sandbox path '{self.target}' would hide what the sandbox "
                "provides itself",
                "bind a path below it instead (such as /dev/kvm or /bin/sh)",
            )
        if not self.optional and not os.path.exists(self.source):
            raise _missing(self.source)


def sandbox_path_mounts(paths: tuple[SandboxPath, ...]) -> list[BindMount]:
    """Return the read-only bind mounts of ``paths``, skipping optional
    entries whose source is missing.

    :raises SandboxPathError: when a required source has disappeared.
    """
    mounts = []
    for path in paths:
        if os.path.exists(path.source):
            mounts.append(BindMount(path.source, path.target))
        elif not path.optional:
            raise _missing(path.source)
    return mounts


def _missing(source: str) -> SandboxPathError:
    """Return the error for a required source that does not exist."""
    return SandboxPathError(
        f"sandbox path source '{source}' does not exist",
        "fix the path, or end the entry with '?' to skip it when missing",
    )


def _normal(path: str, spec: str) -> str:
    """Return the absolute ``path`` of entry ``spec`` without redundant parts."""
    if not path.startswith("/"):
        raise SandboxPathError(
            f"sandbox path entry '{spec}' names a relative path '{path}'",
            "give absolute paths: PATH, or TARGET=SOURCE inside=host",
        )
    return os.path.normpath(path)
