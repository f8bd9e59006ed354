"""``pyguix system container`` end to end: build the example system's
run-container script through the command line (twice: the second run
builds nothing), boot it in real namespaces, and check it from inside
(``pyguix container exec``) and from the host: PID 1 is the init, host
name, /etc, /run/current-system, services, HTTP, a read-only store, shared
and exposed directories, no host processes, no network but ``lo``; then
``container list`` and ``logs``, a SIGTERM that stops everything within 5
seconds with status 0, a boot that fails with its status, a build with
``--network`` answering from the host, and nothing left on the host.

The store is a chroot store (global ``--root``) named /pyguix/store, so the
container mounts it at its logical directory.  Built once per module."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from builders.bootstrap import interpreter_executable
from builders.linux import namespaces_unavailable_reason

pytestmark = pytest.mark.skipif(
    namespaces_unavailable_reason() is not None,
    reason=f"no namespaces here: {namespaces_unavailable_reason()}",
)

EXAMPLE = Path(__file__).resolve().parents[2] / "fixtures" / "os.py"
STORE_DIR = "/pyguix/store"
PYTHON = interpreter_executable()
BOOT_TIMEOUT = 20.0

FAILING_OS = """
import runpy
from dataclasses import replace

from derivations.gexp import gexp
from system.base import boot_service_type
from system.services import simple_service

example = runpy.run_path({example!r})
operating_system = replace(
    example["operating_system"],
    services=(
        *example["operating_system"].services,
        simple_service("broken-boot", boot_service_type, gexp("raise SystemExit(7)\\n")),
    ),
)
"""

FACTS = r"""
import errno, json, os, socket, time, urllib.request

def attempt(path):
    try:
        with open(path, "w") as port:
            port.write("written from inside\n")
        return "ok"
    except OSError as error:
        return errno.errorcode[error.errno]

def fetch(url):
    # A daemon counts as up once spawned: give the server time to listen.
    for _ in range(100):
        try:
            return urllib.request.urlopen(url, timeout=5).read().decode()
        except OSError:
            time.sleep(0.1)
    return "no answer"

def read(path):
    with open(path) as port:
        return port.read()

pids = sorted(int(e) for e in os.listdir("/proc") if e.isdigit())
print(json.dumps({
    "pid1": read("/proc/1/cmdline").split("\0"),
    "me": os.getpid(),
    "pids": pids,
    "commands": [read(f"/proc/{p}/cmdline").replace("\0", " ") for p in pids
                 if os.path.exists(f"/proc/{p}/cmdline")],
    "hostname": socket.gethostname(),
    "passwd": read("/etc/passwd"),
    "hosts": read("/etc/hosts"),
    "current_system": os.readlink("/run/current-system"),
    "interfaces": sorted(os.listdir("/sys/class/net")),
    "http": fetch("http://127.0.0.1:8080/health"),
    "store_write": attempt("STORE_DIR/intruder"),
    "share_write": attempt("/exchange/from-inside"),
    "expose_write": attempt("/exposed/from-inside"),
    "exposed": read("/exposed/note"),
    "missing_mounted": os.path.exists("/nothing"),
    "uid": os.getuid(),
}))
""".replace("STORE_DIR", STORE_DIR)


def pyguix(
    root: Path, *arguments: str, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Run the command line with the test's chroot store."""
    command = [
        sys.executable,
        "-m",
        "pyguix",
        "--root",
        str(root),
        "--store-dir",
        STORE_DIR,
        "--state-dir",
        "/var/pyguix",
        *arguments,
    ]
    return subprocess.run(
        command, capture_output=True, text=True, check=False, timeout=120, **kwargs
    )


@dataclass
class Built:
    root: Path
    script: str
    """The logical store path printed."""
    first: subprocess.CompletedProcess[str]
    second: subprocess.CompletedProcess[str]
    cold: float
    warm: float

    @property
    def physical(self) -> str:
        return str(self.root) + self.script


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("system-container") / "root"
    start = time.monotonic()
    first = pyguix(root, "system", "container", str(EXAMPLE))
    cold = time.monotonic() - start
    assert first.returncode == 0, first.stderr
    start = time.monotonic()
    second = pyguix(root, "system", "container", str(EXAMPLE))
    warm = time.monotonic() - start
    return Built(root, first.stdout.strip(), first, second, cold, warm)


