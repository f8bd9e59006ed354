"""Lock store paths and the garbage collector with ``flock`` on lock files.

Like Nix's ``libstore/pathlocks.cc``, a store path is locked by an exclusive
``flock`` on ``<physical path>.lock``.  A process that adds or builds an item
holds its lock, then checks again whether the item became valid meanwhile.
Locks are released when the holder closes the file or dies, so a killed
process never leaves a path locked.

Lock files are removed after use.  To make that safe, the remover unlinks
the file *while holding* the lock, and a process that acquires a lock checks
that the file it locked still has a name (``st_nlink > 0``); if not, it locked
a dead file and starts over.

The global GC lock ``<state>/gc.lock`` is taken shared by every process that
adds items and exclusive by the garbage collector, so a collection never
sees an item between its creation and its registration.  An adder keeps its
descriptor of ``gc.lock`` open (:class:`SharedLock`) and takes and drops the
shared lock around each add or batch of adds: two system calls instead of
an open and a close, and the collector still waits for one add at most.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress

from store.errors import StoreError

__all__ = [
    "LockBusyError",
    "FileLock",
    "PathLocks",
    "SharedLock",
    "held",
    "lock_file",
    "try_remove_stale_lock",
]


class LockBusyError(StoreError):
    """Report that a lock is held by someone else and we chose not to wait."""

    def __init__(self, path: str) -> None:
        super().__init__(
            f"'{path}' is locked by another process",
            "wait for the other pyguix process to finish, then retry",
        )
        self.path = path


class FileLock:
    """A held ``flock`` on one lock file; release it with :meth:`release`."""

    def __init__(self, filename: str, fd: int, delete: bool) -> None:
        self.filename = filename
        self.fd = fd
        self.delete = delete

    def release(self) -> None:
        """Unlock (removing the file first when asked) and close."""
        if self.fd < 0:
            return
        if self.delete:
            with suppress(FileNotFoundError):
                os.unlink(self.filename)
        os.close(self.fd)
        self.fd = -1


def lock_file(
    filename: str, *, shared: bool = False, wait: bool = True, delete: bool = False
) -> FileLock:
    """Acquire a lock on ``filename``, creating it.

    :param shared: take a shared lock instead of an exclusive one.
    :param wait: block until the lock is free; otherwise raise at once.
    :param delete: remove the lock file when the lock is released.
    :raises LockBusyError: when ``wait`` is false and the lock is held.
    """
    operation = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    if not wait:
        operation |= fcntl.LOCK_NB
    while True:
        fd = os.open(filename, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, operation)
        except OSError as error:
            os.close(fd)
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise LockBusyError(filename) from None
            raise

        # A lock file unlinked by its last holder is dead: lock a fresh one.
        if os.fstat(fd).st_nlink > 0:
            return FileLock(filename, fd, delete)
        os.close(fd)


def try_remove_stale_lock(filename: str) -> bool:
    """Remove ``filename`` if nobody holds its lock; tell whether it was removed."""
    try:
        lock = lock_file(filename, wait=False, delete=True)
    except (LockBusyError, FileNotFoundError):
        return False
    lock.release()
    return True


class PathLocks:
    """Exclusive locks on several store paths, taken in sorted order.

    Sorting makes two processes that lock overlapping sets wait for each
    other instead of deadlocking.
    """

    def __init__(self, lock_files: Iterable[str], wait: bool = True) -> None:
        self.locks: list[FileLock] = []
        try:
            for filename in sorted(set(lock_files)):
                self.locks.append(lock_file(filename, wait=wait, delete=True))
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Release every lock, removing the lock files."""
        for lock in reversed(self.locks):
            lock.release()
        self.locks = []


class SharedLock:
    """A shared ``flock`` on one file, kept open and taken reentrantly.

    The descriptor is opened on first use and reopened in a forked child:
    a child sharing its parent's open file would drop the parent's lock
    when dropping its own.

    :param filename: the lock file; it is created and never removed.
    """

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.fd = -1
        self.pid = 0
        self.depth = 0
        self._mutex = threading.Lock()

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Hold the lock shared for the block; nested holds (and holds by
        other threads) are free."""
        with self._mutex:
            if self.pid != os.getpid():
                self._reopen()
            if self.depth == 0:
                fcntl.flock(self.fd, fcntl.LOCK_SH)
            self.depth += 1
        try:
            yield
        finally:
            with self._mutex:
                self.depth -= 1
                if self.depth == 0:
                    fcntl.flock(self.fd, fcntl.LOCK_UN)

    def _reopen(self) -> None:
        """Open our own descriptor (closing a parent's, without unlocking)."""
        if self.fd >= 0:
            os.close(self.fd)
        self.fd = os.open(self.filename, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.pid = os.getpid()
        self.depth = 0

    def close(self) -> None:
        """Close the descriptor, dropping the lock if held."""
        if self.fd >= 0:
            os.close(self.fd)
        self.fd = -1
        self.pid = 0
        self.depth = 0


@contextmanager
def held(lock: FileLock) -> Iterator[FileLock]:
    """Release ``lock`` when the block ends."""
    try:
        yield lock
    finally:
        lock.release()
