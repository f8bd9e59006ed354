"""Collect garbage: delete the store items no root keeps alive.

An item is *alive* when it is in the closure of a root: a permanent root
(``<state>/gcroots``), a temporary root of a running process, or (as Nix's
default ``keep-derivations``) the deriver of a live item, if valid.  Every
other valid item is *dead*; so is every entry of the store directory that is
not valid and not being added.

The collector holds the GC lock exclusive for the whole run, so no adder is
between writing an item and registering it.  Dead items are deleted in
batches: each batch is first unregistered in one transaction, then removed
from disk.  The set of dead items is closed under referrers (a referrer of a
dead item is dead), so a batch never leaves a valid row referring to a
deleted item, and a crash between the two steps leaves only unregistered
files, which the next collection or ``verify --repair`` removes.  This
follows Nix's ``collectGarbage`` (``libstore/gc.cc``) without its
concurrent, socket-based root registration.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from store.canonical import remove_tree
from store.errors import StoreError
from store.local import TEMP_PREFIX, LocalStore
from store.locks import LockBusyError, try_remove_stale_lock
from store.optimise import remove_unused_links
from store.roots import find_permanent_roots, read_temp_roots

__all__ = [
    "GCError",
    "GCResult",
    "clean_store_dir",
    "collect_garbage",
    "find_roots",
    "item_entries",
    "live_paths",
]

logger = logging.getLogger(__name__)

BATCH_SIZE = 500


class GCError(StoreError):
    """Report an item that cannot be deleted, with what keeps it alive."""

    def __init__(self, path: str, reason: str, keeper: str) -> None:
        super().__init__(
            f"cannot delete '{path}': {reason} '{keeper}'",
            "remove that root (or referrer) first, or leave the item alone",
        )
        self.path = path
        self.keeper = keeper


@dataclass
class GCResult:
    """What a collection deleted (or would delete, in a dry run)."""

    deleted: list[str] = field(default_factory=list)
    """Store paths removed, valid or not, in deletion order."""

    bytes_freed: int = 0
    """Sum of the sizes of removed files."""

    def summary(self) -> str:
        """Return Nix's closing line: ``N store paths deleted, X MiB freed``."""
        return (
            f"{len(self.deleted)} store paths deleted, "
            f"{self.bytes_freed / (1024 * 1024):.2f} MiB freed"
        )


def find_roots(store: LocalStore) -> dict[str, set[str]]:
    """Return every root, permanent (``gcroots``, and ``profiles`` as Nix
    searches it) and temporary: store path to root names.

    Call with the GC lock held exclusive to read temporary roots safely.
    """
    roots = find_permanent_roots(store.state_file("gcroots"), store.store_dir)
    if os.path.isdir(store.state_file("profiles")):
        profiles = find_permanent_roots(store.state_file("profiles"), store.store_dir)
        for path, links in profiles.items():
            roots.setdefault(path, set()).update(links)
    for filename, paths in read_temp_roots(store.state_file("temproots")).items():
        for path in paths:
            roots.setdefault(path, set()).add(f"{filename} (temporary root)")
    return roots


def live_paths(store: LocalStore, roots: Iterable[str]) -> dict[str, str]:
    """Return each live path and one root that keeps it alive.

    The closure is walked breadth first from the valid roots, adding
    derivers of live items that are valid.
    """
    keeper: dict[str, str] = {}
    frontier = sorted(store.query_valid(roots))
    for path in frontier:
        keeper[path] = path
    while frontier:
        found: list[str] = []
        for path in frontier:
            info = store.query_path_info(path)
            assert info is not None
            nexts = set(info.references)
            if info.deriver:
                nexts.add(info.deriver)
            for other in sorted(store.query_valid(nexts - keeper.keys())):
                keeper[other] = keeper[path]
                found.append(other)
        frontier = found
    return keeper


def _deletion_order(store: LocalStore, dead: set[str]) -> list[str]:
    """Order ``dead`` so that every referrer comes before its references."""
    referrers: dict[str, set[str]] = {path: set() for path in dead}
    for referrer, reference in store.db.edges(dead):
        if referrer != reference:
            referrers[reference].add(referrer)
    order: list[str] = []
    done: set[str] = set()
    ready = sorted(p for p, r in referrers.items() if not r)
    pending = {p: set(r) for p, r in referrers.items() if r}
    while ready:
        path = ready.pop()
        order.append(path)
        done.add(path)
        for reference in store.db.references(path):
            waiting = pending.get(reference)
            if waiting is not None:
                waiting.discard(path)
                if not waiting:
                    del pending[reference]
                    ready.append(reference)
    assert not pending, "the reference graph has a cycle"
    return order