def mountinfo() -> list[str]:
    """Return the host's mounts that a container of these tests could leave:
    on the temporary directory (where the runtime builds a root), under
    pytest's ones or the store directory; other tests may mount elsewhere
    meanwhile."""
    prefixes = (tempfile.gettempdir() + "/pytest-of-", STORE_DIR)
    with open("/proc/self/mountinfo") as port:
        mounts = [" ".join(line.split()[3:5]) for line in port]
    temp = tempfile.gettempdir()
    return sorted(
        m for m in mounts if m.split()[1] == temp or m.split()[1].startswith(prefixes)
    )


def status_of(pid: int) -> dict[str, Any]:
    try:
        with open(f"/proc/{pid}/root/run/pyguix/init.status") as port:
            document: dict[str, Any] = json.load(port)
    except (OSError, ValueError):
        return {}
    return document


@dataclass
class Running:
    process: subprocess.Popen[str]
    pid: int
    """The host PID of the container's init."""
    pid_ns: str
    work: Path
    mounts_before: list[str]
    boot_time: float


def start(script: str, work: Path, *arguments: str) -> Running:
    """Run ``script`` and wait for its services to be up."""
    mounts_before = mountinfo()
    (work / "tmp").mkdir(parents=True)
    pid_file = work / "pid"
    began = time.monotonic()
    process = subprocess.Popen(
        [script, "--pid-file", str(pid_file), *arguments],
        stdout=subprocess.DEVNULL,
        stderr=open(work / "stderr", "w"),  # noqa: SIM115 - closed with the process
        text=True,
        env={**os.environ, "TMPDIR": str(work / "tmp")},
    )
    deadline = began + BOOT_TIMEOUT
    pid = 0
    while time.monotonic() < deadline and process.poll() is None:
        if pid == 0 and pid_file.exists() and pid_file.read_text():
            pid = int(pid_file.read_text())
        if pid and status_of(pid).get("state") == "running":
            break
        time.sleep(0.05)
    else:
        process.kill()
        process.wait()
        pytest.fail(f"container did not boot: {(work / 'stderr').read_text()}")
    boot_time = time.monotonic() - began
    pid_ns = os.readlink(f"/proc/{pid}/ns/pid")
    return Running(process, pid, pid_ns, work, mounts_before, boot_time)


def stop(running: Running) -> None:
    if running.process.poll() is None:
        running.process.kill()
        running.process.wait()


