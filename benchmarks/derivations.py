"""Benchmark derivations: create, write into a store, and load their graph.

The shape is a layered DAG: LAYERS layers of WIDTH derivations, each one
depending on FANIN derivations of the layer below (chosen with a fixed
seed), like Nix's ``derivation { name; system; builder; args; deps; }``.
Measured:

* create: hash modulo, output paths and ATerm of every derivation, pure;
* write: the same through ``derivation()`` into a fresh pyguix store;
* graph: the closure of the top layer as a networkx graph, reading and
  parsing every ``.drv`` again (caches cleared), then its build generations;
* nix-instantiate of a generated ``.nix`` with the same DAG, when Nix is
  installed (it writes into the real /nix/store; a random ``salt`` variable
  makes every run's derivations new, so Nix writes them); the derivation
  paths of both are compared.

Usage: ``python3 benchmarks/derivations.py [--smoke] [--size N] [--no-nix]``.
Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

# This file's name would shadow the derivations package when run as a script.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

from benchmarks._common import timed as timed_call  # noqa: E402
from derivations.create import clear_read_cache, derivation, make_derivation  # noqa: E402
from derivations.derivation import Derivation  # noqa: E402
from derivations.graph import build_generations, store_derivation_graph  # noqa: E402
from derivations.hashing import ModuloCache  # noqa: E402

T = TypeVar("T")
STORE_DIR = "/nix/store"
SYSTEM = "x86_64-linux"
FANIN = 3


def shape(size: int, width: int) -> list[list[tuple[str, list[int]]]]:
    """Return layers of (name, indices of dependencies in the layer below)."""
    rng = random.Random(42)
    layers = []
    for layer in range(max(1, size // width)):
        row = []
        for index in range(width):
            # The one below plus random others, so every derivation is in the closure.
            others = rng.sample([i for i in range(width) if i != index], FANIN - 1)
            deps = sorted([index, *others]) if layer else []
            row.append((f"n-{layer}-{index}", deps))
        layers.append(row)
    return layers


def timed(label: str, function: Callable[[], T]) -> tuple[T, float]:
    result, elapsed = timed_call(function)
    print(f"{label:<42} {elapsed:8.3f} s")
    return result, elapsed


def create_all(
    layers: list[list[tuple[str, list[int]]]],
    make: Callable[..., Derivation],
    salt: str = "",
) -> list[Derivation]:
    """Create every derivation of ``layers`` with ``make``; return the top layer."""
    below: list[Derivation] = []
    for row in layers:
        current = []
        for name, deps in row:
            inputs = [below[i] for i in deps]
            env = {
                "builder": "/bin/sh",
                "name": name,
                "system": SYSTEM,
                "deps": " ".join(d.output_path() for d in inputs),
                "salt": salt,
            }
            current.append(
                make(
                    name,
                    "/bin/sh",
                    ["-c", "true"],
                    env=env,
                    inputs=inputs,
                    system=SYSTEM,
                )
            )
        below = current
    return below


def pure(cache: ModuloCache) -> Callable[..., Derivation]:
    def make(*args: Any, **options: Any) -> Derivation:
        return make_derivation(STORE_DIR, *args, cache=cache, **options)[0]

    return make


def nix_expression(layers: list[list[tuple[str, list[int]]]], salt: str) -> str:
    lines = [
        "let",
        '  mk = name: deps: derivation { inherit name deps; system = "x86_64-linux";'
        f' builder = "/bin/sh"; args = [ "-c" "true" ]; salt = "{salt}"; }};',
    ]
    for layer, row in enumerate(layers):
        for index, (name, deps) in enumerate(row):
            refs = " ".join(f"d{layer - 1}_{i}" for i in deps)
            lines.append(f'  d{layer}_{index} = mk "{name}" [ {refs} ];')
    top = len(layers) - 1
    lines.append(
        "in [ " + " ".join(f"d{top}_{i}" for i in range(len(layers[-1]))) + " ]"
    )
    return "\n".join(lines) + "\n"


def run_nix(
    layers: list[list[tuple[str, list[int]]]], workdir: Path, salt: str
) -> tuple[list[str], float] | None:
    if shutil.which("nix-instantiate") is None:
        print("nix-instantiate: not installed, skipped")
        return None
    expression = workdir / "dag.nix"
    expression.write_text(nix_expression(layers, salt))
    run = lambda: subprocess.run(  # noqa: E731
        ["nix-instantiate", str(expression)], check=True, capture_output=True, text=True
    ).stdout.split()
    return timed("nix-instantiate (eval + hash + write)", run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a small DAG, quickly")
    parser.add_argument(
        "--size", type=int, default=10_000, help="number of derivations"
    )
    parser.add_argument(
        "--no-nix", action="store_true", help="do not run nix-instantiate"
    )
    parser.add_argument(
        "--salt",
        default=secrets.token_hex(4),
        help="a variable in every derivation (default: random, so that Nix "
        "writes new .drv files; give a fixed one to time Nix when they exist)",
    )
    options = parser.parse_args()
    size = 300 if options.smoke else options.size
    width = 30 if options.smoke else 100
    layers = shape(size, width)
    total = sum(len(row) for row in layers)
    salt = options.salt
    print(
        f"{total} derivations: {len(layers)} layers of {width}, fan-in {FANIN}, salt {salt}"
    )

    top, t_create = timed(
        "create, pure (hash + ATerm + path)",
        lambda: create_all(layers, pure(ModuloCache()), salt),
    )

    with tempfile.TemporaryDirectory() as temp:
        from store.local import LocalStore

        store = LocalStore(STORE_DIR, "/nix/var/pyguix", root=f"{temp}/root")
        cache = ModuloCache()

        def write(*args: Any, **options: Any) -> Derivation:
            return derivation(store, *args, cache=cache, **options)

        _, t_write = timed(
            "create and write into a pyguix store",
            lambda: create_all(layers, write, salt),
        )
        timed("import networkx (once per process)", lambda: __import__("networkx"))
        clear_read_cache()
        roots = [d.path for d in top]
        graph, t_graph = timed(
            "load graph (read + parse every .drv)",
            lambda: store_derivation_graph(store, roots),
        )
        _, t_generations = timed(
            "topological generations", lambda: build_generations(graph)
        )
        assert graph.number_of_nodes() == total
        print(
            f"graph: {graph.number_of_nodes()} nodes, {graph.number_of_edges()} edges"
        )

        nix = None if options.no_nix else run_nix(layers, Path(temp), salt)
    if nix is not None:
        nix_paths, t_nix = nix
        print(f"same derivation paths as Nix: {'yes' if nix_paths == roots else 'NO'}")
        print(f"ratio create/nix-instantiate {t_create / t_nix:6.2f}")
        print(f"ratio write/nix-instantiate  {t_write / t_nix:6.2f}")
        print(f"ratio graph/nix-instantiate  {t_graph / t_nix:6.2f}")
    print(f"graph load per derivation {t_graph / total * 1e6:8.1f} us")


if __name__ == "__main__":
    main()
