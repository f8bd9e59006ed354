"""Tests of locked mounts (Guix's ``#:lock-mounts?``) with real namespaces.

The payloads try what locking forbids, as root in the container: unmount
a bind (``EINVAL``), remount the read-only store bind read-write
(``EPERM``); with locking off the same calls succeed, so every check here
can fail.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import textwrap
import time
from pathlib import Path

import pytest

from builders import linux
from builders.bootstrap import interpreter_executable, interpreter_paths
from builders.container import BindMount, call_with_container, container_excursion
from builders.linux import LinuxError, namespaces_unavailable_reason

pytestmark = pytest.mark.skipif(
    namespaces_unavailable_reason() is not None,
    reason=f"no namespaces here: {namespaces_unavailable_reason()}",
)

PYTHON_MOUNTS = [BindMount(path, path) for path in interpreter_paths()]

# ioctl(2) requests on namespace files, from <linux/nsfs.h>.
NS_GET_USERNS = 0xB701
NS_GET_PARENT = 0xB702

# A program run in the container: it tries to change the mounts through
# the C library, as root, and writes what each attempt gave to
# /shared/report.json.
TRY_MOUNTS = """
    import ctypes, errno, json, os, sys
    libc = ctypes.CDLL(None, use_errno=True)
    MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
    MS_REMOUNT, MS_BIND, MNT_DETACH = 32, 4096, 2

    def outcome(result):
        return "ok" if result == 0 else errno.errorcode[ctypes.get_errno()]

    def remount_writable(target):
        # Keep the flags a user namespace locks anyway (nosuid, nodev, noexec).
        kept = os.statvfs(target).f_flag & (MS_NOSUID | MS_NODEV | MS_NOEXEC)
        flags = MS_REMOUNT | MS_BIND | kept
        return outcome(libc.mount(None, target.encode(), None, flags, None))

    report = {
        "uid": os.getuid(),
        "gid": os.getgid(),
        "uid_map": open("/proc/self/uid_map").read().split(),
        "mnt": os.readlink("/proc/self/ns/mnt"),
        "init_mnt": os.readlink("/proc/1/ns/mnt"),
        "remount_store": remount_writable("/store-dir"),
        "umount_store": outcome(libc.umount2(b"/store-dir", 0)),
        "umount_exposed": outcome(libc.umount2(b"/base/sub", MNT_DETACH)),
        "store": sorted(os.listdir("/store-dir")),
        "sub": sorted(os.listdir("/base/sub")),
    }
    open(sys.argv[1], "w").write(json.dumps(report))
