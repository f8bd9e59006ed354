"""``pyguix system`` and ``pyguix container`` through the command line: bad
OS files and OS expressions give one error line, ``-e`` gives what the
equivalent file gives, ``--derivation`` and ``--dry-run`` build nothing, ``system build`` prints a system directory, mappings change the
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

PROJECT = Path(__file__).resolve().parents[2]
EXAMPLE = PROJECT / "fixtures" / "os.py"
STORE_DIR = "/pyguix/store"

needs_namespaces = pytest.mark.skipif(
    namespaces_unavailable_reason() is not None,
    reason=f"no namespaces here: {namespaces_unavailable_reason()}",
)


def pyguix(
    root: Path, *arguments: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``pyguix`` on a chroot store under ``root``, in ``cwd``; ``-P``
    keeps the interpreter from putting ``cwd`` in the module search path,
    as the installed ``pyguix`` script does not either."""
    command = [sys.executable, "-P", "-m", "pyguix", "--root", str(root)]
    command += ["--store-dir", STORE_DIR, "--state-dir", "/var/pyguix", *arguments]
    return subprocess.run(
        command, capture_output=True, text=True, check=False, timeout=120, cwd=cwd
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
    for action in ("build", "container"):
        usage = pyguix(root, "system", action, "--help").stdout
        assert "[FILE]" in usage and "--expression EXPR" in usage
        assert "--load-path DIR" in usage


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


OS_HEADER = """
from system.accounts import UserAccount
from system.base import etc_service_type
from system.init_services import InitService, init_service_type
from system.operating_system import OperatingSystem
from system.servers import http_server_service_type, log_collector_service_type
from system.services import service, service_extension, service_type, simple_service
"""

BOOM = """service_type(
    "boom", [service_extension(etc_service_type, lambda v: 1 / 0)], default_value=1
)"""


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            "import sys\nsys.exit(0)",
            "loading operating system file '{file}' failed at line 11: SystemExit: 0",
            id="sys-exit-0",
        ),
        pytest.param(
            "exit(3)",
            "loading operating system file '{file}' failed at line 10: SystemExit: 3",
            id="exit-3",
        ),
        pytest.param(
            "services = [service(log_collector_service_type), 'junk']",
            "a str ('junk') in the services is not a service",
            id="non-service",
        ),
        pytest.param(
            "services = [service(http_server_service_type, 'notaconfig')]",
            "service 'http-server' failed to extend 'init': its extension function "
            "raised AttributeError: 'str' object has no attribute 'root'",
            id="wrong-value-type",
        ),
        pytest.param(
            "services = [simple_service('s', init_service_type, 'notalist')]",
            "simple service 's' extends 'init' with a str ('notalist'), not a list",
            id="simple-service-non-list",
        ),
        pytest.param(
            f"services = [service({BOOM})]",
            "service 'boom' failed to extend 'etc': its extension function raised "
            "ZeroDivisionError: division by zero",
            id="extension-raises",
        ),
        pytest.param(
            "users = [UserAccount('alice'), UserAccount('alice', home_directory='/a')]",
            "user 'alice' is declared more than once",
            id="duplicate-user",
        ),
        pytest.param(
            "users = [UserAccount('ev:il')]",
            "invalid user name 'ev:il'",
            id="colon-in-name",
        ),
        pytest.param(
            "users = [UserAccount('rel', home_directory='relhome')]",
            "home directory 'relhome' of user 'rel' is not absolute",
            id="relative-home",
        ),
        pytest.param(
            "host_name = 'a b/c'",
            "invalid host name 'a b/c'",
            id="host-name",
        ),
        pytest.param(
            "services = [simple_service('x', init_service_type, [InitService("
            "provision=('x',), command=('/bin/true',), user='nobodyknows')])]",
            "init service 'x' runs as user 'nobodyknows', which no account declares",
            id="init-user",
        ),
    ],
)
def test_os_file_mistakes_are_one_error_and_a_hint(
    root: Path, tmp_path: Path, body: str, expected: str
) -> None:
    file = tmp_path / "os.py"
    fields = "host_name=host_name, users=users, services=services"
    file.write_text(
        f"{OS_HEADER}\nhost_name, users, services = 'box', [], []\n{body}\n"
        f"operating_system = OperatingSystem({fields})\n"
    )
    done = pyguix(root, "system", "container", "-d", str(file))

    assert done.returncode == 1, done.stdout
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert lines[0].startswith("error: " + expected.format(file=file))
    assert len(lines) == 2 and lines[1].startswith("hint: ")


