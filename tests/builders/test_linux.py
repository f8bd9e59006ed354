"""Tests of the system call layer: real calls in forked children, real errors."""

from __future__ import annotations

import errno
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from builders import linux
from builders.linux import LinuxError

needs_namespaces = pytest.mark.skipif(
    linux.namespaces_unavailable_reason() is not None,
    reason=f"no namespaces here: {linux.namespaces_unavailable_reason()}",
)


def in_child(function: Callable[[], object]) -> Any:
    """Run ``function`` in a forked child; return its JSON-able result.

    A raised :class:`LinuxError` comes back as a dictionary of its fields.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            answer: object = {"result": function()}
        except LinuxError as error:
            answer = {
                "error": {
                    "call": error.call,
                    "errno": error.errno,
                    "message": error.message,
                    "hint": error.hint,
                }
            }
        except BaseException as error:  # noqa: BLE001
            answer = {"crash": repr(error)}
        os.write(write_end, json.dumps(answer).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as port:
        data = port.read()
    os.waitpid(pid, 0)
    reply: dict[str, Any] = json.loads(data)
    assert "crash" not in reply, reply
    return reply


def test_probes_agree_with_the_kernel() -> None:
    assert linux.user_namespaces_supported() == os.path.exists("/proc/self/ns/user")
    assert linux.setgroups_supported() == os.path.exists("/proc/self/setgroups")
    assert isinstance(linux.unprivileged_user_namespaces_supported(), bool)


def test_mount_error_names_the_call_the_path_and_errno(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing")
    with pytest.raises(LinuxError) as caught:
        linux.mount(missing, str(tmp_path / "also-missing"), None, linux.MS_BIND)
    error = caught.value
    assert error.call == "mount" and error.errno == errno.ENOENT
    assert f"'{missing}'" in str(error) and "ENOENT" in str(error)
    assert error.hint


def test_error_round_trips_through_plain_data() -> None:
    error = LinuxError("unshare", ("CLONE_NEWUSER",), errno.EPERM)
    copy = LinuxError.from_dict(json.loads(json.dumps(error.to_dict())))
    assert (copy.call, copy.errno, copy.message) == (
        "unshare",
        errno.EPERM,
        error.message,
    )
    assert "CAP_SYS_ADMIN" in copy.message and copy.hint and "root" in copy.hint


@needs_namespaces
def test_unshare_of_a_user_namespace_fails_with_threads_and_says_why() -> None:
    def unshare_with_a_thread() -> str:
        stop = threading.Event()
        thread = threading.Thread(target=stop.wait)
        thread.start()
        try:
            linux.unshare(linux.CLONE_NEWUSER)
            return "unshared"
        finally:
            stop.set()
            thread.join()

    answer = in_child(unshare_with_a_thread)
    assert isinstance(answer, dict)
    error = answer["error"]
    assert error["errno"] == errno.EINVAL and "CLONE_NEWUSER" in error["message"]
    assert "thread" in error["hint"]

    # Without the thread the same call works: the test can tell them apart.
    assert in_child(lambda: linux.unshare(linux.CLONE_NEWUSER)) == {"result": None}


@needs_namespaces
def test_hostname_changes_only_in_the_new_uts_namespace() -> None:
    def rename() -> str:
        linux.unshare(linux.CLONE_NEWUSER | linux.CLONE_NEWUTS)
        linux.sethostname("pyguix-test-host")
        linux.setdomainname("pyguix-test-domain")
        return socket.gethostname()

    before = socket.gethostname()
    assert in_child(rename) == {"result": "pyguix-test-host"}
    assert socket.gethostname() == before


@needs_namespaces
def test_loopback_comes_up_in_a_new_network_namespace() -> None:
    def connect() -> str:
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen()
        socket.create_connection(server.getsockname(), timeout=2).close()
        return "connected"

    def before_and_after() -> list[str]:
        linux.unshare(linux.CLONE_NEWUSER | linux.CLONE_NEWNET)
        results = []
        try:
            results.append(connect())
        except OSError as error:
            results.append(errno.errorcode[error.errno or 0])
        linux.bring_interface_up("lo")
        results.append(connect())
        return results

    answer = in_child(before_and_after)
    assert isinstance(answer, dict)
    assert answer["result"][0] in ("EADDRNOTAVAIL", "ENETUNREACH")
    assert answer["result"][1] == "connected"


@needs_namespaces
def test_bringing_up_a_missing_interface_is_a_linux_error() -> None:
    def bring_up() -> None:
        linux.unshare(linux.CLONE_NEWUSER | linux.CLONE_NEWNET)
        linux.bring_interface_up("nosuchif0")

    answer = in_child(bring_up)
    assert isinstance(answer, dict)
    assert answer["error"]["call"] == "ioctl(SIOCGIFFLAGS)"
    assert answer["error"]["errno"] == errno.ENODEV


@needs_namespaces
def test_mount_pivot_root_and_read_only_remount(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("kept")

    def jail() -> dict[str, object]:
        linux.unshare(linux.CLONE_NEWUSER | linux.CLONE_NEWNS)
        linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
        linux.mount(str(tmp_path), str(tmp_path), None, linux.MS_BIND)
        flags = linux.bind_flags_of(str(tmp_path)) | linux.MS_RDONLY
        linux.mount(None, str(tmp_path), None, linux.MS_REMOUNT | linux.MS_BIND | flags)
        os.chdir(str(tmp_path))
        linux.pivot_root(".", ".")
        linux.umount2(".", linux.MNT_DETACH)
        os.chdir("/")
        try:
            with open("/new", "w"):
                pass
            write = "written"
        except OSError as error:
            write = errno.errorcode[error.errno or 0]
        return {
            "root": sorted(os.listdir("/")),
            "data": open("/data").read(),
            "write": write,
        }

    answer = in_child(jail)
    assert answer == {"result": {"root": ["data"], "data": "kept", "write": "EROFS"}}
    assert not (tmp_path / "new").exists()


@needs_namespaces
def test_bind_flags_read_the_flags_a_remount_must_keep(tmp_path: Path) -> None:
    def flags_of_a_tmpfs() -> list[int]:
        linux.unshare(linux.CLONE_NEWUSER | linux.CLONE_NEWNS)
        linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
        locked = linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
        linux.mount("none", str(tmp_path), "tmpfs", locked | linux.MS_RDONLY)
        return [linux.bind_flags_of(str(tmp_path)), locked]

    answer = in_child(flags_of_a_tmpfs)
    assert isinstance(answer, dict)
    flags, locked = answer["result"]
    assert flags & locked == locked and flags & linux.MS_RDONLY
    assert not linux.bind_flags_of(str(tmp_path)) & linux.MS_RDONLY


def test_parent_death_signal_kills_the_orphan() -> None:
    read_end, write_end = os.pipe()
    middle = os.fork()
    if middle == 0:
        os.close(read_end)
        grandchild = os.fork()
        if grandchild == 0:
            linux.set_parent_death_signal()
            os.write(write_end, b"%d\n" % os.getpid())
            time.sleep(30)
            os._exit(0)
        time.sleep(0.2)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as port:
        grandchild = int(port.readline())
    os.waitpid(middle, 0)
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(grandchild)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as port:
            return port.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_writing_id_maps_of_a_missing_process_is_a_linux_error() -> None:
    with pytest.raises(LinuxError) as caught:
        linux.write_id_maps(2**22 + 1, "0 0 1", "0 0 1", deny_setgroups=False)
    assert caught.value.call == "write_id_maps"
    assert caught.value.errno == errno.ENOENT
