"""Benchmark builds: cold builds and the no-op realise of DAGs of trivial derivations.

The DAG is layered: LAYERS layers of WIDTH derivations, each depending on
FANIN derivations of the layer below (fixed seed), so the input closure of a
build grows with its layer.  Every builder writes the paths of its inputs
into its output (so references are scanned and recorded):

* pyguix: ``python -S -c ...`` (the bootstrap interpreter) in the sandbox,
  realised in this process with :func:`builders.scheduler.realise`; the
  store is a chroot store in a temporary directory;
* Nix 2.8, when installed: ``/bin/sh -c 'echo $deps > $out'`` through
  ``builtins.derivation``, instantiated then ``nix-store --realise``d (into
  the real /nix/store; a random salt makes every run's derivations new),
  once without its sandbox (this machine's setting) and once with it (the
  host's ``/bin``, ``/lib``, ``/lib64`` and ``/usr`` bound in, for the
  shell), to compare sandbox with sandbox.

Measured, for each size: the cold build of every derivation (per
derivation), the mean build time per layer (how the cost grows with the
input closure), the no-op realise of all of them once valid, in this process
and as a ``pyguix build`` command, and Nix's figures with the ratios.

Usage: ``python3 benchmarks/builds.py [--smoke] [--sizes 100,1000] [-j N]
[--no-nix]``.  Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

# benchmarks/derivations.py would shadow the derivations package.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

from benchmarks._common import timed as timed_call  # noqa: E402
from builders.bootstrap import interpreter_executable, interpreter_paths  # noqa: E402
from builders.progress import BuildReporter  # noqa: E402
from builders.scheduler import realise  # noqa: E402
from derivations.create import clear_read_cache, derivation  # noqa: E402
from derivations.derivation import Derivation  # noqa: E402
from store.local import LocalStore  # noqa: E402

T = TypeVar("T")
FANIN = 2
CODE = "import os; open(os.environ['out'], 'w').write(os.environ['deps'])"

Layers = list[list[tuple[str, list[int]]]]


def shape(size: int, width: int) -> Layers:
    """Return layers of (name, indices of dependencies in the layer below)."""
    rng = random.Random(42)
    layers = []
    for layer in range(max(1, size // width)):
        row = []
        for index in range(width):
            others = rng.sample([i for i in range(width) if i != index], FANIN - 1)
            row.append(
                (f"n-{layer}-{index}", sorted([index, *others]) if layer else [])
            )
        layers.append(row)
    return layers


def timed(label: str, function: Callable[[], T]) -> tuple[T, float]:
    result, elapsed = timed_call(function)
    print(f"  {label:<44} {elapsed:8.3f} s")
    return result, elapsed


class Durations(BuildReporter):
    """Collect each build's duration by layer (from the name ``n-LAYER-I``)."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.by_layer: dict[int, list[float]] = defaultdict(list)

    def build_started(self, drv: str, name: str) -> None:
        self.names[drv] = name

    def build_finished(self, drv: str, ok: bool, duration: float) -> None:
        self.by_layer[int(self.names[drv].split("-")[1])].append(duration)


SHELL_BUILDER = ("/bin/sh", ["-c", "echo $deps > $out"])
"""Nix's builder in these DAGs, which pyguix runs with the host's shell bound
into its sandbox (``--sandbox-path``, :data:`SHELL_SANDBOX_PATHS`)."""

SHELL_SANDBOX_PATHS = ("/bin", "/lib", "/lib64?", "/usr")


def create_pyguix(
    store: LocalStore, layers: Layers, salt: str, shell: bool = False
) -> list[Derivation]:
    """Create the DAG's derivations; their builders are the bootstrap
    interpreter, or with ``shell`` the same ``/bin/sh`` one-liner as Nix's."""
    builder, args = (
        SHELL_BUILDER if shell else (interpreter_executable(), ["-S", "-c", CODE])
    )
    everything: list[Derivation] = []
    below: list[Derivation] = []
    for row in layers:
        current = []
        for name, deps in row:
            inputs = [below[i] for i in deps]
            current.append(
                derivation(
                    store,
                    name,
                    builder,
                    args,
                    env={
                        "deps": " ".join(d.output_path() for d in inputs),
                        "salt": salt,
                    },
                    inputs=inputs,
                )
            )
        everything += current
        below = current
    return everything


