"""``pyguix derivation``, ``graph`` and ``why-depends`` on a store holding the
golden derivations of Nix 2.8 (fixtures/drv), with store dir /nix/store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pyguix.cli import cli

pytest.importorskip("store.local")

FIXTURES = Path(__file__).parents[2] / "fixtures" / "drv"
CASES = dict(line.split() for line in (FIXTURES / "cases.txt").read_text().splitlines())


def fixture(path: str, suffix: str = "") -> Path:
    return FIXTURES / (path.rsplit("/", 1)[-1] + suffix)


class Pyguix:
    def __init__(self, root: Path) -> None:
        self.options = [
            "--store-dir",
            "/nix/store",
            "--state-dir",
            "/nix/var/pyguix",
            "--root",
            str(root),
        ]

    def __call__(self, *args: str) -> str:
        result = CliRunner().invoke(cli, [*self.options, *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    def fails(self, *args: str) -> str:
        """Run the real command line; return its stderr."""
        process = subprocess.run(
            [sys.executable, "-m", "pyguix", *self.options, *args],
            capture_output=True,
            text=True,
        )
        assert process.returncode == 1, process
        assert "Traceback" not in process.stderr
        return process.stderr


@pytest.fixture
def pyguix(tmp_path: Path) -> Pyguix:
    return Pyguix(tmp_path)


def add_chain(pyguix: Pyguix) -> list[str]:
    """Add chain-a, chain-b, chain-c; return their paths."""
    c = CASES["chain-c"]
    b = next(p for p in map(str, FIXTURES.glob("*chain-b.drv")))
    a = next(p for p in map(str, FIXTURES.glob("*chain-a.drv")))
    return [
        pyguix("derivation", "add", file).strip() for file in (a, b, str(fixture(c)))
    ]


def test_add_prints_the_path_nix_gave(pyguix: Pyguix) -> None:
    paths = add_chain(pyguix)
    assert paths[2] == CASES["chain-c"]
    assert [p.rsplit("-", 1)[-1] for p in paths] == ["a.drv", "b.drv", "c.drv"]


def test_add_reads_nix_json_and_dry_run_adds_nothing(pyguix: Pyguix) -> None:
    path = CASES["fod-recursive-sha512"]
    assert (
        pyguix("derivation", "add", "--dry-run", str(fixture(path, ".json"))).strip()
        == path
    )
    assert "is not valid" in pyguix.fails("derivation", "show", path)
    assert pyguix("derivation", "add", str(fixture(path, ".json"))).strip() == path
    shown = json.loads(pyguix("derivation", "show", path))
    assert shown == json.loads(fixture(path, ".json").read_text())


def test_show_recursive_equals_nix(pyguix: Pyguix) -> None:
    add_chain(pyguix)
    shown = json.loads(pyguix("derivation", "show", "-r", CASES["chain-c"]))
    assert len(shown) == 3
    for path, value in shown.items():
        assert {path: value} == json.loads(fixture(path, ".json").read_text())


def test_show_an_output_shows_its_deriver(pyguix: Pyguix, tmp_path: Path) -> None:
    add_chain(pyguix)
    from store.database import PathInfo
    from store.local import LocalStore
    from store.nar.writer import hash_path

    store = LocalStore("/nix/store", "/nix/var/pyguix", root=str(tmp_path))
    drv = CASES["chain-c"]
    out = json.loads(fixture(drv, ".json").read_text())[drv]["outputs"]["out"]["path"]
    Path(store.physical(out)).write_text("built")
    nar_hash, size = hash_path(store.physical(out))
    store.register_valid_paths([PathInfo(out, nar_hash, size, frozenset(), drv)])
    assert list(json.loads(pyguix("derivation", "show", out))) == [drv]
    # why-depends takes an output of a derivation as the target, too.
    assert pyguix("why-depends", CASES["chain-c"], out).strip() == drv


def test_add_refuses_missing_inputs(pyguix: Pyguix) -> None:
    stderr = pyguix.fails("derivation", "add", str(fixture(CASES["chain-c"])))
    assert (
        "error: input '/nix/store/" in stderr and "chain-b.drv' of derivation" in stderr
    )
    assert "hint: add it first" in stderr


def test_add_names_the_output_and_both_paths(pyguix: Pyguix, tmp_path: Path) -> None:
    path = CASES["multi"]
    document = json.loads(fixture(path, ".json").read_text())
    value = document[path]
    value["args"] = ["-c", "changed"]
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps({path: value}))
    stderr = pyguix.fails("derivation", "add", str(changed))
    assert "the JSON names the derivation" in stderr
    # Without the claimed path (ATerm), the output check speaks.
    from derivations import json as drv_json
    from derivations.aterm_writer import to_aterm

    aterm = tmp_path / "changed.drv"
    aterm.write_bytes(to_aterm(drv_json.from_json(path, value)))
    stderr = pyguix.fails("derivation", "add", str(aterm))
    dev = value["outputs"]["dev"]["path"]
    assert (
        f"error: output 'dev' of derivation 'multi' is '{dev}', but its computed path is '/nix/store/"
        in stderr
    )


def test_add_reports_a_broken_file_with_offset(pyguix: Pyguix, tmp_path: Path) -> None:
    broken = tmp_path / "broken.drv"
    broken.write_bytes(fixture(CASES["simple"]).read_bytes() + b"x")
    stderr = pyguix.fails("derivation", "add", str(broken))
    assert (
        f"cannot parse derivation '{broken}' at byte" in stderr
        and "trailing bytes" in stderr
    )
    assert "^" in stderr


def test_graph_of_derivations(pyguix: Pyguix) -> None:
    paths = add_chain(pyguix)
    dot = pyguix("graph", CASES["chain-c"])
    assert dot.startswith("digraph pyguix {")
    assert f'"{paths[2]}" -> "{paths[1]}" [label="out"];' in dot
    document = json.loads(pyguix("graph", "--format", "json", CASES["chain-c"]))
    assert document["nodes"] == sorted(paths)
    assert {"from": paths[1], "to": paths[0], "outputs": ["out"]} in document["edges"]


def test_graph_of_references(pyguix: Pyguix) -> None:
    paths = add_chain(pyguix)
    document = json.loads(
        pyguix("graph", "--type", "references", "--format", "json", paths[2])
    )
    assert document == {
        "nodes": sorted(paths),
        "edges": sorted(
            [{"from": paths[1], "to": paths[0]}, {"from": paths[2], "to": paths[1]}],
            key=lambda edge: edge["from"],
        ),
    }


def test_why_depends(pyguix: Pyguix) -> None:
    a, b, c = add_chain(pyguix)
    assert pyguix("why-depends", c, a).splitlines() == [c, f"└── {b}", f"  └── {a}"]
    stderr = pyguix.fails("why-depends", a, c)
    assert f"error: '{a}' does not depend on '{c}'" in stderr


def test_why_depends_all_on_a_diamond(pyguix: Pyguix) -> None:
    top = CASES["diamond"]
    document: dict[str, Any] = json.loads(fixture(top, ".json").read_text())
    for path in sorted(
        FIXTURES.glob("*diamond-*.drv"),
        key=lambda p: ("base" not in p.name) + ("top" in p.name),
    ):
        pyguix("derivation", "add", str(path))
    base = next(p for p in document[top]["inputDrvs"] if "base" in p)
    chains = pyguix("why-depends", "--all", top, base).split("\n\n")
    assert len(chains) == 3
    assert chains[0].splitlines() == [top, f"└── {base}"]
