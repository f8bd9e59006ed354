"""Tests of the container runtime with real namespaces and real processes."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest
from helpers.host import host_processes_with, mount_points

from builders.bootstrap import interpreter_executable, interpreter_paths
from builders.container import (
    BindMount,
    ContainerError,
    FileSystemSpec,
    call_with_container,
    container_excursion,
    enter_hint,
    list_directory_in_root,
    open_in_root,
    read_file_in_root,
    read_link_in_root,
)
from builders.linux import (
    LinuxError,
    namespaces_unavailable_reason,
    unprivileged_user_namespaces_supported,
)

pytestmark = pytest.mark.skipif(
    namespaces_unavailable_reason() is not None,
    reason=f"no namespaces here: {namespaces_unavailable_reason()}",
)

PYTHON_MOUNTS = [BindMount(path, path) for path in interpreter_paths()]


def python(code: str, *extra: str) -> list[str]:
    return [interpreter_executable(), "-S", "-c", textwrap.dedent(code), *extra]


def container_temp_dirs() -> set[str]:
    return {name for name in os.listdir("/tmp") if "container" in name}


@pytest.fixture
def shares(tmp_path: Path) -> tuple[Path, Path]:
    """A read-only directory with a file, and a writable directory."""
    exposed = tmp_path / "exposed"
    exposed.mkdir()
    (exposed / "file").write_text("exposed content")
    shared = tmp_path / "shared"
    shared.mkdir()
    return exposed, shared


def test_program_runs_as_pid_1_of_an_isolated_container(
    shares: tuple[Path, Path],
) -> None:
    exposed, shared = shares
    mounts = [
        *PYTHON_MOUNTS,
        BindMount(str(exposed), "/exposed"),
        BindMount(str(shared), "/shared", writable=True),
    ]
    code = """
        import errno, json, os, socket
        report = {"pid": os.getpid(), "uid": os.getuid(), "host": socket.gethostname(),
                  "pids": sorted(int(n) for n in os.listdir("/proc") if n.isdigit()),
                  "interfaces": [name for _, name in socket.if_nameindex()],
                  "exposed": open("/exposed/file").read(), "env": dict(os.environ)}
        try:
            open("/exposed/new", "w")
        except OSError as error:
            report["exposed_write"] = errno.errorcode[error.errno]
        server = socket.socket(); server.bind(("127.0.0.1", 0)); server.listen()
        socket.create_connection(server.getsockname(), timeout=2).close()
        report["loopback"] = "up"
        report["sys_read_only"] = os.statvfs("/sys").f_flag & os.ST_RDONLY != 0
        open("/shared/report.json", "w").write(json.dumps(report))
        raise SystemExit(7)
    """
    status = call_with_container(mounts, python(code), hostname="box", env={"X": "1"})
    assert status == 7
    report = json.loads((shared / "report.json").read_text())
    assert report["pid"] == 1 and report["pids"] == [1]
    assert report["uid"] == 0
    assert report["host"] == "box"
    assert report["interfaces"] == ["lo"] and report["loopback"] == "up"
    assert report["exposed"] == "exposed content"
    assert report["exposed_write"] == "EROFS"
    assert not (exposed / "new").exists()
    assert report["env"] == {"X": "1"}
    assert report["sys_read_only"]


def test_shared_network_keeps_the_host_interfaces(shares: tuple[Path, Path]) -> None:
    _, shared = shares
    namespaces = {"user", "mnt", "pid", "ipc", "uts"}
    code = """
        import socket
        open("/shared/ifs", "w").write(" ".join(n for _, n in socket.if_nameindex()))
    """
    status = call_with_container(
        [*PYTHON_MOUNTS, BindMount(str(shared), "/shared", True)],
        python(code),
        namespaces=namespaces,
    )
    assert status == 0
    host = sorted(name for _, name in socket.if_nameindex())
    assert sorted((shared / "ifs").read_text().split()) == host


def test_callable_payload_and_subordinate_ids(shares: tuple[Path, Path]) -> None:
    _, shared = shares

    def payload() -> int:
        ok = os.getpid() == 1 and os.getuid() == 0 and not os.path.exists(str(shared))
        return 0 if ok else 1

    assert call_with_container([], payload, host_uid_base=100000) == 0
    assert call_with_container([], lambda: 5) == 5


def test_sigterm_to_the_caller_is_relayed(
    tmp_path: Path, shares: tuple[Path, Path]
) -> None:
    _, shared = shares
    code = """
        import signal, sys, time
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(42))
        open("/shared/ready", "w").close()
        time.sleep(30)
        sys.exit(1)
    """

    def send_sigterm_when_ready(pid: int) -> None:
        def later() -> None:
            deadline = time.monotonic() + 10
            while not (shared / "ready").exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=later, daemon=True).start()

    start = time.monotonic()
    status = call_with_container(
        [*PYTHON_MOUNTS, BindMount(str(shared), "/shared", True)],
        python(code),
        process_spawned_hook=send_sigterm_when_ready,
    )
    assert status == 42
    assert time.monotonic() - start < 10
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_killed_container_returns_128_plus_signal(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    token = f"pyguix-test-{uuid.uuid4()}"
    seen: list[int] = []

    def kill(pid: int) -> None:
        seen.append(pid)
        assert pid_file.read_text() == str(pid)
        os.kill(pid, signal.SIGKILL)

    code = "import os, time; os.fork(); os.fork(); time.sleep(30)"
    status = call_with_container(
        PYTHON_MOUNTS,
        python(code, token),
        pid_files=[str(pid_file)],
        process_spawned_hook=kill,
    )
    assert status == 128 + signal.SIGKILL
    assert seen and host_processes_with(token) == []
    assert f"PID {seen[0]}" in enter_hint(seen[0])


def test_container_excursion_runs_inside(shares: tuple[Path, Path]) -> None:
    exposed, shared = shares
    results: list[int] = []
    inside = """
        import os, socket, sys
        ok = (socket.gethostname() == "box"
              and open("/exposed/file").read() == "exposed content"
              and os.getpid() != 1 and "1" in os.listdir("/proc")
              and os.environ == {"TERM": "dumb"})
        sys.exit(0 if ok else 9)
    """

    def enter(pid: int) -> None:
        try:
            results.append(container_excursion(pid, python(inside), {"TERM": "dumb"}))
            results.append(container_excursion(pid, python("raise SystemExit(5)")))
            with pytest.raises(ContainerError, match="'/no/such/program'"):
                container_excursion(pid, ["/no/such/program"])
        finally:
            (shared / "stop").touch()

    code = """
        import os, time
        while not os.path.exists("/shared/stop"):
            time.sleep(0.02)
    """
    mounts = [
        *PYTHON_MOUNTS,
        BindMount(str(exposed), "/exposed"),
        BindMount(str(shared), "/shared", writable=True),
    ]
    status = call_with_container(
        mounts, python(code), hostname="box", process_spawned_hook=enter
    )
    assert status == 0
    assert results == [0, 5]
    # The file and host name exist only inside: the check can fail outside.
    assert socket.gethostname() != "box"


def test_excursion_into_a_missing_process_is_an_error() -> None:
    with pytest.raises(ContainerError, match="no process"):
        container_excursion(2**22 + 1, ["/bin/true"])


def test_missing_bind_source_is_a_readable_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing")
    with pytest.raises(ContainerError, match=f"'{missing}' does not exist"):
        call_with_container([BindMount(missing, "/m")], lambda: 0)


def test_failing_mount_is_a_linux_error() -> None:
    weird = FileSystemSpec("none", "/weird", writable=True, type="no-such-fs")
    with pytest.raises(LinuxError) as caught:
        call_with_container([weird], lambda: 0)
    assert caught.value.call == "mount" and caught.value.errno == errno.ENODEV
    assert "'/weird'" in str(caught.value)


def test_special_file_systems_and_read_only_root(shares: tuple[Path, Path]) -> None:
    _, shared = shares

    def payload() -> int:
        scratch = os.statvfs("/scratch")
        with open("/scratch/x", "w") as port:
            port.write("x")
        try:
            with open("/new-at-root", "w"):
                pass
        except OSError as error:
            return 0 if error.errno == errno.EROFS and scratch.f_bsize > 0 else 2
        return 1

    tmpfs = FileSystemSpec(
        "none", "/scratch", writable=True, type="tmpfs", options="size=1m"
    )
    mqueue = FileSystemSpec("none", "/dev/mqueue", writable=True, type="mqueue")

    def both() -> int:
        return payload() or (0 if os.path.ismount("/dev/mqueue") else 5)

    assert call_with_container([tmpfs, mqueue], both, writable_root=False) == 0


def test_nothing_leaks_on_the_host(tmp_path: Path) -> None:
    mounts_before = mount_points()
    temp_before = container_temp_dirs()
    during: list[set[str]] = []
    status = call_with_container(
        PYTHON_MOUNTS,
        python("import time; time.sleep(0.2)"),
        process_spawned_hook=lambda pid: during.append(container_temp_dirs()),
    )
    assert status == 0 and during == [temp_before]
    with pytest.raises(ContainerError):
        call_with_container([BindMount(str(tmp_path / "missing"), "/m")], lambda: 0)
    assert mount_points() == mounts_before
    assert container_temp_dirs() <= temp_before


@pytest.mark.skipif(
    os.getuid() != 0 or not unprivileged_user_namespaces_supported(),
    reason="needs root to become nobody, and unprivileged user namespaces",
)
def test_unprivileged_caller_maps_its_own_id_to_root() -> None:
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
                    mapping = port.read().split()
                return 0 if os.getuid() == 0 and mapping == ["0", "65534", "1"] else 3

            status = call_with_container([], payload, hostname="mine")
            os.write(write_end, str(status).encode())
        except BaseException as error:  # noqa: BLE001
            os.write(write_end, repr(error).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as port:
        answer = port.read().decode()
    os.waitpid(pid, 0)
    assert answer == "0"


def test_program_that_cannot_run_is_a_readable_error() -> None:
    with pytest.raises(ContainerError, match="'/no/such/program'"):
        call_with_container(PYTHON_MOUNTS, ["/no/such/program"])


def test_terminal_of_standard_input_becomes_the_console() -> None:
    primary, secondary = os.openpty()
    terminal = os.stat(os.ttyname(secondary)).st_rdev
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        os.dup2(secondary, 0)

        def payload() -> int:
            return 0 if os.stat("/dev/console").st_rdev == terminal else 4

        os.write(write_end, str(call_with_container([], payload)).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as port:
        answer = port.read().decode()
    os.waitpid(pid, 0)
    os.close(primary)
    os.close(secondary)
    assert answer == "0"


def test_excursion_into_a_container_with_subordinate_ids_runs_as_its_root(
    shares: tuple[Path, Path],
) -> None:
    _, shared = shares
    results: list[int] = []
    check = """
        import os, sys
        open("/tmp/made-by-excursion", "w").close()
        sys.exit(0 if os.getuid() == 0 else 8)
    """

    def enter(pid: int) -> None:
        try:
            results.append(container_excursion(pid, python(check)))
        finally:
            (shared / "stop").touch()

    code = """
        import os, time
        while not os.path.exists("/shared/stop"):
            time.sleep(0.02)
        raise SystemExit(0 if os.path.exists("/tmp/made-by-excursion") else 6)
    """
    mounts = [*PYTHON_MOUNTS, BindMount(str(shared), "/shared", writable=True)]
    status = call_with_container(
        mounts, python(code), host_uid_base=100000, process_spawned_hook=enter
    )
    assert results == [0] and status == 0


def test_parallel_containers_from_threads() -> None:
    statuses: list[int] = []

    def one(number: int) -> None:
        statuses.append(
            call_with_container(PYTHON_MOUNTS, python(f"raise SystemExit({number})"))
        )

    threads = [threading.Thread(target=one, args=(number,)) for number in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [0, 1, 2, 3]


def test_init_in_front_relays_signals_to_a_program_without_handlers(
    shares: tuple[Path, Path],
) -> None:
    _, shared = shares
    code = """
        import os, time
        open("/shared/pid", "w").write(str(os.getpid()))
        if os.fork() == 0:
            os.setsid()  # an orphan-to-be, reaped by the init
            os._exit(0)
        time.sleep(30)
    """

    def terminate_when_ready(pid: int) -> None:
        deadline = time.monotonic() + 10
        while not (shared / "pid").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(pid, signal.SIGTERM)

    start = time.monotonic()
    status = call_with_container(
        [*PYTHON_MOUNTS, BindMount(str(shared), "/shared", True)],
        python(code),
        child_is_pid1=False,
        process_spawned_hook=terminate_when_ready,
    )
    assert status == 128 + signal.SIGTERM
    assert (shared / "pid").read_text() == "2"
    assert time.monotonic() - start < 10


def test_handshake_accepts_ready_before_pid() -> None:
    # The init may report "ready" before its helper reports its pid: both
    # write to the same pipe from two processes.
    import json
    import types

    from builders.container import ContainerError, MessageReader, _handshake

    messages_read, messages_write = os.pipe()
    go_read, go_write = os.pipe()
    for message in ({"unshared": True}, {"ready": True}, {"pid": 4242}):
        os.write(messages_write, json.dumps(message).encode() + b"\n")
    os.close(messages_write)
    plan = types.SimpleNamespace(namespaces=frozenset())
    reader = MessageReader(messages_read)
    try:
        assert _handshake(plan, 0, reader, go_write, ContainerError) == 4242  # type: ignore[arg-type]
        assert os.read(go_read, 1) == b"g"
    finally:
        reader.close()
        os.close(go_read)
        os.close(go_write)


# ---------------------------------------------------------------------------
# Files of a container read from the host, symlinks kept inside its root


@pytest.fixture
def jailed(tmp_path: Path) -> tuple[Path, Path]:
    """A root with symlinks of every kind, beside a host file it must not reach."""
    host = tmp_path / "host"
    host.mkdir()
    (host / "secret.log").write_text("HOST SECRET")
    root = tmp_path / "root"
    (root / "var" / "log").mkdir(parents=True)
    (root / "var" / "log" / "init.log").write_text("inside")
    (root / "tmp").mkdir()
    (root / "tmp" / "secret.log").write_text("decoy inside")
    links = {
        "var/log/absolute.log": str(host / "secret.log"),
        "var/log/relative.log": "../../../host/secret.log",
        "var/log/dotdot.log": "../../../../../../tmp/secret.log",
        "var/log/chained.log": "relative.log",
        "var/log/inner.log": "/var/log/init.log",
        "var/log/loop.log": "loop.log",
        "var/log/ping.log": "pong.log",
        "var/log/pong.log": "ping.log",
        "var/log/dir": "/tmp",
        "var/escape": str(host),
        "run": "/var/log/absolute.log",
    }
    for name, target in links.items():
        os.symlink(target, root / name)
    return root, host


@pytest.mark.parametrize(
    ("path", "contents"),
    [
        pytest.param("var/log/init.log", b"inside", id="plain-file"),
        pytest.param("/var/log/inner.log", b"inside", id="absolute-link-inside"),
        pytest.param("var/log/dotdot.log", b"decoy inside", id="dotdot-stops-at-root"),
        pytest.param("var/log/dir/secret.log", b"decoy inside", id="link-in-middle"),
        pytest.param("../../var/./log//init.log", b"inside", id="dotdot-in-path"),
    ],
)
def test_read_in_root_resolves_inside(
    jailed: tuple[Path, Path], path: str, contents: bytes
) -> None:
    root, _ = jailed
    assert read_file_in_root(str(root), path) == contents


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("var/log/absolute.log", id="absolute-link-to-host"),
        pytest.param("var/log/relative.log", id="relative-link-out"),
        pytest.param("var/log/chained.log", id="chained-link-out"),
        pytest.param("var/escape/secret.log", id="directory-link-out"),
    ],
)
def test_links_out_of_the_root_stay_inside(
    jailed: tuple[Path, Path], path: str
) -> None:
    # Each names the host file when followed on the host; inside the root
    # it names a missing file.
    root, host = jailed
    assert os.path.exists(root / path)
    with pytest.raises(FileNotFoundError):
        read_file_in_root(str(root), path)


@pytest.mark.parametrize("name", ["loop.log", "ping.log"])
def test_symlink_loops_are_eloop(jailed: tuple[Path, Path], name: str) -> None:
    root, _ = jailed
    with pytest.raises(OSError) as caught:
        read_file_in_root(str(root), f"var/log/{name}")
    assert caught.value.errno == errno.ELOOP


def test_non_regular_files_and_non_directories_are_refused(
    jailed: tuple[Path, Path],
) -> None:
    root, _ = jailed
    os.mkfifo(root / "var" / "log" / "fifo.log")
    with pytest.raises(OSError) as fifo:
        read_file_in_root(str(root), "var/log/fifo.log")
    assert fifo.value.errno == errno.EINVAL
    with pytest.raises(NotADirectoryError):
        read_file_in_root(str(root), "var/log/init.log/x")


def test_directories_and_links_are_read_inside(jailed: tuple[Path, Path]) -> None:
    root, host = jailed
    assert list_directory_in_root(str(root), "var/log/dir") == ["secret.log"]
    assert read_link_in_root(str(root), "/run") == "/var/log/absolute.log"
    assert read_link_in_root(str(root), "var/log/dir/../var/log/loop.log") == "loop.log"
    with pytest.raises(FileNotFoundError):
        list_directory_in_root(str(root), "var/escape")
    fd = open_in_root(str(root), "var/log/dir", follow=False)
    os.close(fd)


def test_container_excursion_names_a_permission_error_with_a_hint() -> None:
    # As another user, the namespaces of root's process cannot be read.
    target = subprocess.Popen(["sleep", "30"])
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read_end)
        os.setgroups([])
        os.setresgid(65534, 65534, 65534)
        os.setresuid(65534, 65534, 65534)
        try:
            container_excursion(target.pid, ["/bin/true"])
            answer = "no error"
        except ContainerError as error:
            answer = f"{error.message}\n{error.hint}"
        except BaseException as error:  # noqa: BLE001 - reported to the test
            answer = repr(error)
        os.write(write_end, answer.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as stream:
        answer = stream.read()
    os.waitpid(child, 0)
    target.kill()
    target.wait()
    assert answer.splitlines() == [
        f"cannot enter the namespaces of process '{target.pid}': "
        f"'/proc/{target.pid}/ns/user': Permission denied",
        "run as root, or as the user who started the container; "
        "'pyguix container list' shows the containers",
    ]