"""


def python(code: str, *extra: str) -> list[str]:
    return [interpreter_executable(), "-S", "-c", textwrap.dedent(code), *extra]


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """A store directory, a base with a hidden file, what hides it, /shared."""
    paths = {name: tmp_path / name for name in ("store", "base", "exposed", "shared")}
    for path in paths.values():
        path.mkdir()
    (paths["store"] / "item").write_text("in the store")
    (paths["base"] / "sub").mkdir()
    (paths["base"] / "sub" / "hidden").write_text("under the exposed bind")
    (paths["exposed"] / "file").write_text("exposed")
    return paths


def mounts_of(tree: dict[str, Path]) -> list[BindMount]:
    return [
        *PYTHON_MOUNTS,
        BindMount(str(tree["store"]), "/store-dir"),
        BindMount(str(tree["base"]), "/base", writable=True),
        BindMount(str(tree["exposed"]), "/base/sub"),
        BindMount(str(tree["shared"]), "/shared", writable=True),
    ]


def run_try_mounts(
    tree: dict[str, Path], lock: bool | None = None
) -> dict[str, object]:
    """Run TRY_MOUNTS; ``lock=None`` keeps the default of ``lock_mounts``."""
    argv = python(TRY_MOUNTS, "/shared/report.json")
    if lock is None:
        status = call_with_container(mounts_of(tree), argv)
    else:
        status = call_with_container(mounts_of(tree), argv, lock_mounts=lock)
    assert status == 0
    report: dict[str, object] = json.loads((tree["shared"] / "report.json").read_text())
    return report


def test_locked_mounts_cannot_be_unmounted_or_made_writable_by_root(
    tree: dict[str, Path],
) -> None:
    report = run_try_mounts(tree)  # locked by default, as Guix

    assert report["uid"] == 0 and report["gid"] == 0
    assert report["remount_store"] == "EPERM"
    assert report["umount_store"] == "EINVAL"
    assert report["umount_exposed"] == "EINVAL"
    # Nothing moved: the store is there, and the bind still hides its mount point.
    assert report["store"] == ["item"]
    assert report["sub"] == ["file"]
    assert not os.path.exists(tree["store"] / "new")


def test_without_locks_root_can_unmount_and_uncover(tree: dict[str, Path]) -> None:
    report = run_try_mounts(tree, lock=False)

    assert report["remount_store"] == "ok"
    assert report["umount_store"] == "ok"
    assert report["umount_exposed"] == "ok"
    assert report["store"] == []  # the bare mount point
    assert report["sub"] == ["hidden"]


def test_ids_and_maps_are_those_of_an_unlocked_container(
    tree: dict[str, Path],
) -> None:
    locked = run_try_mounts(tree)
    unlocked = run_try_mounts(tree, lock=False)

    assert locked["uid_map"] == unlocked["uid_map"] == ["0", "0", "65536"]
    assert locked["uid"] == unlocked["uid"] == 0


def test_the_mount_namespace_is_owned_by_a_nested_user_namespace() -> None:
    def payload() -> int:
        mnt = os.open("/proc/self/ns/mnt", os.O_RDONLY)
        owner = fcntl.ioctl(mnt, NS_GET_USERNS)
        own = os.stat("/proc/self/ns/user")
        if os.fstat(owner).st_ino == own.st_ino:
            return 10
        parent = fcntl.ioctl(owner, NS_GET_PARENT)
        child_of_own = os.fstat(parent).st_ino == own.st_ino
        pids = sorted(int(name) for name in os.listdir("/proc") if name.isdigit())
        with open("/proc/self/uid_map") as port:
            mapped = port.read().split() == ["0", "100000", "65536"]
        ok = child_of_own and pids == [1] and mapped and os.getuid() == 0
        return 0 if ok else 1

    assert call_with_container([], payload, host_uid_base=100000) == 0
    # Without locks the container's user namespace owns its mounts.
    assert call_with_container([], payload, lock_mounts=False) == 10


def test_payload_behind_an_init_is_pid_2_and_locked() -> None:
    def payload() -> int:
        try:
            linux.umount2("/dev/shm")
        except LinuxError as error:
            return 0 if error.errno == errno.EINVAL and os.getpid() == 2 else 1
        return 2

    assert call_with_container([], payload, child_is_pid1=False) == 0


def test_excursion_joins_the_locked_mount_namespace(tree: dict[str, Path]) -> None:
    results: list[int] = []

    def enter(pid: int) -> None:
        try:
            argv = python(TRY_MOUNTS, "/shared/excursion.json")
            results.append(container_excursion(pid, argv))
        finally:
            (tree["shared"] / "stop").touch()

    wait = """
        import os, time
        while not os.path.exists("/shared/stop"):
            time.sleep(0.02)
    """
    status = call_with_container(
        mounts_of(tree), python(wait), process_spawned_hook=enter
    )
    assert status == 0 and results == [0]
    report = json.loads((tree["shared"] / "excursion.json").read_text())
    assert report["mnt"] == report["init_mnt"]
    assert report["uid"] == 0
    assert report["umount_store"] == "EINVAL"
    assert report["remount_store"] == "EPERM"
    assert report["sub"] == ["file"]


def test_unprivileged_caller_gets_locked_mounts_and_its_own_map() -> None:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)

            def payload() -> int:
                with open("/proc/self/uid_map") as port:
                    if port.read().split() != ["0", "65534", "1"]:
                        return 3
                try:
                    linux.umount2("/dev/shm")
                except LinuxError as error:
                    return 0 if error.errno == errno.EINVAL else 4
                return 5

            status = call_with_container([], payload)
            os.write(write_end, str(status).encode())
        except BaseException as error:  # noqa: BLE001
            os.write(write_end, repr(error).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as port:
        answer = port.read().decode()
    os.waitpid(pid, 0)
    assert answer == "0"


def test_without_a_user_namespace_nothing_is_locked() -> None:
    # As Guix: locking needs the user namespace, and is skipped without it.
    if os.getuid() != 0:
        pytest.skip("only root makes namespaces without a user namespace")

    def payload() -> int:
        linux.umount2("/dev/shm")
        return 0

    namespaces = {"mnt", "pid", "ipc", "uts", "net"}
    assert call_with_container([], payload, namespaces=namespaces) == 0


def test_root_keeps_its_rights_over_the_other_namespaces() -> None:
    def payload() -> int:
        linux.sethostname("renamed")
        os.makedirs("/tmp/scratch")
        linux.mount("none", "/tmp/scratch", "tmpfs", 0, "mode=0755")
        os.makedirs("/tmp/proc")
        flags = linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
        linux.mount("proc", "/tmp/proc", "proc", flags)
        ok = os.uname().nodename == "renamed" and os.path.isdir("/tmp/proc/1/ns")
        return 0 if ok else 1

    assert call_with_container([], payload) == 0


def test_the_locker_is_gone_once_the_container_runs(tmp_path: Path) -> None:
    children: list[list[str]] = []

    def look(pid: int) -> None:
        try:
            with open(f"/proc/{pid}/stat") as port:
                helper = int(port.read().rsplit(")", 1)[1].split()[1])
            path = f"/proc/{helper}/task/{helper}/children"
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                with open(path) as port:
                    found = port.read().split()
                if found == [str(pid)]:
                    break
                time.sleep(0.01)
            children.append(found)
        finally:
            (tmp_path / "stop").touch()

    wait = """
        import os, time
        while not os.path.exists("/shared/stop"):
            time.sleep(0.02)
    """
    mounts = [*PYTHON_MOUNTS, BindMount(str(tmp_path), "/shared", writable=True)]
    status = call_with_container(mounts, python(wait), process_spawned_hook=look)
    assert status == 0
    assert len(children) == 1 and len(children[0]) == 1


def test_a_failure_to_lock_is_a_readable_error() -> None:
    # In a user namespace of its own whose limit of user namespaces is 1, a
    # process can make a container's user namespace but not the nested one.
    if os.getuid() != 0:
        pytest.skip("only root maps a range of ids")
    linux.preload()
    report_read, report_write = os.pipe()
    go_read, go_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(report_read)
        os.close(go_write)
        try:
            linux.unshare(linux.CLONE_NEWUSER)
            os.write(report_write, b"u")
            os.read(go_read, 1)
            with open("/proc/sys/user/max_user_namespaces", "w") as port:
                port.write("1")
            call_with_container([], lambda: 0)
            os.write(report_write, b"no error")
        except LinuxError as error:
            os.write(report_write, f"{error.errno} {error}".encode())
        except BaseException as error:  # noqa: BLE001
            os.write(report_write, repr(error).encode())
        os._exit(0)
    os.close(report_write)
    os.close(go_read)
    with os.fdopen(report_read, "rb") as port:
        assert port.read(1) == b"u"
        linux.write_id_maps(pid, "0 0 65536", "0 0 65536", False)
        os.write(go_write, b"g")
        answer = port.read().decode()
    os.close(go_write)
    os.waitpid(pid, 0)
    assert answer.startswith(f"{errno.ENOSPC} unshare(CLONE_NEWUSER|CLONE_NEWMNT)")
