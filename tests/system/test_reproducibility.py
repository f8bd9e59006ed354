"""The example system (fixtures/os.py) is reproducible as a whole.

Built in two fresh stores under different physical roots with the same
store directory, its system directory and run-container script have the
same derivations, the same output paths and the same NAR hash for every
item of their closures.  Rebuilt with ``--check``, every derivation of the
closure is bit-identical, from ``pyguix system container --check`` (which
checks the whole closure) and from ``pyguix build --check`` given every
``.drv`` of the closure.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from builders.linux import namespaces_unavailable_reason
from builders.scheduler import realise
from derivations.monad import run_with_store
from store.local import LocalStore
from system.container_script import container_script
from system.operating_system import load_operating_system, operating_system_derivation

pytestmark = pytest.mark.skipif(
    namespaces_unavailable_reason() is not None,
    reason=f"builds need namespaces: {namespaces_unavailable_reason()}",
)

EXAMPLE = Path(__file__).resolve().parents[2] / "fixtures" / "os.py"
STORE_DIR = "/pyguix/store"
STATE_DIR = "/var/pyguix"


class Built:
    """The example built in a fresh chroot store under ``root``."""

    def __init__(self, root: Path) -> None:
        self.store = LocalStore(STORE_DIR, STATE_DIR, root=str(root))
        os_, mappings = load_operating_system(EXAMPLE)
        system = run_with_store(self.store, operating_system_derivation(os_))
        script = run_with_store(self.store, container_script(os_, mappings))
        self.drvs = [system.path, script.path]
        self.outputs = [system.output_path(), script.output_path()]
        realise(self.store, self.drvs, jobs=2)

    def nar_hashes(self, roots: list[str]) -> dict[str, str]:
        """Return the NAR hash of every item of the closure of ``roots``."""
        hashes = {}
        for path in self.store.query_requisites(roots):
            info = self.store.query_path_info(path)
            assert info is not None, path
            hashes[path] = info.nar_hash.to_string("base32")
        return hashes


@pytest.fixture
def two_builds(tmp_path: Path) -> Iterator[tuple[Built, Built]]:
    first, second = Built(tmp_path / "a"), Built(tmp_path / "b")
    yield first, second
    first.store.close()
    second.store.close()


def test_two_stores_under_two_roots_build_the_same_system(
    two_builds: tuple[Built, Built],
) -> None:
    first, second = two_builds

    assert first.drvs == second.drvs and first.outputs == second.outputs
    assert first.store.physical(first.outputs[1]) != second.store.physical(
        second.outputs[1]
    )
    outputs = first.nar_hashes(first.outputs)
    assert outputs == second.nar_hashes(second.outputs)
    # The closure holds the packages, services, boot programs and modules.
    names = {path.split("-", 1)[1] for path in outputs}
    assert {"system", "run-container", "hello-1.0", "boot", "etc"} <= names
    assert len(outputs) >= 20
    derivations = first.nar_hashes(first.drvs)
    assert derivations == second.nar_hashes(second.drvs)
    assert sum(path.endswith(".drv") for path in derivations) >= 20


def pyguix(root: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pyguix", "--root", str(root)]
    command += ["--store-dir", STORE_DIR, "--state-dir", STATE_DIR, *arguments]
    return subprocess.run(
        command, capture_output=True, text=True, check=False, timeout=120
    )


def check_copies(root: Path) -> list[str]:
    """Return what a failed check left in the store: ``*-check`` items."""
    return [
        name for name in os.listdir(root / STORE_DIR[1:]) if name.endswith("-check")
    ]


def test_check_rebuilds_the_whole_closure_bit_identical(tmp_path: Path) -> None:
    root = tmp_path / "root"
    built = pyguix(root, "system", "container", str(EXAMPLE))
    assert built.returncode == 0, built.stderr
    script = built.stdout.strip()
    drv = pyguix(root, "system", "container", "--derivation", str(EXAMPLE))
    requisites = pyguix(root, "store", "query", "--requisites", drv.stdout.strip())
    drvs = [p for p in requisites.stdout.split() if p.endswith(".drv")]
    assert len(drvs) >= 20

    checked = pyguix(root, "system", "container", "--check", str(EXAMPLE))

    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.strip() == script
    summary = f"checked {len(drvs)} derivations: every rebuild is bit-identical"
    assert summary in checked.stderr
    assert check_copies(root) == []

    every = pyguix(root, "build", "--check", *drvs)

    assert every.returncode == 0, every.stderr
    assert len(every.stdout.split()) >= len(drvs) and script in every.stdout
    assert check_copies(root) == []