@pytest.mark.parametrize("expression", ["exit()", "__import__('sys').exit(0)"])
def test_sys_exit_in_an_expression_is_an_error(root: Path, expression: str) -> None:
    done = pyguix(root, "system", "build", "-d", "-e", expression)

    assert done.returncode == 1
    assert done.stdout == ""
    code = "None" if expression == "exit()" else "0"
    assert done.stderr.splitlines()[0] == (
        f"error: evaluating expression '{expression}' failed: SystemExit: {code}"
    )


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        pytest.param(
            ["--share", "{d}=/proc"],
            "cannot map '{d}' onto '/proc': the container runtime mounts '/proc' itself",
            id="proc",
        ),
        pytest.param(
            ["--share", "{d}=/"],
            "cannot map '{d}' onto '/': the container's root is a fresh tmpfs",
            id="root",
        ),
        pytest.param(
            ["--expose", f"{{d}}={STORE_DIR}"],
            f"cannot map '{{d}}' onto '{STORE_DIR}': the store '{STORE_DIR}' is mapped "
            "read-only by the container itself",
            id="store",
        ),
        pytest.param(
            ["--share", "{d}=/e", "--expose", "{d}/x=/e/"],
            "'{d}/x' and '{d}' are both mapped onto '/e'",
            id="same-target",
        ),
        pytest.param(
            ["--run", "--expose", "{d}=/srv/fixtures"],
            f"'{EXAMPLE.parent}' and '{{d}}' are both mapped onto '/srv/fixtures'",
            id="run-time-onto-the-files-mapping",
        ),
    ],
)
def test_mappings_a_container_cannot_honour_are_refused(
    root: Path, tmp_path: Path, options: list[str], expected: str
) -> None:
    arguments = [option.format(d=tmp_path) for option in options]
    done = pyguix(root, "system", "container", "-d", *arguments, str(EXAMPLE))

    assert done.returncode == 1 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert lines[0] == "error: " + expected.format(d=tmp_path)
    assert lines[1].startswith("hint: ")


