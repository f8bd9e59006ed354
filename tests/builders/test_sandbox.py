"""Tests of the build sandbox with real namespaces and real builder processes."""

from __future__ import annotations

import errno
import io
import os
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from helpers.host import host_processes_with, mount_points

from builders.bootstrap import (
    interpreter_executable,
    interpreter_identity,
    interpreter_paths,
)
from builders.container import FileSystemSpec
from builders.linux import (
    LinuxError,
    namespaces_unavailable_reason,
    unprivileged_user_namespaces_supported,
)
from builders.sandbox import (
    BUILD_USER_BASE,
    BindMount,
    SandboxError,
    SandboxResult,
    SandboxSpec,
    run_sandboxed,
)

pytestmark = pytest.mark.skipif(
    namespaces_unavailable_reason() is not None,
    reason=f"no namespaces here: {namespaces_unavailable_reason()}",
)

PYTHON_MOUNTS = tuple(BindMount(path, path) for path in interpreter_paths())
ENV = {"LC_ALL": "C", "HOME": "/homeless-shelter", "PATH": "/path-not-set"}


def spec(tmp_path: Path, code: str, *extra: str, **fields: Any) -> SandboxSpec:
    """Return a sandbox spec running ``code`` with the host's Python."""
    build_dir = tmp_path / "build"
    build_dir.mkdir(exist_ok=True)
    mounts = PYTHON_MOUNTS + tuple(fields.pop("mounts", ()))
    command = (interpreter_executable(), "-S", "-c", textwrap.dedent(code), *extra)
    return SandboxSpec(
        command=command, build_dir=str(build_dir), env=ENV, mounts=mounts, **fields
    )


def run(
    tmp_path: Path, code: str, *extra: str, **fields: Any
) -> tuple[SandboxResult, str]:
    log = io.BytesIO()
    result = run_sandboxed(spec(tmp_path, code, *extra, **fields), log)
    return result, log.getvalue().decode()


def test_exit_status_and_both_streams_reach_the_log(tmp_path: Path) -> None:
    result, log = run(
        tmp_path,
        """
        import sys
        print("to stdout", flush=True)
        print("to stderr", file=sys.stderr, flush=True)
        sys.exit(3)
    """,
    )
    assert result.exit_status == 3 and result.signal is None
    assert not result.succeeded
    assert "to stdout" in log and "to stderr" in log


def test_log_may_be_a_callable(tmp_path: Path) -> None:
    chunks: list[bytes] = []
    result = run_sandboxed(spec(tmp_path, "print('chunk')"), chunks.append)
    assert result.succeeded
    assert b"".join(chunks) == b"chunk\n"


def test_builder_identity_environment_and_directories(tmp_path: Path) -> None:
    result, log = run(
        tmp_path,
        """
        import os, socket
        print("uid", os.getuid(), os.getgid(), os.getgroups())
        print("host", socket.gethostname())
        print("cwd", os.getcwd())
        print("env", sorted(os.environ))
        print("umask", oct(os.umask(0)))
        print("root", sorted(os.listdir("/")))
        print("dev", sorted(os.listdir("/dev")))
        print("stdin", os.readlink("/proc/self/fd/0"))
        open("/dev/null", "w").write("x")
        open(os.environ["HOME"] if False else "made-here", "w").write("by the builder")
    """,
        build_dir_target="/tmp/pyguix-build-hello-0",
    )
    assert result.succeeded, log
    lines = dict(line.split(" ", 1) for line in log.splitlines())
    assert lines["uid"] == "1000 100 []"
    assert lines["host"] == "localhost"
    assert lines["cwd"] == "/tmp/pyguix-build-hello-0"
    assert lines["env"] == str(sorted(ENV))
    assert lines["umask"] == "0o22"
    assert lines["stdin"] == "/dev/null"
    for device in (
        "null",
        "zero",
        "full",
        "random",
        "urandom",
        "tty",
        "pts",
        "ptmx",
        "shm",
    ):
        assert device in lines["dev"]
    assert (tmp_path / "build" / "made-here").read_text() == "by the builder"


def test_host_file_outside_the_mounts_is_invisible(tmp_path: Path) -> None:
    secret = tmp_path / "secret" / "file"
    secret.parent.mkdir()
    secret.write_text("host secret")
    code = f"""
        try:
            print(open({str(secret)!r}).read())
        except OSError as error:
            print("refused", type(error).__name__)
    """
    result, log = run(tmp_path, code)
    assert result.succeeded and log.strip() == "refused FileNotFoundError", (
        result,
        log,
    )

    # The same program sees the file once it is bound: the check can fail.
    result, log = run(
        tmp_path, code, mounts=[BindMount(str(secret.parent), str(secret.parent))]
    )
    assert log.strip() == "host secret"


