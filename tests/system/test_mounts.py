"""Tests of the init services mounting the file systems not needed at boot,
and of their mount program, run in a user and mount namespace."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from derivations.file_like import ProgramFile
from derivations.gexp import expand_gexp
from system.file_systems import FileSystem, file_system_to_spec
from system.init_services import init_service_type
from system.mounts import (
    file_system_service_type,
    file_systems_to_mount,
    mount_program,
)
from system.services import fold_services, instantiate_missing_services, service

CACHE = FileSystem("tmpfs", "/var/cache", "tmpfs", create_mount_point=True)
NESTED = FileSystem("tmpfs", "/var/cache/big", "tmpfs", create_mount_point=True)


def test_which_file_systems_get_a_service() -> None:
    boot = FileSystem("tmpfs", "/boot-time", "tmpfs", needed_for_boot=True)
    root = FileSystem("/dev/sda1", "/", "ext4")
    off = FileSystem("tmpfs", "/off", "tmpfs", mount=False)
    assert file_systems_to_mount([root, boot, CACHE, off, NESTED]) == (CACHE, NESTED)


def test_services_are_named_and_ordered_by_mount_point() -> None:
    services = instantiate_missing_services(
        [service(file_system_service_type, (NESTED, CACHE))]
    )
    folded = fold_services(services, init_service_type).value
    assert [svc.name for svc in folded] == [
        "file-system-var-cache",
        "file-system-var-cache-big",
    ]
    nested = folded[1]
    assert nested.requirement == ("file-system-var-cache",) and nested.one_shot
    assert json.loads(nested.command[1]) == file_system_to_spec(NESTED)


def run_mount(tmp_path: Path, fs: FileSystem) -> subprocess.CompletedProcess[str]:
    """Run the mount program's code in a new user and mount namespace, then
    print whether the mount point is a mount."""
    program = mount_program()
    assert isinstance(program, ProgramFile)
    code = "import os\nimport sys\n" + expand_gexp(program.gexp, lambda item: "")
    script = tmp_path / "mount.py"
    script.write_text(code)
    spec = json.dumps(file_system_to_spec(fs))
    shell = f"{sys.executable} {script} '{spec}' && grep -c \" {fs.mount_point} \" /proc/self/mounts"
    return subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", shell],
        capture_output=True,
        text=True,
        check=False,
    )


needs_unshare = pytest.mark.skipif(
    shutil.which("unshare") is None
    or subprocess.run(
        ["unshare", "--user", "--map-root-user", "true"], check=False
    ).returncode
    != 0,
    reason="needs unshare and user namespaces",
)


@needs_unshare
def test_mount_program_mounts_and_creates_mount_point(tmp_path: Path) -> None:
    target = tmp_path / "made" / "here"
    done = run_mount(
        tmp_path,
        FileSystem(
            "tmpfs",
            str(target),
            "tmpfs",
            flags=("no-exec",),
            options="size=1m",
            create_mount_point=True,
        ),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"mounted 'tmpfs' on '{target}' (tmpfs)", "1"]
    assert target.is_dir()


@needs_unshare
def test_mount_failure_tolerated_only_when_allowed(tmp_path: Path) -> None:
    bad = FileSystem("/nonexistent-device", str(tmp_path), "ext4")
    done = run_mount(tmp_path, bad)
    assert (
        done.returncode == 1
        and "error: cannot mount '/nonexistent-device'" in done.stderr
    )
    tolerated = FileSystem(
        "/nonexistent-device", str(tmp_path), "ext4", mount_may_fail=True
    )
    done = run_mount(tmp_path, tolerated)
    assert "warning: cannot mount" in done.stderr
    assert done.stdout.strip() == "0"
