"""Deduplicate the store: identical files become hard links of one inode.

This is Nix's ``nix-store --optimise`` (``libstore/optimise-store.cc``) and
what Guix's daemon does to every new item.  Each regular file of a valid
item is named by the SHA-256 NAR hash of the file alone (so an executable
and a plain file with the same bytes stay apart) in ``STORE/.links``:

- no link of that name yet: the file becomes it (a hard link is added);
- a link of that name, another inode: the file is replaced by a hard link
  of it, atomically (a new link under a temporary name at the top of the
  store, renamed over the file), so a reader sees the old file or the new
  link, never nothing.

Store files are read-only and dated 1, so linked files share their mode
and time as well as their bytes, and an item's NAR is unchanged.  The
directory holding a file is made writable for the rename, then read-only
again.  The collector removes links nobody else uses any more
(:func:`remove_unused_links`).  Everything runs under the GC lock held
shared, as adding does: the collector cannot delete an item being
optimised.

A crash can leave a temporary link at the top of the store (removed, as
other temporary entries, by the next ``gc`` or ``verify --repair``) or a
directory left writable (harmless: ``verify`` checks contents, not modes).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from dataclasses import dataclass

from store.local import TEMP_PREFIX, LocalStore

__all__ = ["LINKS_DIR", "OptimiseResult", "optimise_store", "remove_unused_links"]

LINKS_DIR = ".links"
"""The directory of the store holding one link per distinct file."""

logger = logging.getLogger(__name__)


@dataclass
class OptimiseResult:
    """What an optimisation did."""

    files_linked: int = 0
    """Files replaced by a link of an identical one."""
    bytes_freed: int = 0
    """Bytes of the files replaced (their data is now stored once)."""


def optimise_store(store: LocalStore) -> OptimiseResult:
    """Replace every file of every valid item by a link of its first copy.

    :returns: how many files were replaced and the bytes saved.
    """
    result = OptimiseResult()
    links = os.path.join(store.real_store_dir, LINKS_DIR)
    os.makedirs(links, exist_ok=True)
    with store.gc_lock(shared=True):
        for path in sorted(store.db.all_valid()):
            _optimise_tree(store, store.physical(path), links, result)
    return result


def _optimise_tree(
    store: LocalStore, path: str, links: str, result: OptimiseResult
) -> None:
    """Link the regular files under ``path`` (a file or a directory)."""
    from store.canonical import walk_up

    for entry, info in walk_up(path):
        if stat.S_ISREG(info.st_mode):
            _optimise_file(store, entry, info, links, result)


def _optimise_file(
    store: LocalStore,
    path: str,
    info: os.stat_result,
    links: str,
    result: OptimiseResult,
) -> None:
    """Make ``path`` a link of the one file of ``.links`` with its contents."""
    from store import nar

    link = os.path.join(links, nar.hash_path(path)[0].to_base32())

    # The first file with these contents becomes the link.
    try:
        os.link(path, link)
        return
    except FileExistsError:
        pass

    if os.lstat(link).st_ino == info.st_ino:
        return
    if _replace_with_link(store, path, link):
        result.files_linked += 1
        result.bytes_freed += info.st_size


def _replace_with_link(store: LocalStore, path: str, link: str) -> bool:
    """Rename a new hard link of ``link`` over ``path``; say whether it was.

    A link that has reached the file system's limit is passed over, as Nix
    does.
    """
    temp = os.path.join(
        store.real_store_dir, f"{TEMP_PREFIX}link-{os.getpid()}-{os.urandom(6).hex()}"
    )
    try:
        os.link(link, temp)
    except OSError as error:
        if error.errno == errno.EMLINK:
            logger.info("'%s' has the most links it may have", link)
            return False
        raise

    # The directory of a store item is read-only: open it for the rename.
    directory = os.path.dirname(path)
    mode = stat.S_IMODE(os.lstat(directory).st_mode)
    try:
        os.chmod(directory, mode | stat.S_IWUSR)
        try:
            os.rename(temp, path)
        finally:
            os.chmod(directory, mode)
    except BaseException:
        if os.path.lexists(temp):
            os.unlink(temp)
        raise
    return True


def remove_unused_links(store: LocalStore) -> int:
    """Remove the links of ``.links`` no item uses any more; return the
    bytes freed.  The caller holds the GC lock exclusive."""
    links = os.path.join(store.real_store_dir, LINKS_DIR)
    freed = 0
    try:
        names = os.listdir(links)
    except FileNotFoundError:
        return 0
    for name in names:
        full = os.path.join(links, name)
        info = os.lstat(full)
        if info.st_nlink == 1:
            os.unlink(full)
            freed += info.st_size
    return freed