def pyguix_side(layers: Layers, salt: str, jobs: int) -> dict[str, float]:
    total = sum(len(row) for row in layers)
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as temp:
        store = LocalStore("/nix/store", "/nix/var/pyguix", root=f"{temp}/root")
        drvs = create_pyguix(store, layers, salt)
        paths = [d.path for d in drvs]
        reporter = Durations()
        _, figures["cold"] = timed(
            f"pyguix cold build, -j{jobs}",
            lambda: realise(store, paths, jobs=jobs, reporter=reporter),
        )
        means = {
            layer: sum(values) / len(values) * 1e3
            for layer, values in sorted(reporter.by_layer.items())
        }
        print(
            "  mean build by layer (ms): "
            + ", ".join(f"{layer}: {mean:.0f}" for layer, mean in means.items())
        )
        figures["first layer"], figures["last layer"] = means[0], means[max(means)]

        clear_read_cache()
        _, figures["noop"] = timed(
            "pyguix no-op realise (in process)", lambda: realise(store, paths)
        )
        command = [
            sys.executable,
            "-m",
            "pyguix",
            "--store-dir",
            "/nix/store",
            "--state-dir",
            "/nix/var/pyguix",
            "--root",
            f"{temp}/root",
            "build",
            *paths,
        ]
        result, figures["noop command"] = timed(
            "pyguix build, no-op (a new process)",
            lambda: subprocess.run(command, check=True, capture_output=True),
        )
        assert len(result.stdout.splitlines()) == total
    return figures


def nix_expression(layers: Layers, salt: str) -> str:
    lines = [
        "let",
        "  mk = name: deps: derivation { inherit name deps;"
        ' system = "x86_64-linux"; builder = "/bin/sh";'
        f' args = [ "-c" "echo $deps > $out" ]; salt = "{salt}"; }};',
    ]
    for layer, row in enumerate(layers):
        for index, (name, deps) in enumerate(row):
            refs = " ".join(f"d{layer - 1}_{i}" for i in deps)
            lines.append(f'  d{layer}_{index} = mk "{name}" [ {refs} ];')
    every = " ".join(
        f"d{layer}_{index}"
        for layer, row in enumerate(layers)
        for index in range(len(row))
    )
    lines.append(f"in [ {every} ]")
    return "\n".join(lines) + "\n"


SANDBOX_OPTIONS = ["--option", "sandbox", "true",
                   "--option", "extra-sandbox-paths", "/bin /lib /lib64 /usr"]  # fmt: skip
"""Nix's sandbox, with the host's /bin/sh and its libraries inside."""


def nix_side(
    layers: Layers, salt: str, jobs: int, sandbox: bool
) -> dict[str, float] | None:
    if shutil.which("nix-store") is None:
        print("  nix-store: not installed, skipped")
        return None
    figures: dict[str, float] = {}
    label = "sandbox" if sandbox else "no sandbox"
    with tempfile.TemporaryDirectory() as temp:
        expression = Path(temp, "dag.nix")
        expression.write_text(nix_expression(layers, salt + label))
        drvs = subprocess.run(
            ["nix-instantiate", str(expression)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        realise_command = [
            "nix-store", "--realise", "--quiet", "-j", str(jobs),
            "--option", "substituters", "",
            *(SANDBOX_OPTIONS if sandbox else ["--option", "sandbox", "false"]),
            *drvs,
        ]  # fmt: skip
        run = lambda: subprocess.run(  # noqa: E731
            realise_command, check=True, capture_output=True
        )
        _, figures["cold"] = timed(f"nix-store --realise, cold, {label}, -j{jobs}", run)
        _, figures["noop"] = timed(f"nix-store --realise, no-op, {label}", run)
    return figures


def report(
    size: int, ours: dict[str, float], nix: dict[str, dict[str, float]] | None
) -> None:
    per = {key: value / size * 1e3 for key, value in ours.items() if "layer" not in key}
    print(
        f"  pyguix: cold {per['cold']:.1f} ms/derivation; first layer "
        f"{ours['first layer']:.0f} ms, last layer {ours['last layer']:.0f} ms per build"
    )
    for label, figures in (nix or {}).items():
        print(f"  nix ({label}): cold {figures['cold'] / size * 1e3:.1f} ms/derivation")
        print(
            f"    ratio cold pyguix/nix             {ours['cold'] / figures['cold']:6.2f}"
        )
        print(
            f"    ratio no-op pyguix (process)/nix  {ours['noop'] / figures['noop']:6.2f}"
        )
        print(
            "    ratio no-op pyguix build/nix      "
            f"{ours['noop command'] / figures['noop']:6.2f}"
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="one DAG of 20, quickly")
    parser.add_argument(
        "--sizes", default="100,1000", help="DAG sizes, comma-separated"
    )
    parser.add_argument("-j", "--jobs", type=int, default=1, help="builds at once")
    parser.add_argument("--no-nix", action="store_true", help="do not run Nix")
    options = parser.parse_args(argv)
    sizes = [20] if options.smoke else [int(s) for s in options.sizes.split(",")]
    interpreter_paths()

    for size in sizes:
        width = max(1, size // 10)
        layers = shape(size, width)
        total = sum(len(row) for row in layers)
        salt = secrets.token_hex(4)
        print(f"{total} derivations: {len(layers)} layers of {width}, fan-in {FANIN}")
        ours = pyguix_side(layers, salt, options.jobs)
        nix = {}
        for sandbox in (False, True):
            if not options.no_nix:
                figures = nix_side(layers, salt, options.jobs, sandbox)
                if figures is not None:
                    nix["sandbox" if sandbox else "no sandbox"] = figures
        report(total, ours, nix)


if __name__ == "__main__":
    main()