def test_no_network_without_it_and_loopback_is_up(tmp_path: Path) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        code = f"""
            import socket
            try:
                socket.create_connection(("127.0.0.1", {port}), timeout=2).close()
                print("connected")
            except OSError as error:
                print("failed", type(error).__name__)
            own = socket.socket(); own.bind(("127.0.0.1", 0)); own.listen()
            socket.create_connection(own.getsockname(), timeout=2).close()
            print("loopback works")
        """
        result, log = run(tmp_path, code)
        assert result.succeeded, log
        assert log.splitlines() == ["failed ConnectionRefusedError", "loopback works"]

        result, log = run(tmp_path, code, network=True)
        assert log.splitlines()[0] == "connected"


@pytest.mark.skipif(
    not os.path.exists("/etc/resolv.conf"), reason="no /etc/resolv.conf"
)
def test_network_builds_get_the_name_service_files(tmp_path: Path) -> None:
    code = "import os; print(sorted(os.listdir('/etc'))); print(open('/etc/resolv.conf').read(), end='')"
    result, log = run(tmp_path, code, network=True)
    assert result.succeeded, log
    listing, *content = log.splitlines(keepends=True)
    assert "resolv.conf" in listing and "passwd" in listing
    assert "".join(content) == Path("/etc/resolv.conf").read_text()

    result, log = run(tmp_path, "import os; print(sorted(os.listdir('/etc')))")
    assert log.strip() == "['group', 'hosts', 'passwd']"


def test_read_only_mount_cannot_be_written_and_writable_dir_can(tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "data").write_text("input")
    output = tmp_path / "output"
    output.mkdir()
    result, log = run(
        tmp_path,
        """
        import errno
        print(open("/inputs/data").read())
        try:
            open("/inputs/data", "w")
        except OSError as error:
            print(errno.errorcode[error.errno])
        open("/out/result", "w").write("built")
    """,
        mounts=[BindMount(str(inputs), "/inputs")],
        writable_dirs={str(output): "/out"},
    )
    assert result.succeeded, log
    assert log.splitlines() == ["input", "EROFS"]
    assert (output / "result").read_text() == "built"
    assert (inputs / "data").read_text() == "input"


def test_host_processes_are_invisible(tmp_path: Path) -> None:
    result, log = run(
        tmp_path,
        """
        import os
        print(sorted(int(name) for name in os.listdir("/proc") if name.isdigit()))
    """,
    )
    assert result.succeeded, log
    assert log.strip() == "[1]"


def test_timeout_kills_the_whole_process_tree(tmp_path: Path) -> None:
    token = f"pyguix-test-{uuid.uuid4()}"
    start = time.monotonic()
    result, log = run(
        tmp_path,
        """
        import os, signal, time
        for _ in range(3):
            if os.fork() == 0:
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                if os.fork() == 0:
                    signal.signal(signal.SIGTERM, signal.SIG_IGN)
                time.sleep(60)
        print("children started", flush=True)
        time.sleep(60)
    """,
        token,
        timeout=1.0,
    )
    assert result.timed_out and not result.succeeded
    assert result.signal == signal.SIGKILL and result.exit_status is None
    assert "children started" in log
    assert time.monotonic() - start < 10
    assert host_processes_with(token) == []


def test_max_silent_time_kills_a_silent_build(tmp_path: Path) -> None:
    result, log = run(
        tmp_path,
        """
        import time
        print("one line", flush=True)
        time.sleep(60)
    """,
        max_silent_time=0.5,
    )
    assert result.silent_too_long and not result.timed_out
    assert result.duration < 10
    assert log == "one line\n"


def test_max_silent_time_spares_a_talkative_build(tmp_path: Path) -> None:
    result, log = run(
        tmp_path,
        """
        import time
        for i in range(8):
            print(i, flush=True)
            time.sleep(0.15)
    """,
        max_silent_time=0.6,
    )
    assert result.succeeded and not result.silent_too_long
    assert log.split() == [str(i) for i in range(8)]


def test_missing_bind_source_is_a_readable_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-input")
    with pytest.raises(SandboxError) as caught:
        run(tmp_path, "pass", mounts=[BindMount(missing, "/input")])
    assert f"'{missing}' does not exist" in str(caught.value)
    assert caught.value.hint


