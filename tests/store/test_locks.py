"""Path locks and the GC lock, across real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from store.local import LocalStore
from store.locks import LockBusyError, SharedLock, lock_file, try_remove_stale_lock

HOLDER = """
import sys, time
from store.locks import lock_file
lock = lock_file(sys.argv[1], shared=sys.argv[2] == "shared")
print("locked", flush=True)
time.sleep(float(sys.argv[3]))
lock.release()
"""


def hold(
    filename: str, mode: str = "exclusive", seconds: float = 30
) -> subprocess.Popen[str]:
    """Start a process that holds a lock on ``filename``."""
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, filename, mode, str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline() == "locked\n"
    return child


def test_lock_held_by_another_process_is_busy(tmp_path: Path) -> None:
    filename = str(tmp_path / "x.lock")
    child = hold(filename)
    try:
        with pytest.raises(LockBusyError, match="locked by another process"):
            lock_file(filename, wait=False)
        assert not try_remove_stale_lock(filename)
        assert os.path.exists(filename)
    finally:
        child.kill()
        child.wait()
    # The lock died with its holder.
    lock_file(filename, wait=False).release()
    assert try_remove_stale_lock(filename)
    assert not os.path.exists(filename)


def test_shared_locks_coexist_and_exclude_exclusive(tmp_path: Path) -> None:
    filename = str(tmp_path / "gc.lock")
    child = hold(filename, "shared")
    try:
        lock_file(filename, shared=True, wait=False).release()
        with pytest.raises(LockBusyError):
            lock_file(filename, wait=False)
    finally:
        child.kill()
        child.wait()


def test_waiting_on_a_deleted_lock_file_retries(tmp_path: Path) -> None:
    filename = str(tmp_path / "p.lock")
    child = hold(filename, seconds=0.5)
    start = time.monotonic()
    # The holder deletes nothing here; we delete-on-release ourselves.
    lock = lock_file(filename, delete=True)
    assert time.monotonic() - start > 0.3
    assert os.fstat(lock.fd).st_nlink == 1
    lock.release()
    assert not os.path.exists(filename)
    child.wait()


def test_lock_paths_without_waiting(store: LocalStore) -> None:
    path = f"{store.store_dir}/{'a' * 32}-x"
    child = hold(store.lock_file_of(path))
    try:
        with pytest.raises(LockBusyError), store.lock_paths([path], wait=False):
            pass
    finally:
        child.kill()
        child.wait()
    with store.lock_paths([path], wait=False):
        assert os.path.exists(store.lock_file_of(path))
    assert not os.path.exists(store.lock_file_of(path))


def test_shared_lock_is_reentrant_and_dropped_after_the_last_hold(
    tmp_path: Path,
) -> None:
    filename = str(tmp_path / "gc.lock")
    shared = SharedLock(filename)
    with shared.hold():
        with shared.hold():
            pass
        with pytest.raises(LockBusyError):
            lock_file(filename, wait=False)
    lock_file(filename, wait=False).release()
    shared.close()


def test_a_forked_child_does_not_drop_its_parents_shared_lock(
    tmp_path: Path,
) -> None:
    filename = str(tmp_path / "gc.lock")
    shared = SharedLock(filename)
    with shared.hold():
        child = os.fork()
        if child == 0:
            try:
                with shared.hold():
                    pass
            finally:
                os._exit(0)
        os.waitpid(child, 0)
        with pytest.raises(LockBusyError):
            lock_file(filename, wait=False)
    lock_file(filename, wait=False).release()
