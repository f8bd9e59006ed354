"""The pool of build users: which host uid runs a build, locked across processes.

Spec: Nix 2.8's ``UserLock`` (``libstore/lock.cc``) and the Guix daemon's
copy of it.  When pyguix runs as root, each build runs as its own host uid,
so that two builds cannot touch each other's files or processes.  The pool
holds :data:`BUILD_USER_COUNT` users, uids ``BUILD_USER_BASE + 1`` onwards
(:data:`builders.sandbox.BUILD_USER_BASE` itself owns the sandbox's own
files), each group id equal to its uid.

**Locking.** A build user is taken by an exclusive lock on its lock file
``<state>/userpool/<uid>``, held for as long as the build runs, and until
its outputs are registered, so that no other build reuses the uid while
files it wrote may still belong to it.  :meth:`BuildUserPool.acquire` tries
the users in turn, starting at a preferred slot (a scheduler gives each of
its workers its own, so they seldom meet), and when every user is taken
waits, trying again with growing pauses, until one is free.  The kernel
drops the lock of a process that dies, even killed with ``SIGKILL``, so no
crash leaves a user taken; the files are never removed.

The lock is an ``flock`` (taken with :func:`store.locks.lock_file`, as the
store's path locks), not Nix's POSIX record lock: a POSIX lock never
conflicts with another one of the same process, and closing any descriptor
of the file drops it, while an ``flock`` belongs to its open file, so two
pools in one process exclude each other too.

Note: the pool is per state directory, as in Nix; two stores with
different state directories may run builds under the same uid at once,
which only the sandbox's separate mount and PID namespaces then keep apart.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from builders.sandbox import BUILD_USER_BASE
from store.errors import PyguixError
from store.locks import FileLock, LockBusyError, lock_file

__all__ = [
    "BUILD_USER_COUNT",
    "BuildUser",
    "BuildUserPool",
    "BuildUsersBusyError",
    "pool_directory",
]

logger = logging.getLogger(__name__)

BUILD_USER_COUNT = 32
"""How many build users there are; Nix's installer also creates 32."""

_FIRST_PAUSE = 0.05
_LONGEST_PAUSE = 1.0


class BuildUsersBusyError(PyguixError):
    """Report that no build user became free within the time allowed.

    :param directory: the pool's lock directory.
    :param waited: the seconds waited.
    """

    def __init__(self, directory: str, waited: float) -> None:
        super().__init__(
            f"no build user in '{directory}' became free in {waited:.1f} s",
            "other pyguix processes are building; wait for them, or retry later",
        )
        self.directory = directory
        self.waited = waited


@dataclass(frozen=True)
class BuildUser:
    """One build user, as taken from the pool."""

    uid: int
    """The host uid the builder runs as."""
    gid: int
    """The host gid the builder runs as."""
    slot: int
    """Its index in the pool, from 0."""
    lock_path: str
    """The lock file held while the user is taken."""


def pool_directory(state_dir: str) -> str:
    """Return the lock directory of the pool of the physical ``state_dir``."""
    return os.path.join(state_dir, "userpool")


class BuildUserPool:
    """The build users whose locks live in ``directory``.

    :param directory: where the lock files are (created when needed).
    :param count: how many users there are.
    :param first_uid: the uid of slot 0; slot ``n`` is ``first_uid + n``.
    """

    def __init__(
        self,
        directory: str,
        count: int = BUILD_USER_COUNT,
        first_uid: int = BUILD_USER_BASE + 1,
    ) -> None:
        assert count > 0 and first_uid > BUILD_USER_BASE, (count, first_uid)
        self.directory = directory
        self.count = count
        self.first_uid = first_uid

    def user(self, slot: int) -> BuildUser:
        """Return the build user of ``slot`` (without taking it)."""
        uid = self.first_uid + slot
        return BuildUser(uid, uid, slot, os.path.join(self.directory, str(uid)))

    def try_acquire(self, preferred: int = 0) -> tuple[BuildUser, FileLock] | None:
        """Take the first free user from slot ``preferred`` on, wrapping
        around; return it with its held lock, or ``None`` if all are taken."""
        os.makedirs(self.directory, mode=0o755, exist_ok=True)
        for step in range(self.count):
            user = self.user((preferred + step) % self.count)
            try:
                return user, lock_file(user.lock_path, wait=False)
            except LockBusyError:
                continue
        return None

    @contextmanager
    def acquire(
        self,
        preferred: int = 0,
        timeout: float | None = None,
        on_wait: Callable[[], None] | None = None,
    ) -> Iterator[BuildUser]:
        """Hold a free build user for the block, waiting for one if need be.

        :param preferred: the slot tried first.
        :param timeout: seconds to wait at most; ``None`` waits for ever.
        :param on_wait: called once, when every user is taken and we wait.
        :raises BuildUsersBusyError: when ``timeout`` passed first.
        """
        user, lock = self._wait_for_user(preferred, timeout, on_wait)
        try:
            yield user
        finally:
            lock.release()

    def _wait_for_user(
        self,
        preferred: int,
        timeout: float | None,
        on_wait: Callable[[], None] | None,
    ) -> tuple[BuildUser, FileLock]:
        start = time.monotonic()
        pause = _FIRST_PAUSE
        while (taken := self.try_acquire(preferred)) is None:
            waited = time.monotonic() - start
            if timeout is not None and waited >= timeout:
                raise BuildUsersBusyError(self.directory, waited)
            if pause == _FIRST_PAUSE:
                logger.info("all %d build users are taken; waiting", self.count)
                if on_wait is not None:
                    on_wait()
            time.sleep(pause if timeout is None else min(pause, timeout - waited))
            pause = min(pause * 2, _LONGEST_PAUSE)
        return taken
