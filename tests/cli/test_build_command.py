"""``pyguix build`` end to end: real builds through the command line, a Python
file of objects, roots, dry runs, failures, and two processes at once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from builders.bootstrap import interpreter_executable
from builders.linux import namespaces_unavailable_reason
from derivations.create import derivation
from derivations.derivation import Derivation
from pyguix.cli import cli
from store.local import LocalStore

pytestmark = pytest.mark.skipif(
    namespaces_unavailable_reason() is not None,
    reason=f"no namespaces here: {namespaces_unavailable_reason()}",
)

OBJECTS = """
from derivations.file_like import computed_file, plain_file
from derivations.gexp import gexp
from derivations.lowering import gexp_to_derivation

greeting = plain_file("greeting", "hello\\n")
base = computed_file("base", gexp("open($out, 'w').write(open($g).read())", g=greeting))
top = gexp_to_derivation(
    "top", gexp("os.mkdir($out)\\nopen($out + '/x', 'w').write($b)\\nprint('top!')", b=base)
)
broken = computed_file("broken", gexp("print('about to fail')\\nsys.exit(4)"))

def made_later():
    return computed_file("later", gexp("open($out, 'w').write('later')"))

pyguix_build_targets = ["top", "greeting"]
"""


class Pyguix:
    """Run ``pyguix`` on a store under ``tmp_path``."""

    def __init__(self, tmp_path: Path) -> None:
        self.store_dir = str(tmp_path / "store")
        self.state_dir = str(tmp_path / "state")
        self.options = ["--store-dir", self.store_dir, "--state-dir", self.state_dir]
        self.store = LocalStore(self.store_dir, self.state_dir)

    def __call__(self, *args: str) -> tuple[list[str], str]:
        result = CliRunner().invoke(cli, [*self.options, *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.stdout.splitlines(), result.stderr

    def process(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "pyguix", *self.options, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pyguix", *self.options, *args],
            capture_output=True,
            text=True,
        )

    def drv(self, name: str, code: str, *inputs: Derivation, **env: str) -> Derivation:
        variables = {f"in{i}": d.output_path() for i, d in enumerate(inputs)}
        prologue = "import os, sys, time\nout = os.environ['out']\n"
        return derivation(
            self.store,
            name,
            interpreter_executable(),
            ["-S", "-c", prologue + textwrap.dedent(code)],
            env={**variables, **env},
            inputs=list(inputs),
        )


@pytest.fixture
def pyguix(tmp_path: Path) -> Pyguix:
    return Pyguix(tmp_path)


@pytest.fixture
def objects(tmp_path: Path) -> str:
    path = tmp_path / "objects.py"
    path.write_text(OBJECTS)
    return str(path)


def test_build_file_objects_prints_outputs_in_order(
    pyguix: Pyguix, objects: str
) -> None:
    out, err = pyguix("build", "-L", "-f", objects)

    assert len(out) == 2
    top, greeting = out
    assert top.endswith("-top") and greeting.endswith("-greeting")
    assert pyguix.store.query_valid(out) == set(out)
    assert Path(greeting).read_text() == "hello\n"
    base = Path(top, "x").read_text()
    assert Path(base).read_text() == "hello\n"
    assert "top> top!" in err

    named, _ = pyguix("build", "-f", objects, "made_later", "base")
    assert named[1] == base and Path(named[0]).read_text() == "later"


def test_derivation_and_dry_run_build_nothing(pyguix: Pyguix, objects: str) -> None:
    drvs, _ = pyguix("build", "-d", "-f", objects, "top")
    assert len(drvs) == 1 and drvs[0].endswith("-top.drv")

    out, err = pyguix("build", "-n", drvs[0])
    assert out == []
    assert "these 2 derivations would be built:" in err
    assert "-base.drv" in err and "-top.drv" in err

    built, _ = pyguix("build", drvs[0] + "^out")
    assert pyguix.store.is_valid(built[0])
    _, err = pyguix("build", "-n", drvs[0])
    assert "nothing to build" in err


def test_output_path_target_and_roots(pyguix: Pyguix, tmp_path: Path) -> None:
    dep = pyguix.drv("dep", "open(out, 'w').write('dep')")
    user = pyguix.drv("user", "open(out, 'w').write(os.environ['in0'])", dep)
    link = tmp_path / "result"

    out, _ = pyguix("build", "-r", str(link), user.path, dep.path)

    assert out == [user.output_path(), dep.output_path()]
    assert os.readlink(link) == user.output_path()
    assert os.readlink(f"{link}-2") == dep.output_path()
    again, _ = pyguix("build", user.output_path())
    assert again == [user.output_path()]


def test_failing_build_exits_100_with_its_log_tail(
    pyguix: Pyguix, objects: str
) -> None:
    process = pyguix.run("build", "-f", objects, "broken")

    assert process.returncode == 100
    assert process.stdout == ""
    assert "error: build of '" in process.stderr
    assert "builder exited with status 4" in process.stderr
    assert "> about to fail" in process.stderr
    assert "hint: the full log is" in process.stderr


def test_unknown_object_is_an_error(pyguix: Pyguix, objects: str) -> None:
    process = pyguix.run("build", "-f", objects, "nonesuch")
    assert process.returncode == 1
    assert f"error: '{objects}' defines no 'nonesuch'" in process.stderr


def test_two_processes_build_each_derivation_once(pyguix: Pyguix) -> None:
    code = "time.sleep(0.3)\nopen(out, 'w').write(repr(sorted(os.environ)))"
    a = pyguix.drv("a", code)
    b = pyguix.drv("b", code, a)
    c = pyguix.drv("c", code, a)
    top = pyguix.drv("top", code, b, c)

    processes = [pyguix.process("-v", "build", "-j2", top.path) for _ in range(2)]
    results: list[Any] = [p.communicate(timeout=120) for p in processes]

    assert [p.returncode for p in processes] == [0, 0], results
    assert [out for out, _ in results] == [top.output_path() + "\n"] * 2
    stderr = "".join(err for _, err in results).splitlines()
    for drv in (a, b, c, top):
        assert stderr.count(f"built {drv.path}") == 1, stderr


def test_keep_failed_says_where_the_build_directory_is(
    pyguix: Pyguix, objects: str
) -> None:
    process = pyguix.run("build", "-K", "-f", objects, "broken")

    assert process.returncode == 100
    line = next(
        line
        for line in process.stderr.splitlines()
        if "keeping build directory" in line
    )
    kept = line.split("'")[1]
    assert os.path.isdir(kept) and f"was kept at '{kept}'" in process.stderr
    assert os.path.basename(kept).startswith("pyguix-build-broken.drv-")
    shutil.rmtree(kept)
