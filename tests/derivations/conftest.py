"""Golden derivations written by Nix 2.8 (fixtures/drv, see generate.sh)."""

from __future__ import annotations

from pathlib import Path

import pytest

from derivations.aterm_parser import from_aterm
from derivations.derivation import Derivation

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "drv"
NIX_STORE = "/nix/store"


class Golden:
    """Every committed .drv, its bytes, and the case names of cases.txt."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.drvs: dict[str, Derivation] = {}
        for file in sorted(FIXTURES.glob("*.drv")):
            path = f"{NIX_STORE}/{file.name}"
            self.data[path] = file.read_bytes()
            self.drvs[path] = from_aterm(self.data[path], NIX_STORE, path=path)
        self.cases = dict(
            line.split() for line in (FIXTURES / "cases.txt").read_text().splitlines()
        )

    def case(self, name: str) -> Derivation:
        return self.drvs[self.cases[name]]

    def json_bytes(self, path: str) -> bytes:
        return (FIXTURES / (path.rsplit("/", 1)[-1] + ".json")).read_bytes()


_GOLDEN: Golden | None = None


@pytest.fixture(scope="session")
def golden() -> Golden:
    global _GOLDEN
    if _GOLDEN is None:
        _GOLDEN = Golden()
    return _GOLDEN


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run a test taking ``golden_path`` once per fixture derivation path."""
    if "golden_path" in metafunc.fixturenames:
        paths = [f"{NIX_STORE}/{file.name}" for file in sorted(FIXTURES.glob("*.drv"))]
        metafunc.parametrize("golden_path", paths, ids=[p[44:] for p in paths])