def test_failing_system_call_is_a_linux_error(tmp_path: Path) -> None:
    weird = FileSystemSpec("none", "/weird", writable=True, type="no-such-fs")
    with pytest.raises(LinuxError) as caught:
        run(tmp_path, "pass", mounts=[weird])
    assert caught.value.call == "mount" and caught.value.errno == errno.ENODEV
    assert "'/weird'" in str(caught.value) and "'no-such-fs'" in str(caught.value)


def test_mount_point_under_a_read_only_bind_is_a_readable_error(tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    with pytest.raises(SandboxError) as caught:
        run(
            tmp_path,
            "pass",
            mounts=[
                BindMount(str(inputs), "/inputs"),
                BindMount(str(inputs), "/inputs/sub/deeper"),
            ],
        )
    assert "'/inputs/sub': Read-only file system" in str(caught.value)


def test_builder_that_cannot_run_is_a_readable_error(tmp_path: Path) -> None:
    (tmp_path / "build").mkdir()
    with pytest.raises(SandboxError) as caught:
        run_sandboxed(
            SandboxSpec(
                command=("/no/such/builder",), build_dir=str(tmp_path / "build")
            ),
            io.BytesIO(),
        )
    assert "'/no/such/builder'" in str(caught.value)


def test_nothing_leaks_on_the_host(tmp_path: Path) -> None:
    mounts_before = mount_points()
    temp_before = set(os.listdir(tempfile.gettempdir()))
    run(tmp_path, "print('hi')")
    with pytest.raises(SandboxError):
        run(tmp_path, "pass", mounts=[BindMount(str(tmp_path / "absent"), "/x")])
    assert mount_points() == mounts_before
    ours = {name for name in os.listdir(tempfile.gettempdir()) if "sandbox" in name}
    assert ours <= temp_before


def test_sandbox_dies_with_pyguix(tmp_path: Path) -> None:
    token = f"pyguix-test-{uuid.uuid4()}"
    (tmp_path / "build").mkdir()
    driver = textwrap.dedent(f"""
        import io
        from builders.sandbox import BindMount, SandboxSpec, run_sandboxed
        from builders.bootstrap import interpreter_executable, interpreter_identity, interpreter_paths
        mounts = tuple(BindMount(p, p) for p in interpreter_paths())
        command = (interpreter_executable(), "-S", "-c", "import time; time.sleep(60)", {token!r})
        run_sandboxed(SandboxSpec(command=command, build_dir={str(tmp_path / "build")!r},
                                  mounts=mounts), io.BytesIO())
    """)
    temp_before = {
        name for name in os.listdir(tempfile.gettempdir()) if "sandbox" in name
    }
    errors = tmp_path / "driver-errors"
    with open(errors, "wb") as stderr:
        process = subprocess.Popen([sys.executable, "-c", driver], stderr=stderr)
    try:
        # The driver, its helper and the builder carry the token.
        deadline = time.monotonic() + 10
        while not _builder_started(token) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _builder_started(token), errors.read_text()
    finally:
        process.kill()
        process.wait()
    deadline = time.monotonic() + 5
    while host_processes_with(token) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert host_processes_with(token) == []
    temp_after = {
        name for name in os.listdir(tempfile.gettempdir()) if "sandbox" in name
    }
    assert temp_after <= temp_before


def _builder_started(token: str) -> bool:
    """Tell whether a process runs the sleeping builder with ``token``."""
    for pid in host_processes_with(token):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as port:
                if b"import time; time.sleep(60)\0" in port.read():
                    return True
        except OSError:
            pass
    return False


def test_sandbox_starts_from_a_thread_while_others_run(tmp_path: Path) -> None:
    # Builds start with a fork, so a scheduler's threads do not break unshare.
    results: list[SandboxResult] = []
    busy = threading.Event()
    sleeper = threading.Thread(target=busy.wait, args=(10,))
    sleeper.start()
    try:
        worker = threading.Thread(
            target=lambda: results.append(run(tmp_path, "print(1)")[0])
        )
        worker.start()
        worker.join()
    finally:
        busy.set()
        sleeper.join()
    assert [result.succeeded for result in results] == [True]


@pytest.mark.skipif(
    os.getuid() != 0
    or not unprivileged_user_namespaces_supported()
    or not os.path.exists("/lib64/ld-linux-x86-64.so.2")
    or not os.path.exists("/usr/bin/sh"),
    reason="needs root to become nobody, unprivileged user namespaces, an x86-64 /usr",
)
def test_sandbox_as_an_unprivileged_user_maps_its_own_id(tmp_path: Path) -> None:
    build_dir = tempfile.mkdtemp(prefix="pyguix-test-build-")
    os.chown(build_dir, 65534, 65534)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            mounts = (
                BindMount("/usr", "/usr"),
                BindMount(
                    os.path.realpath("/lib64/ld-linux-x86-64.so.2"),
                    "/lib64/ld-linux-x86-64.so.2",
                ),
            )
            command = (
                "/usr/bin/sh",
                "-c",
                "echo $(id -u) $(id -g) $(cat /proc/sys/kernel/hostname) > out",
            )
            result = run_sandboxed(
                SandboxSpec(command=command, build_dir=build_dir, mounts=mounts),
                io.BytesIO(),
            )
            os.write(write_end, repr(result.exit_status).encode())
        except BaseException as error:  # noqa: BLE001
            os.write(write_end, repr(error).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as port:
        answer = port.read().decode()
    os.waitpid(pid, 0)
    try:
        assert answer == "0"
        assert Path(build_dir, "out").read_text() == "1000 100 localhost\n"
        assert os.stat(Path(build_dir, "out")).st_uid == 65534
    finally:
        shutil.rmtree(build_dir)


def test_interpreter_paths_are_sorted_outermost_and_complete() -> None:
    paths = interpreter_paths()
    assert paths == sorted(paths)
    for index, path in enumerate(paths):
        assert os.path.isabs(path) and os.path.exists(path)
        assert not any(path.startswith(other + "/") for other in paths[:index])
    assert any(
        sys.base_prefix == path or sys.base_prefix.startswith(path + "/")
        for path in paths
    )
    assert any("ld-linux" in path or path.startswith("/lib") for path in paths)
    assert interpreter_identity().startswith(interpreter_executable() + " ")
    assert interpreter_identity().endswith(".".join(map(str, sys.version_info[:3])))


def test_a_build_keeps_no_descriptor_of_the_caller_open(tmp_path: Path) -> None:
    # A pipe of another build open at the time of the fork must not be held
    # for this build's lifetime, or that build would wait for this one.
    read_end, write_end = os.pipe()
    worker = threading.Thread(target=run, args=(tmp_path, "import time; time.sleep(2)"))
    worker.start()
    try:
        time.sleep(0.5)
        os.close(write_end)
        ready, _, _ = select.select([read_end], [], [], 1.0)
        assert ready and os.read(read_end, 1) == b""
    finally:
        os.close(read_end)
        worker.join()


@pytest.mark.skipif(os.getuid() != 0, reason="build users are chosen only as root")
def test_build_user_cannot_be_the_sandbox_root_id(tmp_path: Path) -> None:
    with pytest.raises(SandboxError, match="'30000'"):
        run(tmp_path, "pass", host_uid=BUILD_USER_BASE)
    result, log = run(
        tmp_path, "import os; print(os.getuid())", host_uid=BUILD_USER_BASE + 7
    )
    assert result.succeeded and log == "1000\n"
    assert os.stat(tmp_path / "build").st_uid == BUILD_USER_BASE + 7


def test_descriptors_above_1024_are_watched(tmp_path: Path) -> None:
    # select() cannot watch descriptors past FD_SETSIZE; a busy scheduler has them.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"the descriptor limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    fillers = []
    try:
        while (fd := os.open("/dev/null", os.O_RDONLY)) < 1100:
            fillers.append(fd)
        fillers.append(fd)
        result, log = run(tmp_path, "print('high')")
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert result.succeeded and log == "high\n"


def test_builders_import_the_modules_bound_but_not_the_terminal_or_gui_ones(
    tmp_path: Path,
) -> None:
    result, log = run(
        tmp_path,
        """
        import _ssl, _hashlib, _ctypes, zlib, _bz2, _lzma, _sqlite3, _uuid
        for name in ("readline", "_curses", "_tkinter"):
            try:
                __import__(name)
            except ImportError:
                print("missing", name)
        """,
    )
    assert result.succeeded, log
    assert log.split() == [
        "missing",
        "readline",
        "missing",
        "_curses",
        "missing",
        "_tkinter",
    ]
    assert not any(
        "libtk" in path or "libreadline" in path for path in interpreter_paths()
    )


def zombie_children() -> int:
    """Return how many children of this process have exited, unreaped."""
    count = 0
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/children") as port:
            for pid in port.read().split():
                with open(f"/proc/{pid}/stat") as stat:
                    if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                        count += 1
    return count


def test_exited_helpers_do_not_pile_up(tmp_path: Path) -> None:
    for _ in range(5):
        result, log = run(tmp_path, "pass")
        assert result.succeeded, log
    time.sleep(0.2)
    # At most the last build's helper waits to be reaped by the next build.
    assert zombie_children() <= 1
    result, _ = run(tmp_path, "pass")
    assert result.succeeded
    assert zombie_children() <= 1