@needs_namespaces
def test_relative_share_source_is_resolved_against_the_current_directory(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    scripts = []
    for name in ("one", "two"):
        (tmp_path / name / "data").mkdir(parents=True)
        done = pyguix(
            root,
            "system",
            "container",
            "--share",
            "data=/data",
            str(EXAMPLE),
            cwd=tmp_path / name,
        )
        assert done.returncode == 0, done.stderr
        scripts.append(Path(str(root) + done.stdout.strip()).read_text())

    # The same options from another directory are another script.
    assert f"['{tmp_path / 'one' / 'data'}', '/data', 'none'" in scripts[0]
    assert f"['{tmp_path / 'two' / 'data'}', '/data', 'none'" in scripts[1]


EXPOSE_FIXTURES = f"{EXAMPLE.parent}=/srv/fixtures"
"""The mapping the example file defines, as an ``--expose`` option."""


def derivation_of(root: Path, *arguments: str, cwd: Path = PROJECT) -> str:
    done = pyguix(root, "system", *arguments, "-d", cwd=cwd)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1
    return done.stdout.strip()


def test_module_expression_gives_the_files_script(root: Path) -> None:
    from_file = derivation_of(root, "container", str(EXAMPLE))
    from_expression = derivation_of(
        root,
        "container",
        "--expose",
        EXPOSE_FIXTURES,
        "-e",
        "fixtures.os:operating_system",
    )
    assert from_expression == from_file
    assert from_file.endswith("-run-container.drv")

    # An expression gives no mappings: without --expose the script differs.
    bare = derivation_of(root, "container", "-e", "fixtures.os:operating_system")
    assert bare != from_file


TINY_MODULE = """
from system.file_systems import FileSystem
from system.operating_system import OperatingSystem

operating_system = OperatingSystem(
    host_name="tiny",
    file_systems=[FileSystem(device="none", mount_point="/", type="tmpfs")],
)
"""

TINY_EXPRESSION = (
    'OperatingSystem(host_name="tiny", '
    'file_systems=[FileSystem(device="none", mount_point="/", type="tmpfs")])'
)


@pytest.mark.parametrize("action", ["container", "build"])
def test_every_form_of_expression_gives_the_files_derivation(
    root: Path, tmp_path: Path, action: str
) -> None:
    (tmp_path / "modules").mkdir()
    (tmp_path / "modules" / "tiny_os.py").write_text(TINY_MODULE)
    (tmp_path / "here_os.py").write_text(TINY_MODULE)
    (tmp_path / "tiny.py").write_text(TINY_MODULE)
    elsewhere = tmp_path / "modules"

    expected = derivation_of(root, action, str(tmp_path / "tiny.py"))
    forms = [
        ("-e", TINY_EXPRESSION),
        ("-e", f"replace({TINY_EXPRESSION}, timezone='Etc/UTC')"),
        ("-L", str(tmp_path / "modules"), "-e", "tiny_os:operating_system"),
        ("-L", "modules", "-e", "tiny_os : operating_system"),
        ("-e", "here_os:operating_system"),
    ]
    for form in forms if action == "container" else forms[:1]:
        assert derivation_of(root, action, *form, cwd=tmp_path) == expected, form
    assert derivation_of(root, action, *forms[0], cwd=elsewhere) == expected

    other = derivation_of(
        root, action, "-e", f"replace({TINY_EXPRESSION}, host_name='b')"
    )
    assert other != expected


def test_an_expression_is_evaluated_again_only_when_its_module_changes(
    root: Path, tmp_path: Path
) -> None:
    module = tmp_path / "cached_os.py"
    module.write_text(TINY_MODULE)
    arguments = ["-L", str(tmp_path), "-e", "cached_os:operating_system", "-d"]

    def evaluate() -> tuple[str, bool]:
        done = pyguix(root, "-v", "system", "container", *arguments)
        assert done.returncode == 0, done.stderr
        hit = "evaluation of 'cached_os:operating_system' from cache"
        return done.stdout.strip(), hit in done.stderr

    first, first_cached = evaluate()
    again, again_cached = evaluate()
    assert (first_cached, again_cached) == (False, True) and again == first

    module.write_text(TINY_MODULE.replace('"tiny"', '"changed"'))
    changed, changed_cached = evaluate()
    assert not changed_cached and changed != first


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        (
            "fixtures.os:mappings",
            "expression 'fixtures.os:mappings' gives a tuple, not an operating system",
        ),
        (
            "no_such_module_here:os",
            "importing module 'no_such_module_here' of expression "
            "'no_such_module_here:os' failed: ModuleNotFoundError",
        ),
        (
            "fixtures.os:1/0",
            "evaluating expression 'fixtures.os:1/0' failed: "
            "ZeroDivisionError: division by zero",
        ),
        (
            "OperatingSystem(host_name=",
            "expression 'OperatingSystem(host_name=' is not valid Python",
        ),
        (
            "OperatingSystem(host_name='a', services=[service(http_server_service_type)])",
            "evaluating expression 'OperatingSystem(host_name='a', "
            "services=[service(http_server_service_type)])' failed: "
            "no value specified for service of type 'http-server'",
        ),
        ("no_such_name", "failed: NameError: name 'no_such_name' is not defined"),
        ("lambda: 1", "expression 'lambda: 1' gives a function, not an operating"),
    ],
)
def test_bad_expression_is_one_error_line(
    root: Path, expression: str, expected: str
) -> None:
    done = pyguix(root, "system", "container", "-e", expression, cwd=PROJECT)

    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert lines[0].startswith("error: ") and expected in lines[0]
    assert len([line for line in lines if line.startswith("error:")]) == 1
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ((), "no operating system given: give an OS FILE or -e EXPR"),
        (
            (str(EXAMPLE), "-e", "fixtures.os:operating_system"),
            f"both FILE '{EXAMPLE}' and -e 'fixtures.os:operating_system' given",
        ),
    ],
)
@pytest.mark.parametrize("action", ["container", "build"])
def test_exactly_one_of_file_and_expression(
    root: Path, action: str, arguments: tuple[str, ...], expected: str
) -> None:
    done = pyguix(root, "system", action, *arguments)
    assert done.returncode == 2
    assert expected in done.stderr
    assert done.stdout == ""


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
def test_expression_builds_the_files_script(root: Path) -> None:
    from_file = pyguix(root, "system", "container", str(EXAMPLE))
    from_expression = pyguix(
        root,
        "system",
        "container",
        "--expose",
        EXPOSE_FIXTURES,
        "-e",
        "fixtures.os:operating_system",
        cwd=PROJECT,
    )
    assert from_file.returncode == 0, from_file.stderr
    assert from_expression.returncode == 0, from_expression.stderr
    assert from_file.stdout.strip().endswith("-run-container")
    assert from_expression.stdout == from_file.stdout


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
    assert (
        f"error: process '{me}' is not in a container: its user, mount and PID "
        "namespaces are this command's own\n"
        "hint: give the PID that 'pyguix container list' shows\n"
    ) == not_a_container(root, "exec", me, "/bin/true")
    for name in ("../../tmp/x", "a/b", "..", ".", ""):
        assert not_a_container(root, "logs", me, name).startswith(
            f"error: invalid service name '{name}': a name has no '/'"
        )

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
