"""``pyguix system`` and ``pyguix container`` through the command line: bad
OS files give one error line, ``--derivation`` and ``--dry-run`` build
nothing, ``system build`` prints a system directory, mappings change the
script, ``--run`` boots and exits with the container's status, and the
container commands refuse what is not a container.  Booting the example is
tested in tests/system/test_system_container_e2e.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from builders.linux import namespaces_unavailable_reason

EXAMPLE = Path(__file__).resolve().parents[2] / "fixtures" / "os.py"
STORE_DIR = "/pyguix/store"

needs_namespaces = pytest.mark.skipif(
    namespaces_unavailable_reason() is not None,
    reason=f"no namespaces here: {namespaces_unavailable_reason()}",
)


def pyguix(root: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pyguix", "--root", str(root)]
    command += ["--store-dir", STORE_DIR, "--state-dir", "/var/pyguix", *arguments]
    return subprocess.run(
        command, capture_output=True, text=True, check=False, timeout=120
    )


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("system-command") / "root"


def test_help_lists_the_commands(root: Path) -> None:
    done = pyguix(root, "--help")
    assert "system" in done.stdout and "container" in done.stdout
    sub = pyguix(root, "system", "container", "--help")
    for option in ("--share", "--expose", "--network", "--derivation", "--run"):
        assert option in sub.stdout


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, "operating system file '{file}' does not exist"),
        (
            "x = 1\n",
            "operating system file '{file}' does not define 'operating_system'",
        ),
        (
            "import os\n\nraise ValueError('no disk')\n",
            "loading operating system file '{file}' failed at line 3: "
            "ValueError: no disk",
        ),
        ("x = (\n", "operating system file '{file}' is not valid Python"),
    ],
)
def test_bad_os_file_is_one_error_line(
    root: Path, tmp_path: Path, text: str | None, expected: str
) -> None:
    file = tmp_path / "os.py"
    if text is not None:
        file.write_text(text)
    action = "build" if text and "ValueError" in text else "container"
    done = pyguix(root, "system", action, str(file))

    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert lines[0].startswith("error: " + expected.format(file=file))
    assert len([line for line in lines if line.startswith("error:")]) == 1
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("=/x", "error: invalid file system mapping '=/x'"),
        ("/srv=/tmp/x", "error: '/srv' would be mounted writable at '/tmp/x'"),
    ],
)
def test_invalid_mapping_is_refused(root: Path, spec: str, expected: str) -> None:
    done = pyguix(root, "system", "container", "--share", spec, str(EXAMPLE))
    assert done.returncode == 1
    assert expected in done.stderr


def test_derivation_and_dry_run_build_nothing(root: Path) -> None:
    drv = pyguix(root, "system", "container", "-d", str(EXAMPLE))
    assert drv.returncode == 0, drv.stderr
    path = drv.stdout.strip()
    assert path.startswith(STORE_DIR + "/") and path.endswith("-run-container.drv")
    assert drv.stdout.count("\n") == 1

    dry = pyguix(root, "system", "container", "-n", str(EXAMPLE))
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout == ""
    assert "derivations would be built" in dry.stderr
    assert path in dry.stderr
    script = Path(str(root) + path[: -len(".drv")])
    assert not any(script.parent.glob("*-run-container"))


@needs_namespaces
def test_system_build_prints_the_system_directory(root: Path, tmp_path: Path) -> None:
    link = tmp_path / "current"
    done = pyguix(root, "system", "build", "-r", str(link), str(EXAMPLE))
    assert done.returncode == 0, done.stderr
    system = done.stdout.strip()
    assert done.stdout.count("\n") == 1 and system.endswith("-system")

    entries = sorted(os.listdir(str(root) + system))
    assert {"boot", "activate", "etc", "profile", "locale", "kernel"} <= set(entries)
    assert "parameters" in entries  # a bare-metal system, unlike a container's
    assert os.readlink(link) == system


@needs_namespaces
def test_mappings_are_baked_into_the_script(root: Path, tmp_path: Path) -> None:
    plain = pyguix(root, "system", "container", str(EXAMPLE))
    shared = pyguix(
        root, "system", "container", "--share", f"{tmp_path}=/exchange", str(EXAMPLE)
    )
    assert plain.returncode == 0 and shared.returncode == 0, shared.stderr
    assert plain.stdout != shared.stdout
    text = Path(str(root) + shared.stdout.strip()).read_text()
    assert f"['{tmp_path}', '/exchange', 'none', ['bind-mount']" in text


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
        simple_service("broken-boot", boot_service_type, gexp("raise SystemExit(5)\\n")),
    ),
)
"""


@needs_namespaces
def test_run_boots_and_exits_with_the_container_status(
    root: Path, tmp_path: Path
) -> None:
    file = tmp_path / "failing.py"
    file.write_text(FAILING_OS.format(example=str(EXAMPLE)))
    (tmp_path / "share").mkdir()
    share = f"{tmp_path / 'share'}=/exchange"
    done = pyguix(root, "system", "container", "--run", "--share", share, str(file))

    assert done.returncode == 5, done.stderr
    assert done.stdout.strip().endswith("-run-container")
    assert "system container is running as PID" in done.stderr


def not_a_container(root: Path, *arguments: str) -> Any:
    done = pyguix(root, "container", *arguments)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    return done.stderr


def test_container_commands_refuse_other_processes(root: Path) -> None:
    me = str(os.getpid())
    assert "error: no process '999999999'" in not_a_container(
        root, "exec", "999999999", "/bin/true"
    )
    assert "is not the init of a pyguix system container" in not_a_container(
        root, "stop", me
    )
    assert "has no log '/var/log/init.log'" in not_a_container(root, "logs", me)

    usage = pyguix(root, "container", "exec", me)
    assert usage.returncode == 2 and "Missing argument" in usage.stderr


def test_container_list_prints_a_header(root: Path) -> None:
    done = pyguix(root, "container", "list")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].split() == [
        "PID",
        "HOST",
        "NAME",
        "UPTIME",
        "STATE",
        "SYSTEM",
    ]
    assert str(os.getpid()) not in done.stdout.split()
