"""Boot the system directory of the containerized example in fresh
namespaces (user, mount, UTS, PID, network) with ``unshare``, without the
container runtime: the boot program cleans up, activates and starts the
init, whose services run.

The store lives under /dev/shm, not /tmp: the boot empties /tmp, /run and
/var/run, so the test mounts tmpfs on /etc, /run, /home, /var and /tmp (the
containerized system no longer mounts /dev/shm itself)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from derivations.monad import run_with_store
from store.local import LocalStore
from system.file_systems import CONTAINER_FILE_SYSTEMS
from system.linux_container import containerized_operating_system, with_store_mapping
from system.operating_system import load_operating_system, operating_system_derivation

EXAMPLE = Path(__file__).resolve().parents[2] / "fixtures" / "os.py"

DRIVER = r"""
import fcntl, json, os, signal, socket, struct, subprocess, sys, time, urllib.request

system = sys.argv[1]
for directory in ("/etc", "/run", "/home", "/var", "/tmp"):
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", directory], check=True)
with socket.socket() as sock:
    request = struct.pack("16sH14x", b"lo", 0)
    flags = struct.unpack("16sH14x", fcntl.ioctl(sock, 0x8913, request))[1]
    fcntl.ioctl(sock, 0x8914, struct.pack("16sH14x", b"lo", flags | 1))

init = subprocess.Popen([system + "/boot"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
body, deadline = None, time.monotonic() + 20
while body is None and time.monotonic() < deadline:
    try:
        body = urllib.request.urlopen("http://127.0.0.1:8080/health", timeout=1).read().decode()
    except OSError:
        time.sleep(0.2)
time.sleep(1.5)

def read(path):
    try:
        with open(path) as file:
            return file.read()
    except OSError as error:
        return f"<{error}>"

result = {
    "http": body,
    "passwd": read("/etc/passwd"),
    "hosts": read("/etc/hosts"),
    "hosts_is_link": os.path.islink("/etc/hosts"),
    "hostname_link": os.readlink("/etc/hostname") if os.path.islink("/etc/hostname") else None,
    "current_system": os.readlink("/run/current-system"),
    "hostname": socket.gethostname(),
    "booted": read("/var/lib/example/booted"),
    "heartbeat": read("/var/log/heartbeat.log"),
    "alice_home": os.path.isdir("/home/alice"),
    "var_cache_mounted": " /var/cache tmpfs " in read("/proc/mounts"),
    "init_log": read("/var/log/init.log"),
    "httpd_log": read("/var/log/httpd.log"),
    "init_command": read(f"/proc/{init.pid}/cmdline").split("\0")[3:5],
}
init.send_signal(signal.SIGTERM)
result["init_status"] = init.wait(timeout=10)
print(json.dumps(result))
"""


def user_namespaces_work() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "--user", "--map-root-user", "true"], capture_output=True
    )
    return probe.returncode == 0


def shm_usable() -> bool:
    if not os.access("/dev/shm", os.W_OK):
        return False
    return not os.statvfs("/dev/shm").f_flag & os.ST_NOEXEC


pytestmark = pytest.mark.skipif(
    not user_namespaces_work() or not shm_usable(),
    reason="needs unshare, user namespaces and a writable, executable /dev/shm",
)


@pytest.fixture
def shm_store() -> Iterator[LocalStore]:
    base = tempfile.mkdtemp(prefix="pyguix-boot-test-", dir="/dev/shm")
    store = LocalStore(os.path.join(base, "store"), os.path.join(base, "state"))
    try:
        yield store
    finally:
        store.close()
        for root, dirs, _ in os.walk(base):
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o755)
        shutil.rmtree(base)


def test_example_system_boots(shm_store: LocalStore) -> None:
    scheduler = pytest.importorskip("builders.scheduler")
    example, mappings = load_operating_system(EXAMPLE)
    os_ = containerized_operating_system(
        example,
        with_store_mapping(mappings, shm_store.store_dir),
        extra_file_systems=CONTAINER_FILE_SYSTEMS,
        store_dir=shm_store.store_dir,
    )
    drv = run_with_store(
        shm_store, operating_system_derivation(os_), system="x86_64-linux"
    )
    scheduler.realise(shm_store, [drv.path], jobs=1)
    system = drv.output_path("out")

    command = [
        "unshare",
        "--user",
        "--map-root-user",
        "--mount",
        "--uts",
        "--pid",
        "--net",
    ]
    command += ["--fork", "--mount-proc", sys.executable, "-c", DRIVER, system]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])

    assert result["http"] == "ok\n", (result["init_log"], result["httpd_log"])
    assert result["current_system"] == system
    assert result["hostname"] == "pyguix-example"
    assert "alice:x:1000:100:Alice:/home/alice:/bin/sh" in result["passwd"]
    assert result["alice_home"]
    assert result["hosts"].startswith("127.0.0.1 localhost pyguix-example")
    assert (
        not result["hosts_is_link"]
        and result["hostname_link"] == "/etc/static/hostname"
    )
    assert result["booted"].startswith("booted at ")
    assert result["heartbeat"].startswith("heartbeat 1\n")
    assert result["var_cache_mounted"]
    assert result["init_command"][0] == "--spec" and result["init_command"][1].endswith(
        "-services.json"
    )
    assert result["init_status"] == 0
