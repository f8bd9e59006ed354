"""Check that the database and the store directory agree, and repair them.

``verify`` (Nix's ``verifyStore``) looks for:

- *missing items*: valid paths with nothing on disk.  Repair invalidates
  them together with every item that refers to them, transitively, since a
  valid item's closure must be valid;
- *invalid items*: entries of the store directory without a row (left by a
  crash between writing and registering, or by hand).  Repair deletes them
  unless someone holds their lock;
- *stray entries*: temporary entries and lock files no process holds;
  repair removes them;
- *leftovers*, not problems: an unregistered ``OUT-check`` next to a valid
  ``OUT`` is the rebuild ``build --check`` keeps when it differs.  They are
  noted but do not fail the check; repair (and ``gc``) removes them;
- with ``check_contents``, *corrupt items*: valid items whose NAR hash or
  size no longer matches the database.  Without a substitute to fetch them
  from, these cannot be repaired and stay reported.

Everything runs with the GC lock held exclusive, so adds in progress are
waited for, not mistaken for problems.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Literal

from store import nar
from store.gc import clean_store_dir, item_entries
from store.local import TEMP_PREFIX, LocalStore
from store.locks import LockBusyError, lock_file
from store.paths import CHECK_SUFFIX

__all__ = ["Problem", "VerifyReport", "verify_store"]

logger = logging.getLogger(__name__)

Kind = Literal["missing", "invalid", "stray", "corrupt", "leftover"]


@dataclass(frozen=True)
class Problem:
    """One disagreement between the database and the disk."""

    kind: Kind
    """``missing``, ``invalid``, ``stray``, ``corrupt``, or ``leftover`` (a
    note, not a problem)."""

    path: str
    """The store path, or the physical path of a stray entry."""

    detail: str
    """One sentence saying what is wrong."""

    repaired: bool = False
    """Whether ``--repair`` fixed it."""


@dataclass
class VerifyReport:
    """The problems found, repaired or not."""

    problems: list[Problem] = field(default_factory=list)

    @property
    def remaining(self) -> list[Problem]:
        """Return the problems that were not repaired, leftovers aside."""
        return [p for p in self.problems if not p.repaired and p.kind != "leftover"]

    @property
    def notes(self) -> list[Problem]:
        """Return the leftovers of ``build --check`` that were kept."""
        return [p for p in self.problems if not p.repaired and p.kind == "leftover"]


def verify_store(
    store: LocalStore, *, check_contents: bool = False, repair: bool = False
) -> VerifyReport:
    """Check (and with ``repair``, fix) the store; return what was found."""
    report = VerifyReport()
    with store.gc_lock(shared=False):
        if repair:
            for removed in clean_store_dir(store):
                report.problems.append(
                    Problem("stray", removed, "left by a crash", True)
                )
        _check_strays(store, report)
        _check_missing(store, report, repair)
        _check_invalid(store, report, repair)
        if check_contents:
            _check_contents(store, report)
    return report


def _check_strays(store: LocalStore, report: VerifyReport) -> None:
    for name in sorted(os.listdir(store.real_store_dir)):
        full = os.path.join(store.real_store_dir, name)
        if name.startswith(TEMP_PREFIX):
            if not _is_held(store.state_file("adding", name)):
                report.problems.append(
                    Problem("stray", full, "a leftover temporary entry")
                )
        elif name.endswith(".lock") and not _is_held(full):
            report.problems.append(Problem("stray", full, "a leftover lock file"))


def _is_held(filename: str) -> bool:
    """Tell whether a live process holds the lock on ``filename``."""
    if not os.path.exists(filename):
        return False
    try:
        lock_file(filename, wait=False).release()
    except LockBusyError:
        return True
    except FileNotFoundError:
        return False
    return False


def _check_missing(store: LocalStore, report: VerifyReport, repair: bool) -> None:
    missing = sorted(
        p for p in store.db.all_valid() if not os.path.lexists(store.physical(p))
    )
    if not missing:
        return
    doomed = store.db.referrer_closure(missing) if repair else set()
    if repair:
        store.db.invalidate(sorted(doomed))
    for path in missing:
        report.problems.append(
            Problem("missing", path, "it is valid but absent from disk", repair)
        )
    for path in sorted(doomed - set(missing)):
        logger.warning("invalidated '%s': it refers to a missing item", path)
        report.problems.append(
            Problem("missing", path, "it refers to a missing item; invalidated", True)
        )


def _check_invalid(store: LocalStore, report: VerifyReport, repair: bool) -> None:
    paths = item_entries(store)
    valid = store.query_valid(paths)
    for path in sorted(set(paths) - valid):
        if _is_held(store.lock_file_of(path)):
            continue  # being built or added right now
        fixed = repair and _delete_invalid(store, path)
        report.problems.append(_invalid_problem(path, valid, fixed))


def _invalid_problem(path: str, valid: set[str], fixed: bool) -> Problem:
    """Describe the unregistered entry ``path``: a leftover of ``build
    --check`` when it is a valid item's path plus ``-check``."""
    original = path.removesuffix(CHECK_SUFFIX)
    if original != path and original in valid:
        return Problem(
            "leftover",
            path,
            f"'build --check' kept it to compare with '{original}'; "
            "gc or verify --repair removes it",
            fixed,
        )
    return Problem("invalid", path, "it is on disk but not registered", fixed)


def _delete_invalid(store: LocalStore, path: str) -> bool:
    try:
        with store.lock_paths([path], wait=False):
            if not store.is_valid(path):
                store.trash(store.physical(path))
            return True
    except LockBusyError:
        return False


def _check_contents(store: LocalStore, report: VerifyReport) -> None:
    for path in sorted(store.db.all_valid()):
        physical = store.physical(path)
        info = store.query_path_info(path)
        if info is None or not os.path.lexists(physical):
            continue
        try:
            nar_hash, nar_size = nar.hash_path(physical)
        except nar.NarError as error:
            report.problems.append(
                Problem("corrupt", path, f"it cannot be read: {error}")
            )
            continue
        if (nar_hash, nar_size) != (info.nar_hash, info.nar_size):
            report.problems.append(
                Problem(
                    "corrupt",
                    path,
                    f"its NAR hash is {nar_hash.to_string()}, "
                    f"not {info.nar_hash.to_string()} as recorded; it cannot be repaired "
                    "without a substitute",
                )
            )
