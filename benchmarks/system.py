"""Benchmark ``pyguix system container fixtures/os.py``: cold, warm, incremental.

Each measurement is a new ``pyguix`` process, timed with its peak RSS:

* cold: an empty store (a fresh ``--root`` in a temporary directory, the
  default store directory): every derivation of the system is lowered,
  written and built;
* warm: the same command again on that store, everything valid (the cache
  hit a user gets rebuilding an unchanged system);
* incremental: one leaf changed: a copy of ``fixtures/os.py`` whose hello
  program prints another greeting (a new one each run), built on the warm
  store; the derivations rebuilt are counted from the build's report on
  stderr (``built N derivations``);
* interpreter: ``python3 -c pass`` with the same interpreter and site
  packages, the floor under any warm command, for the warm run to be read
  against.

Timings are reported, never asserted.  Usage:
``python3 benchmarks/system.py [--runs N]``.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

from benchmarks._common import Measure, Sample, run_process, summarise  # noqa: E402

__all__ = ["SystemFigures", "measure_system", "main"]

OS_FILE = HERE.parent / "fixtures" / "os.py"
LEAF = 'print(f"Hello from'
"""The text of the leaf changed for the incremental build: the hello program."""
BUILT = re.compile(r"^built (\d+) derivations? in", re.MULTILINE)


@dataclass(frozen=True)
class SystemFigures:
    """Cold, warm and incremental measures, and the derivations each rebuilt."""

    cold: Measure
    warm: Measure
    incremental: Measure
    interpreter: Measure
    cold_built: int
    incremental_built: int


def built_count(stderr: str) -> int:
    """Return how many derivations a build reported building (0 if none)."""
    found = BUILT.findall(stderr)
    return int(found[-1]) if found else 0


def _container(root: str, os_file: Path) -> Sample:
    command = [sys.executable, "-m", "pyguix", "--root", root,
               "system", "container", str(os_file)]  # fmt: skip
    return run_process(command)


def _variant(workdir: str, run: int) -> Path:
    """Copy the OS file with the hello program's greeting changed."""
    text = OS_FILE.read_text()
    if LEAF not in text:
        raise ValueError(f"'{OS_FILE}' no longer contains '{LEAF}'; update LEAF")
    path = Path(workdir, f"os-{run}.py")
    path.write_text(text.replace(LEAF, f'print(f"Hello (variant {run}) from', 1))
    return path


def measure_system(runs: int) -> SystemFigures:
    """Measure ``runs`` cold, warm and incremental container builds."""
    cold: list[Sample] = []
    warm: list[Sample] = []
    incremental: list[Sample] = []
    interpreter: list[Sample] = []
    with tempfile.TemporaryDirectory(prefix="pyguix-system-") as workdir:
        for run in range(runs):
            root = f"{workdir}/root-{run}"
            cold.append(_container(root, OS_FILE))
            warm.append(_container(root, OS_FILE))
            incremental.append(_container(root, _variant(workdir, run)))
            interpreter.append(run_process([sys.executable, "-c", "pass"]))
    return SystemFigures(
        cold=summarise(cold),
        warm=summarise(warm),
        incremental=summarise(incremental),
        interpreter=summarise(interpreter),
        cold_built=built_count(cold[-1].stderr),
        incremental_built=built_count(incremental[-1].stderr),
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Measure and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each")
    options = parser.parse_args(argv)
    figures = measure_system(options.runs)
    for name in ("cold", "warm", "incremental", "interpreter"):
        measure: Measure = getattr(figures, name)
        print(f"{name:<12} {measure.seconds:7.3f} s  max RSS "
              f"{measure.max_rss_kib / 1024:6.1f} MiB  ({measure.runs} runs)")  # fmt: skip
    print(f"derivations built: cold {figures.cold_built}, "
          f"incremental {figures.incremental_built}")  # fmt: skip
    print(f"warm/cold {figures.warm.seconds / figures.cold.seconds:.3f}, "
          f"incremental/cold {figures.incremental.seconds / figures.cold.seconds:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
