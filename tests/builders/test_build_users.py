"""The build user pool, locked across real processes: a user another
process holds is passed over, a full pool makes builds wait, and a killed
holder frees its users."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers.builds import python_derivation as pydrv

from builders.build import build_derivation
from builders.build_users import (
    BUILD_USER_COUNT,
    BuildUserPool,
    BuildUsersBusyError,
    pool_directory,
)
from builders.linux import namespaces_unavailable_reason
from builders.sandbox import BUILD_USER_BASE
from store.local import LocalStore

HOLDER = """
import os, signal, sys, time
from builders.build_users import BuildUserPool
directory, count, held, seconds = sys.argv[1:]
pool = BuildUserPool(directory, int(count))
users = [pool.try_acquire(0) for _ in range(int(held))]
print(' '.join(str(taken[0].uid) for taken in users), flush=True)
time.sleep(float(seconds))
os.kill(os.getpid(), signal.SIGKILL)
"""

Holder = Callable[..., tuple[subprocess.Popen[str], list[int]]]


@pytest.fixture
def holder() -> Iterator[Holder]:
    """Start processes that take the first ``held`` users of a pool, then
    kill themselves after ``seconds``; return each with the uids it holds."""
    started: list[subprocess.Popen[str]] = []

    def start(
        directory: str, held: int, count: int = BUILD_USER_COUNT, seconds: float = 60
    ) -> tuple[subprocess.Popen[str], list[int]]:
        argv = [sys.executable, "-c", HOLDER, directory, str(count), str(held)]
        process = subprocess.Popen(
            [*argv, str(seconds)], stdout=subprocess.PIPE, text=True
        )
        started.append(process)
        assert process.stdout is not None
        return process, [int(uid) for uid in process.stdout.readline().split()]

    yield start
    for process in started:
        process.kill()
        process.wait()


def test_a_user_held_by_another_process_is_passed_over(
    tmp_path: Path, holder: Holder
) -> None:
    pool = BuildUserPool(str(tmp_path / "userpool"), count=3)
    process, held = holder(pool.directory, 1, count=3)
    assert held == [BUILD_USER_BASE + 1]

    with pool.acquire() as mine:
        assert mine.uid == BUILD_USER_BASE + 2
        # A second pool in this process is excluded as well.
        other = BuildUserPool(pool.directory, count=3).try_acquire(1)
        assert other is not None and other[0].uid == BUILD_USER_BASE + 3
        assert pool.try_acquire(0) is None
        other[1].release()

    # Killing the holder frees its user at once.
    process.kill()
    process.wait()
    with pool.acquire() as freed:
        assert freed.uid == BUILD_USER_BASE + 1


def test_a_full_pool_waits_until_its_holder_dies(
    tmp_path: Path, holder: Holder
) -> None:
    pool = BuildUserPool(str(tmp_path / "userpool"), count=2)
    _, held = holder(pool.directory, 2, count=2, seconds=0.6)
    assert len(held) == 2
    waits: list[bool] = []

    start = time.monotonic()
    with pool.acquire(on_wait=lambda: waits.append(True)) as user:
        waited = time.monotonic() - start
        assert user.uid in held
    assert waits == [True] and 0.4 < waited < 10


def test_acquire_gives_up_after_its_timeout(tmp_path: Path, holder: Holder) -> None:
    pool = BuildUserPool(str(tmp_path / "userpool"), count=1)
    holder(pool.directory, 1, count=1)
    with pytest.raises(BuildUsersBusyError) as caught, pool.acquire(timeout=0.3):
        pass
    assert caught.value.directory == pool.directory and caught.value.waited >= 0.3


UID_MAP = "open(out, 'w').write(open('/proc/self/uid_map').read())"


def host_uid_of(store: LocalStore, name: str) -> int:
    """Build a derivation that records its uid map; return its host uid."""
    drv = pydrv(store, name, UID_MAP)
    build_derivation(store, drv)
    lines = Path(drv.output_path()).read_text().splitlines()
    return next(int(line.split()[1]) for line in lines if line.split()[0] == "1000")


@pytest.mark.skipif(os.getuid() != 0, reason="build users need root")
@pytest.mark.skipif(
    namespaces_unavailable_reason() is not None,
    reason=f"no namespaces here: {namespaces_unavailable_reason()}",
)
def test_builds_take_users_other_processes_do_not_hold(
    store: LocalStore, holder: Holder
) -> None:
    directory = pool_directory(store.real_state_dir)
    _, held = holder(directory, 1)
    assert host_uid_of(store, "beside") == BUILD_USER_BASE + 2 != held[0]

    # Every user taken: the build waits until the holder is killed.
    _, everything = holder(directory, BUILD_USER_COUNT - 1, seconds=0.8)
    assert len(everything) == BUILD_USER_COUNT - 1
    start = time.monotonic()
    uid = host_uid_of(store, "waited")
    assert time.monotonic() - start > 0.6
    assert uid in everything
