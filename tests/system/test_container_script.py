"""Tests of container_script: what the run-container script embeds (file
system specs in order, the store mapping first, the network choice; not
the store's root), the modules it carries, and its option parsing, on
scripts really built in a chroot store.  Booting is tested end to end in
test_system_container_e2e.py."""

from __future__ import annotations

import ast
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from builders.linux import namespaces_unavailable_reason
from derivations.monad import run_with_store
from store.local import LocalStore
from system.container_script import RUNTIME_MODULES, SCRIPT_NAME, container_script
from system.file_systems import FileSystemMapping
from system.operating_system import OperatingSystem, load_operating_system

pytestmark = pytest.mark.skipif(
    namespaces_unavailable_reason() is not None,
    reason=f"builds need namespaces: {namespaces_unavailable_reason()}",
)

EXAMPLE = Path(__file__).resolve().parents[2] / "fixtures" / "os.py"
STORE_DIR = "/pyguix/store"


@pytest.fixture(scope="module")
def chroot_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStore]:
    root = tmp_path_factory.mktemp("container-script") / "root"
    store = LocalStore(STORE_DIR, "/var/pyguix", root=str(root))
    yield store
    store.close()


@pytest.fixture(scope="module")
def example() -> tuple[OperatingSystem, tuple[Any, ...]]:
    return load_operating_system(EXAMPLE)


def build_script(store: LocalStore, mvalue: Any) -> str:
    """Build the script of ``mvalue``; return its physical path."""
    from builders.scheduler import realise

    drv = run_with_store(store, mvalue)
    realise(store, [drv.path], jobs=2)
    path = drv.output_path("out")
    assert path.startswith(STORE_DIR + "/") and path.endswith("-" + SCRIPT_NAME)
    return store.physical(path)


@pytest.fixture(scope="module")
def script(
    chroot_store: LocalStore, example: tuple[OperatingSystem, tuple[Any, ...]]
) -> str:
    os_, mappings = example
    extra = FileSystemMapping("/srv/data", "/data", writable=True)
    return build_script(chroot_store, container_script(os_, [*mappings, extra]))


def constant(text: str, name: str) -> Any:
    """Return the value assigned to ``name`` at the top of the script."""
    for node in ast.parse(text).body:
        if (
            isinstance(node, ast.Assign)
            and getattr(node.targets[0], "id", None) == name
        ):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{name} not in the script")


def test_script_embeds_boot_specs_store_first(script: str) -> None:
    text = Path(script).read_text()
    specs = constant(text, "SPECS")
    targets = [spec[1] for spec in specs]

    assert targets == [
        STORE_DIR,
        "/srv/fixtures",
        "/data",
        "/dev/pts",
        "/dev/shm",
        "/dev/mqueue",
    ]
    assert specs[0][:4] == [STORE_DIR, STORE_DIR, "none", ["bind-mount", "read-only"]]
    assert specs[1][3] == ["bind-mount", "read-only"]
    assert specs[2][:4] == ["/srv/data", "/data", "none", ["bind-mount"]]
    assert specs[3][2:5] == [
        "devpts",
        ["no-exec", "no-suid"],
        "newinstance,ptmxmode=0666,mode=620",
    ]
    assert constant(text, "HOST_NAME") == "pyguix-example"
    assert constant(text, "SHARED_NETWORK") is False
    assert constant(text, "STORE_DIR") == STORE_DIR


def test_script_boots_the_containerized_system(
    script: str, chroot_store: LocalStore
) -> None:
    text = Path(script).read_text()
    system = constant(text, "SYSTEM")
    physical = Path(chroot_store.physical(system))

    assert sorted(p.name for p in physical.iterdir()) == [
        "activate",
        "boot",
        "etc",
        "kernel",
        "locale",
        "profile",
        "services.json",
    ]
    link = os.readlink(physical / "services.json")
    services = Path(chroot_store.physical(link)).read_text()
    assert "mingetty" not in services and "httpd" in services


def test_script_finds_the_store_root_from_its_own_path(
    script: str, chroot_store: LocalStore, tmp_path: Path
) -> None:
    # The root is not baked in (stores under two roots give the same
    # script); run through a link elsewhere, it still finds its modules.
    assert chroot_store.root and chroot_store.root not in Path(script).read_text()
    link = tmp_path / "run-container"
    link.symlink_to(script)
    env = {k: v for k, v in os.environ.items() if k != "PYGUIX_ROOT"}

    done = subprocess.run(
        [str(link), "-h"], capture_output=True, text=True, env=env, check=False
    )

    assert done.returncode == 0, done.stderr


def test_script_carries_only_the_runtime_closure(script: str) -> None:
    first = Path(script).read_text().splitlines()[4]
    assert first.startswith("sys.path.insert(0, '" + STORE_DIR)
    tree = (
        Path(script).parent
        / ast.literal_eval(first[len("sys.path.insert(0, ") : -1]).rsplit("/", 1)[1]
    )

    modules = sorted(str(path.relative_to(tree)) for path in tree.rglob("*.py"))
    assert modules == [
        "builders/__init__.py",
        "builders/bootstrap.py",
        "builders/container.py",
        "builders/linux.py",
        "store/__init__.py",
        "store/errors.py",
    ]
    assert set(RUNTIME_MODULES) <= {m[:-3].replace("/", ".") for m in modules}


def test_shared_network_makes_another_script(
    chroot_store: LocalStore,
    example: tuple[OperatingSystem, tuple[Any, ...]],
    script: str,
) -> None:
    os_, mappings = example
    shared = build_script(chroot_store, container_script(os_, mappings, True))
    text = Path(shared).read_text()

    assert shared != script
    assert constant(text, "SHARED_NETWORK") is True
    targets = [spec[1] for spec in constant(text, "SPECS")]
    assert targets[:5] == [
        "/etc/resolv.conf",
        "/etc/nsswitch.conf",
        "/etc/services",
        "/etc/hosts",
        STORE_DIR,
    ]


def test_help_exits_0(script: str) -> None:
    done = subprocess.run([script, "-h"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    for option in ("--share", "--expose", "--network", "--pid-file"):
        assert option in done.stdout


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--share"], "expected one argument"),
        (["--expose", "=/x"], "invalid mapping '=/x'"),
        (["--share", "/tmp=relative"], "invalid mapping '/tmp=relative'"),
        (["--share", "/tmp"], "mounted writable at '/tmp', which the boot empties"),
        (["--share", "/etc=/run/x"], "at '/run/x', which the boot empties"),
    ],
)
def test_bad_options_exit_1(script: str, arguments: list[str], expected: str) -> None:
    done = subprocess.run(
        [script, *arguments], capture_output=True, text=True, check=False
    )
    assert done.returncode == 1
    assert expected in done.stderr


def test_wrong_root_at_run_time_fails_cleanly(script: str, tmp_path: Path) -> None:
    # The modules are looked up under PYGUIX_ROOT: an empty root hides them.
    env = {**os.environ, "PYGUIX_ROOT": str(tmp_path)}
    done = subprocess.run(
        [script, "-h"], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 1
    assert "cannot find the container runtime" in done.stderr
    assert "PYGUIX_ROOT" in done.stderr and "Traceback" not in done.stderr