def processes_in(pid_ns: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") == pid_ns:
                    found.append(int(entry))
            except OSError:
                pass
    return found


@pytest.fixture(scope="module")
def running(
    built: Built, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    work = tmp_path_factory.mktemp("running")
    (work / "share").mkdir()
    (work / "expose").mkdir()
    (work / "expose" / "note").write_text("exposed from the host\n")
    container = start(
        built.physical,
        work,
        "--share",
        f"{work / 'share'}=/exchange",
        "--expose",
        f"{work / 'expose'}=/exposed",
        "--expose",
        f"{work / 'missing'}=/nothing",
    )
    yield container
    stop(container)


@pytest.fixture(scope="module")
def facts(built: Built, running: Running) -> dict[str, Any]:
    done = pyguix(
        built.root, "container", "exec", str(running.pid), PYTHON, "-c", FACTS
    )
    assert done.returncode == 0, done.stderr
    document: dict[str, Any] = json.loads(done.stdout)
    return document


# ---------------------------------------------------------------------------
# Building


def test_prints_one_path_and_second_run_builds_nothing(built: Built) -> None:
    assert built.first.stdout.count("\n") == 1
    assert built.script.startswith(STORE_DIR + "/")
    assert built.script.endswith("-run-container")
    assert "building run-container" in built.first.stderr

    assert built.second.returncode == 0, built.second.stderr
    assert built.second.stdout == built.first.stdout
    assert "nothing to build" in built.second.stderr
    assert "building" not in built.second.stderr
    print(f"cold build {built.cold:.2f}s, warm re-run {built.warm:.2f}s")


# ---------------------------------------------------------------------------
# The running container, from inside and outside


def test_announces_pid_and_writes_pid_file(running: Running) -> None:
    stderr = (running.work / "stderr").read_text()
    assert f"system container is running as PID {running.pid}" in stderr
    assert f"pyguix container exec {running.pid} " in stderr
    assert (running.work / "pid").read_text() == str(running.pid)
    print(f"boot to services up: {running.boot_time:.2f}s")


def test_pid1_is_the_init(facts: dict[str, Any]) -> None:
    assert facts["pid1"][0] == PYTHON
    assert facts["pid1"][2].endswith("-init") and facts["pid1"][3] == "--spec"


def test_system_is_in_place(facts: dict[str, Any], built: Built) -> None:
    assert facts["hostname"] == "pyguix-example"
    assert "alice:x:1000:100:Alice:/home/alice:/bin/sh" in facts["passwd"]
    assert facts["hosts"].startswith("127.0.0.1 localhost pyguix-example")
    assert facts["current_system"].startswith(STORE_DIR + "/")
    assert facts["current_system"].endswith("-system")
    assert facts["uid"] == 0


def test_services_run_and_http_answers(running: Running, facts: dict[str, Any]) -> None:
    services = {s["name"]: s["state"] for s in status_of(running.pid)["services"]}
    assert services["httpd"] == "running"
    assert services["heartbeat"] == "running"
    assert services["log-collector"] == "running"
    assert services["boot-stamp"] == "done"
    assert "mingetty" not in services
    assert facts["http"] == "ok\n"


def test_store_read_only_share_writable_expose_not(
    facts: dict[str, Any], running: Running
) -> None:
    assert facts["store_write"] == "EROFS"
    assert facts["share_write"] == "ok"
    assert (
        running.work / "share" / "from-inside"
    ).read_text() == "written from inside\n"
    assert facts["expose_write"] == "EROFS"
    assert facts["exposed"] == "exposed from the host\n"
    assert not (running.work / "expose" / "from-inside").exists()


def test_missing_bind_source_is_skipped(
    facts: dict[str, Any], running: Running
) -> None:
    assert not facts["missing_mounted"]
    stderr = (running.work / "stderr").read_text()
    assert "not mounting '/nothing'" in stderr


def test_no_host_processes_and_no_network(facts: dict[str, Any]) -> None:
    assert facts["pids"][0] == 1
    assert len(facts["pids"]) < 15, facts["commands"]
    assert not any("pytest" in command for command in facts["commands"])
    assert facts["interfaces"] == ["lo"]


def test_container_exec_reports_status(built: Built, running: Running) -> None:
    done = pyguix(
        built.root,
        "container",
        "exec",
        str(running.pid),
        PYTHON,
        "-c",
        "raise SystemExit(3)",
    )
    assert done.returncode == 1
    assert "process exited with status 3" in done.stderr

    hello = pyguix(
        built.root,
        "container",
        "exec",
        str(running.pid),
        "/run/current-system/profile/bin/hello",
    )
    assert hello.returncode == 0, hello.stderr
    assert hello.stdout == "Hello from pyguix-example!\n"

    # A bare name is found on the container's PATH, not the host's.
    bare = pyguix(built.root, "container", "exec", str(running.pid), "hello")
    assert bare.returncode == 0, bare.stderr
    assert bare.stdout == "Hello from pyguix-example!\n"
    missing = pyguix(built.root, "container", "exec", str(running.pid), "python3")
    assert missing.returncode == 1
    assert "cannot run 'python3' in the container" in missing.stderr
    assert "/run/current-system/profile/bin" in missing.stderr


def test_container_list_and_logs(built: Built, running: Running) -> None:
    listed = pyguix(built.root, "container", "list")
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()]
    assert rows[0][:2] == ["PID", "HOST"]
    row = next(row for row in rows if row[0] == str(running.pid))
    assert row[1] == "pyguix-example" and row[3] == "running"
    assert row[4].startswith(STORE_DIR + "/") and row[4].endswith("-system")

    log = pyguix(built.root, "container", "logs", str(running.pid), "heartbeat")
    assert log.returncode == 0 and log.stdout.startswith("heartbeat 1\n")
    init_log = pyguix(built.root, "container", "logs", str(running.pid))
    assert "all services started" in init_log.stdout


LINKS_OUT = """
import os, sys
host = sys.argv[1]
os.symlink(host + "/secret.log", "/var/log/evil.log")
os.symlink("../../../../../../.." + host + "/secret.log", "/var/log/up.log")
os.rename("/run/pyguix/init.status", "/run/pyguix/init.status.saved")
os.symlink(host + "/status.json", "/run/pyguix/init.status")
"""

LINKS_REMOVED = """
import os
os.remove("/var/log/evil.log")
os.remove("/var/log/up.log")
os.replace("/run/pyguix/init.status.saved", "/run/pyguix/init.status")
"""


def test_logs_and_list_keep_symlinks_inside_the_container(
    built: Built, running: Running, tmp_path: Path
) -> None:
    # Host files the container's links name; inside, these paths are absent.
    (tmp_path / "secret.log").write_text("HOST SECRET\n")
    (tmp_path / "status.json").write_text('{"state": "HOST-FILE"}')
    pid = str(running.pid)
    made = pyguix(
        built.root, "container", "exec", pid, PYTHON, "-c", LINKS_OUT, str(tmp_path)
    )
    assert made.returncode == 0, made.stderr
    try:
        for name in ("evil", "up"):
            log = pyguix(built.root, "container", "logs", pid, name)
            assert log.returncode == 1 and "HOST SECRET" not in log.stdout
            assert log.stderr.startswith(f"error: container '{pid}' has no log")
        listed = pyguix(built.root, "container", "list")
        assert listed.returncode == 0 and "HOST-FILE" not in listed.stdout
    finally:
        restored = pyguix(
            built.root, "container", "exec", pid, PYTHON, "-c", LINKS_REMOVED
        )
    assert restored.returncode == 0, restored.stderr
    assert f"{pid}  " in pyguix(built.root, "container", "list").stdout


def test_sigterm_stops_everything_with_status_0(running: Running) -> None:
    began = time.monotonic()
    running.process.send_signal(signal.SIGTERM)
    status = running.process.wait(timeout=5)
    elapsed = time.monotonic() - began

    assert status == 0, (running.work / "stderr").read_text()
    assert elapsed < 5
    assert "all services stopped" in (running.work / "stderr").read_text()
    assert processes_in(running.pid_ns) == []
    assert mountinfo() == running.mounts_before
    assert os.listdir(running.work / "tmp") == []
    print(f"stop: {elapsed:.2f}s")


# ---------------------------------------------------------------------------
# Other systems


def test_failing_boot_returns_its_status(built: Built, tmp_path: Path) -> None:
    os_file = tmp_path / "failing.py"
    os_file.write_text(FAILING_OS.format(example=str(EXAMPLE)))
    made = pyguix(built.root, "system", "container", str(os_file))
    assert made.returncode == 0, made.stderr

    mounts_before = mountinfo()
    done = subprocess.run(
        [str(built.root) + made.stdout.strip()],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 7, done.stderr
    assert mountinfo() == mounts_before


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.skipif(not port_free(8080), reason="port 8080 is taken on this host")
def test_network_build_answers_from_the_host(built: Built, tmp_path: Path) -> None:
    made = pyguix(built.root, "system", "container", "--network", str(EXAMPLE))
    assert made.returncode == 0, made.stderr
    assert made.stdout != built.first.stdout

    container = start(str(built.root) + made.stdout.strip(), tmp_path)
    try:
        body = ""
        deadline = time.monotonic() + 10
        while not body and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(
                    "http://127.0.0.1:8080/health", timeout=2
                ) as r:
                    body = r.read().decode()
            except OSError:
                time.sleep(0.1)
        assert body == "ok\n"
        stopped = pyguix(built.root, "container", "stop", str(container.pid))
        assert stopped.returncode == 0, stopped.stderr
        assert f"container {container.pid} stopped" in stopped.stderr
        assert container.process.wait(timeout=5) == 0
    finally:
        stop(container)
    assert processes_in(container.pid_ns) == []


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        pytest.param(
            "--share={d}=/proc",
            "run-container: error: cannot map '{d}' onto '/proc', which the "
            "container runtime mounts itself",
            id="proc",
        ),
        pytest.param(
            "--expose={d}=/srv/fixtures/",
            "run-container: error: two mappings onto '/srv/fixtures'",
            id="baked-target",
        ),
    ],
)
def test_script_refuses_run_time_mappings_it_cannot_honour(
    built: Built, tmp_path: Path, option: str, expected: str
) -> None:
    done = subprocess.run(
        [built.physical, option.format(d=tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.splitlines()[0] == expected.format(d=tmp_path)
    assert done.stderr.splitlines()[1].startswith("hint: ")
