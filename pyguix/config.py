"""Decide where the store lives: store directory, state directory and root.

The *store directory* is the logical prefix hashed into every store path;
the *state directory* holds the database, GC roots, logs and locks; the
*root*, when set, is a directory under which both physically live (a chroot
store, as Nix's ``--store /some/root``), so that a user who cannot write the
logical store directory still gets paths that name it.

Each is taken from the global option, else the environment variable, else
the default below.  The defaults are pyguix's own, never ``/gnu/store`` or
``/nix/store``, so pyguix cannot clash with a real Guix or Nix.

Both directories must be absolute and apart: neither may equal or contain
the other, and the store directory may not be ``/``.  Checking here, before
a store is opened, protects every command.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from store.errors import PyguixError
from store.paths import is_within

__all__ = [
    "DEFAULT_STATE_DIR",
    "DEFAULT_STORE_DIR",
    "StoreConfig",
    "check_apart",
    "resolve",
]

DEFAULT_STORE_DIR = "/pyguix/store"
DEFAULT_STATE_DIR = "/var/pyguix"


@dataclass(frozen=True)
class StoreConfig:
    """Where one store lives."""

    store_dir: str
    """The logical store directory, hashed into store paths."""

    state_dir: str
    """The logical state directory (database, roots, logs, locks)."""

    root: str | None
    """The directory under which both physically live, or ``None``."""


def _can_write(directory: str) -> bool:
    """Tell whether ``directory``, or its nearest existing parent, is writable."""
    path = directory
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return os.access(path, os.W_OK)


def _default_root(store_dir: str, state_dir: str) -> str | None:
    """Return a per-user root when the logical directories are not writable."""
    if _can_write(store_dir) and _can_write(state_dir):
        return None
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return os.path.join(data_home, "pyguix", "root")


def resolve(
    store_dir: str | None = None,
    state_dir: str | None = None,
    root: str | None = None,
) -> StoreConfig:
    """Return the store configuration from options, environment and defaults."""
    store_dir = store_dir or os.environ.get("PYGUIX_STORE_DIR") or DEFAULT_STORE_DIR
    state_dir = state_dir or os.environ.get("PYGUIX_STATE_DIR") or DEFAULT_STATE_DIR
    for what, directory in (("store", store_dir), ("state", state_dir)):
        if not os.path.isabs(directory):
            raise PyguixError(
                f"the {what} directory '{directory}' is not an absolute path",
                f"give --{what}-dir (or PYGUIX_{what.upper()}_DIR) as an absolute path",
            )
    store_dir, state_dir = os.path.normpath(store_dir), os.path.normpath(state_dir)
    check_apart(store_dir, state_dir)
    root = root or os.environ.get("PYGUIX_ROOT") or _default_root(store_dir, state_dir)
    return StoreConfig(
        store_dir=store_dir,
        state_dir=state_dir,
        root=os.path.abspath(root) if root else None,
    )


def check_apart(store_dir: str, state_dir: str) -> None:
    """Refuse a store directory and a state directory that overlap.

    Every entry of the store directory that is not a valid item is garbage
    to ``gc`` and ``verify --repair``, so a state directory inside it (or a
    store directory of ``/``, which holds everything) would be deleted with
    its database; a store directory inside the state directory would mix
    items with the database, roots and logs.

    :param store_dir: normalised and absolute, as is ``state_dir``.
    :raises PyguixError: naming both directories.
    """
    hint = (
        "choose a store directory and a state directory apart from each other, "
        f"such as the defaults {DEFAULT_STORE_DIR} and {DEFAULT_STATE_DIR}"
    )
    if store_dir == "/":
        raise PyguixError("the store directory cannot be '/'", hint)
    if is_within(state_dir, store_dir):
        raise PyguixError(
            f"the state directory '{state_dir}' is inside the store directory "
            f"'{store_dir}', where gc would delete it",
            hint,
        )
    if is_within(store_dir, state_dir):
        raise PyguixError(
            f"the store directory '{store_dir}' is inside the state directory "
            f"'{state_dir}'",
            hint,
        )
