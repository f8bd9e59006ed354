"""Benchmark evaluation: lowering a configuration of file-like objects to
derivations, cold and warm (persistent lowering cache hit), no build.

The configuration has SIZE objects: a third ``plain_file``, the rest
``computed_file`` whose gexps refer to up to three earlier objects (chosen
with a fixed seed), and one ``file_union`` on top linking them all, like a
system's ``/etc``.  Each measurement is a new process, as a user's
``pyguix build -f``:

* cold: a fresh store; every object is lowered, its builder and ``.drv``
  written;
* warm: the same store again: the top object's key is found in the cache
  (fingerprinting the whole configuration to compute it is the cost);
* warm, each: the same, but every object is asked for on its own (SIZE
  cache hits), as when many targets are named.

Reported per phase: making the objects, lowering them, and the whole
process (interpreter start and imports included), as medians over RUNS
fresh stores (all at the same store directory, so every run must give the
same top derivation); then the warm/cold ratios.

Usage: ``python3 benchmarks/lowering.py [--smoke] [--size N] [--runs R]``.
Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# benchmarks/derivations.py would shadow the derivations package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent]

FANIN = 3
BUILDER = """
with open($out, "w") as file:
    file.write($label)
    for path in $inputs:
        with open(path) as source:
            file.write(source.read())
"""


def configuration(size: int) -> tuple[Any, list[Any]]:
    """Return the top file union and the other ``size - 1`` objects."""
    from derivations.file_like import computed_file, file_union, plain_file
    from derivations.gexp import gexp

    rng = random.Random(42)
    objects: list[Any] = []
    for index in range(size - 1):
        if index % 3 == 0:
            objects.append(plain_file(f"plain-{index}", f"plain file {index}\n"))
            continue
        inputs = rng.sample(objects, min(FANIN, len(objects)))
        g = gexp(BUILDER, label=f"computed {index}\n", inputs=inputs)
        objects.append(computed_file(f"computed-{index}", g))
    top = file_union("configuration", [(f"etc/{i}", o) for i, o in enumerate(objects)])
    return top, objects


def child(store_dir: str, state_dir: str, size: int, each: bool) -> None:
    """Make the configuration, lower it, print the timings as JSON."""
    from derivations.lowering import lower_object, lowering_stats
    from derivations.monad import mapm, run_with_store
    from store.local import LocalStore

    start = time.perf_counter()
    top, objects = configuration(size)
    made = time.perf_counter()
    store = LocalStore(store_dir, state_dir)
    wanted = [top, *objects] if each else [top]
    lowered = run_with_store(store, mapm(lower_object, wanted))
    done = time.perf_counter()
    stats = lowering_stats(store)
    print(
        json.dumps(
            {
                "make": made - start,
                "lower": done - made,
                "top": str(getattr(lowered[0], "path", lowered[0])),
                "hits": stats.hits,
                "misses": stats.misses,
            }
        )
    )


def measure(store: Path, size: int, each: bool = False) -> dict[str, Any]:
    """Run one child on ``store``; add its wall time to its report."""
    command = [sys.executable, __file__, "--child", str(store), str(size)]
    start = time.perf_counter()
    output = subprocess.run(
        [*command, *(["--each"] if each else [])],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    report: dict[str, Any] = json.loads(output)
    report["process"] = time.perf_counter() - start
    return report


def remove(tree: Path) -> None:
    """Remove ``tree``, whose store items are read-only."""
    if not tree.exists():
        return
    for directory, _, _ in os.walk(tree):
        os.chmod(directory, 0o755)
    shutil.rmtree(tree)


def median(reports: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(report[key] for report in reports))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="100 objects, 2 runs")
    parser.add_argument("--size", type=int, default=1000, help="number of objects")
    parser.add_argument("--runs", type=int, default=5, help="fresh stores to time")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--each", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        root, size = options.child
        child(f"{root}/store", f"{root}/state", int(size), options.each)
        return

    size = 100 if options.smoke else options.size
    runs = 2 if options.smoke else options.runs
    phases: dict[str, list[dict[str, Any]]] = {"cold": [], "warm": [], "each": []}
    with tempfile.TemporaryDirectory(prefix="pyguix-lowering-") as temp:
        store = Path(temp, "root")
        for _ in range(runs):
            remove(store)
            phases["cold"].append(measure(store, size))
            phases["warm"].append(measure(store, size))
            phases["each"].append(measure(store, size, each=True))
    report(size, runs, phases)


def report(size: int, runs: int, phases: dict[str, list[dict[str, Any]]]) -> None:
    """Print the medians, the counters and the ratios."""
    cold, warm, each = phases["cold"], phases["warm"], phases["each"]
    print(f"{size} objects (1 file union, plain and computed files), {runs} runs")
    print(f"{'phase':<22} {'make':>8} {'lower':>8} {'process':>8}  hits misses")
    labels = {
        "cold": "cold",
        "warm": "warm (top object)",
        "each": "warm (every object)",
    }
    for name, reports in phases.items():
        print(
            f"{labels[name]:<22} {median(reports, 'make'):8.3f} "
            f"{median(reports, 'lower'):8.3f} {median(reports, 'process'):8.3f}  "
            f"{reports[0]['hits']:>4} {reports[0]['misses']:>6}"
        )
    for label, reports in (("warm", warm), ("warm, each", each)):
        lower = median(reports, "lower") / median(cold, "lower")
        process = median(reports, "process") / median(cold, "process")
        print(f"{label}/cold ratio: lowering {lower:.3f}, process {process:.3f}")
    same = (
        {r["top"] for r in cold} | {r["top"] for r in warm} | {r["top"] for r in each}
    )
    print(f"top derivation identical in every run: {len(same) == 1}")


if __name__ == "__main__":
    main()
