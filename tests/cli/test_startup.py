"""What a command imports on its fast paths: ``pyguix --version``, a no-op
``pyguix build DRV`` and a warm ``pyguix system container FILE`` (answered
by the evaluation cache) load neither the graph library, the live display,
the sandbox, the operating-system layer nor the NAR code.

Each command runs in a new interpreter that writes ``sys.modules`` to a
file when it exits.  ``-X importtime`` would miss the command modules:
they are loaded with :func:`importlib.import_module`, which that report
does not see.  Timings are never asserted; imports are what a change
breaks.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from builders.linux import namespaces_unavailable_reason

EXAMPLE = Path(__file__).resolve().parents[2] / "fixtures" / "os.py"

RUN = """
import atexit
import sys

def dump():
    with open({out!r}, "w") as file:
        file.write("\\n".join(sorted(sys.modules)))

atexit.register(dump)
from pyguix.cli import main
main()
"""
"""Run the command line, writing the loaded modules' names when it exits."""

NEVER = (
    "networkx",
    "rich",
    "builders.sandbox",
    "builders.build",
    "derivations.graph",
    "derivations.gexp",
    "derivations.lowering",
    "system",
    "store.nar",
    "store.ingest",
    "store.canonical",
    "click.shell_completion",
)
"""Packages and modules no fast path loads."""


def modules_of(tmp_path: Path, *arguments: str) -> tuple[set[str], str]:
    """Run ``pyguix ARGUMENTS`` with a chroot store under ``tmp_path``;
    return the modules it loaded and its output."""
    out = tmp_path / "modules.txt"
    command = [sys.executable, "-c", RUN.format(out=str(out)), *arguments]
    done = subprocess.run(
        command, capture_output=True, text=True, check=False, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return set(out.read_text().split()), done.stdout


def offending(modules: set[str], names: tuple[str, ...] = NEVER) -> list[str]:
    """Return the loaded ``modules`` that are, or are under, one of ``names``."""
    return sorted(
        module
        for module in modules
        if any(module == name or module.startswith(name + ".") for name in names)
    )


def test_version_loads_no_store_and_no_cache(tmp_path: Path) -> None:
    modules, output = modules_of(tmp_path, "--version")

    assert output.strip() == "pyguix, version 0.1.0"
    assert "pyguix.cli" in modules, "the module list is not the command's"
    heavy = NEVER + ("store.local", "store.database", "msgpack", "sqlite3")
    assert offending(modules, heavy) == []


needs_namespaces = pytest.mark.skipif(
    namespaces_unavailable_reason() is not None,
    reason=f"no namespaces here: {namespaces_unavailable_reason()}",
)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], str]:
    """Global options of a store where the example's container script is
    built, and the script's derivation."""
    root = tmp_path_factory.mktemp("startup") / "root"
    options = ["--root", str(root)]
    scratch = tmp_path_factory.mktemp("scratch")
    modules_of(scratch, *options, "system", "container", str(EXAMPLE))
    _, drv = modules_of(scratch, *options, "system", "container", "-d", str(EXAMPLE))
    return options, drv.strip()


@needs_namespaces
def test_noop_build_of_a_valid_derivation_loads_no_builder(
    built: tuple[list[str], str], tmp_path: Path
) -> None:
    options, drv = built
    modules, output = modules_of(tmp_path, *options, "build", drv)

    assert output.strip().endswith("-run-container")
    assert "pyguix.commands.build" in modules
    assert offending(modules) == []


@needs_namespaces
def test_warm_container_loads_no_os_layer(
    built: tuple[list[str], str], tmp_path: Path
) -> None:
    options, _ = built
    modules, output = modules_of(
        tmp_path, *options, "system", "container", str(EXAMPLE)
    )

    assert output.strip().endswith("-run-container")
    assert "derivations.lowering_cache" in modules
    assert offending(modules) == []