def item_entries(store: LocalStore) -> list[str]:
    """Return the store paths of the entries of the store directory that
    may be items: not hidden, not lock files, not holding the state
    directory (which a symlink may have put there)."""
    paths = []
    for name in os.listdir(store.real_store_dir):
        if name.startswith(".") or name.endswith(".lock"):
            continue
        path = os.path.join(store.store_dir, name)
        if store.holds_state(store.physical(path)):
            logger.warning("'%s' holds the state directory; leaving it", path)
            continue
        paths.append(path)
    return paths


def _invalid_entries(store: LocalStore) -> list[str]:
    """Return store paths on disk that are not valid and not being added."""
    paths = item_entries(store)
    valid = store.query_valid(paths)
    return sorted(p for p in paths if p not in valid)


def _remove_invalid(store: LocalStore, paths: list[str], result: GCResult) -> None:
    """Remove invalid entries unless someone holds their lock (a build)."""
    for path in paths:
        try:
            with store.lock_paths([path], wait=False):
                if not store.is_valid(path):
                    result.bytes_freed += store.trash(store.physical(path))
                    result.deleted.append(path)
        except LockBusyError:
            logger.info("skipping '%s': it is locked", path)


def _is_recorded(store: LocalStore, temp_name: str) -> bool:
    """Tell whether a live add owns the temporary entry ``temp_name``."""
    return os.path.exists(store.state_file("adding", temp_name))


def clean_store_dir(store: LocalStore) -> list[str]:
    """Remove stale lock files and temporary entries; the caller holds the
    GC lock exclusive.  Return the physical paths removed."""
    removed = store.recover()
    for name in sorted(os.listdir(store.real_store_dir)):
        full = os.path.join(store.real_store_dir, name)
        if name.endswith(".lock") and try_remove_stale_lock(full):
            removed.append(full)
        elif name.startswith(TEMP_PREFIX) and not _is_recorded(store, name):
            remove_tree(full)
            removed.append(full)
    return removed


def collect_garbage(
    store: LocalStore, *, dry_run: bool = False, delete: Iterable[str] | None = None
) -> GCResult:
    """Delete dead items (or only ``delete``, which must all be dead).

    :param dry_run: list what would be deleted, delete nothing.
    :param delete: the store paths to delete, as ``nix-store --delete``:
        valid items, or unregistered entries of the store directory.
    :raises GCError: when one of ``delete`` is alive (naming its root) or
        referred to by a valid item not being deleted (naming it).
    :raises StoreError: when one of ``delete`` is neither valid nor on disk.
    """
    with store.gc_lock(shared=False):
        if not dry_run:
            clean_store_dir(store)
        keeper = live_paths(store, find_roots(store).keys())
        if delete is None:
            dead = store.db.all_valid() - keeper.keys()
            invalid = _invalid_entries(store)
        else:
            dead = _check_deletable(store, set(delete), keeper)
            invalid = sorted(set(delete) - dead)
        order = _deletion_order(store, dead)
        if dry_run:
            return GCResult(deleted=order + invalid)
        result = GCResult()
        for start in range(0, len(order), BATCH_SIZE):
            _delete_batch(store, order[start : start + BATCH_SIZE], result)
        _remove_invalid(store, invalid, result)
        result.bytes_freed += remove_unused_links(store)
        return result


def _check_deletable(
    store: LocalStore, paths: set[str], keeper: dict[str, str]
) -> set[str]:
    """Return the valid ones of ``paths``, checking that all may be deleted.

    An invalid path is deleted from disk, as ``nix-store --delete`` does
    with such an entry, but one that is on disk neither is refused (Nix
    then claims to delete it).
    """
    for path in sorted(paths):
        store.parse_path(path)
        if not store.is_valid(path) and not os.path.lexists(store.physical(path)):
            raise StoreError(
                f"cannot delete '{path}': it is neither valid nor on disk",
                "check the path; 'pyguix gc --dry-run' lists what can be deleted",
            )
        if path in keeper:
            raise GCError(
                path, "it is alive, kept by the root", _root_name(store, keeper[path])
            )
        outside = store.query_referrers(path) - paths
        if outside:
            raise GCError(path, "it is still referenced by", min(outside))
    return store.query_valid(paths)


def _root_name(store: LocalStore, path: str) -> str:
    """Name one root link of ``path`` (a root itself)."""
    roots = find_roots(store).get(path, {path})
    return min(roots)


def _delete_batch(store: LocalStore, batch: list[str], result: GCResult) -> None:
    """Unregister ``batch`` in one transaction, then remove it from disk."""
    store.db.invalidate(batch)
    for path in batch:
        logger.info("deleting '%s'", path)
        result.bytes_freed += store.trash(store.physical(path))
        result.deleted.append(path)
