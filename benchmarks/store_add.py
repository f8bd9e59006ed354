"""Benchmark 'pyguix store add' against 'nix-store --add' on the same tree.

Prints medians (seconds) and ratios for:

- a cold add of a ~100 MB tree, without and with flushing it to disk
  (PYGUIX_FSYNC=1; Nix 2.8 does not flush items), in a fresh pyguix store
  each run; for Nix, the item is deleted with 'nix-store --delete' between
  runs;
- re-adding the same, already valid tree, which must cost about one NAR
  hash of the tree: compared with hashing it ('python -m pyguix' start-up
  plus store.nar.hash_path, and 'nix-hash --type sha256').

Every run starts after a ``sync``, so that writing back what an earlier
run (or making the tree) left in the page cache is not counted against the
next one.  Nix parts are skipped when nix-store is not installed.  Timings are printed,
never asserted.  Usage: python3 benchmarks/store_add.py [--smoke] [--runs N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

from benchmarks._common import median as median_of  # noqa: E402
from benchmarks._common import timed as timed_call  # noqa: E402

MIB = 1024 * 1024


def make_tree(root: str, total: int) -> None:
    """Write a tree of about ``total`` bytes: one large file, many small ones."""
    os.makedirs(os.path.join(root, "lib", "many"))
    block = os.urandom(MIB)
    with open(os.path.join(root, "large.bin"), "wb") as file:
        for index in range(total // 2 // MIB):
            file.write(bytes([index % 256]) + block[1:])
    small = 64 * 1024
    for index in range(total // 2 // small):
        with open(os.path.join(root, "lib", "many", f"f{index:04d}"), "wb") as file:
            file.write(index.to_bytes(4, "little") + block[4:small])
    script = os.path.join(root, "run")
    with open(script, "w") as file:
        file.write("#!/bin/sh\n")
    os.chmod(script, 0o755)
    os.symlink("large.bin", os.path.join(root, "link"))


def timed(action: Callable[[], object]) -> float:
    return timed_call(action)[1]


def run(*command: str) -> str:
    return subprocess.run(
        command, check=True, capture_output=True, text=True
    ).stdout.strip()


def pyguix(store: str, *args: str) -> str:
    return run(
        sys.executable,
        "-m",
        "pyguix",
        "--store-dir",
        f"{store}/store",
        "--state-dir",
        f"{store}/state",
        *args,
    )


def median(
    action: Callable[[], object], runs: int, setup: Callable[[], object] | None = None
) -> float:
    times = []
    for _ in range(runs):
        if setup:
            setup()
        # Start each run with nothing left to write back from the last one
        # (or from making the tree), on either side.
        os.sync()
        times.append(timed(action))
    return median_of(times)


def measure(
    size: int, runs: int, fsync: bool = True, nix: bool = True
) -> dict[str, float]:
    """Time adding a tree of ``size`` bytes ``runs`` times each way; return
    the median seconds by name (Nix's only when ``nix`` and it is installed)."""
    has_nix = nix and shutil.which("nix-store") is not None
    with tempfile.TemporaryDirectory() as work:
        tree = os.path.join(work, "bench-tree")
        make_tree(tree, size)
        stores = iter(range(10**6))
        current = [""]

        def new_store() -> None:
            current[0] = os.path.join(work, f"s{next(stores)}")

        results: dict[str, float] = {}
        results["pyguix add (cold)"] = median(
            lambda: pyguix(current[0], "store", "add", tree), runs, new_store
        )
        if fsync:
            os.environ["PYGUIX_FSYNC"] = "1"
            results["pyguix add (cold, fsync)"] = median(
                lambda: pyguix(current[0], "store", "add", tree), runs, new_store
            )
            del os.environ["PYGUIX_FSYNC"]
        results["pyguix add (valid)"] = median(
            lambda: pyguix(current[0], "store", "add", tree), runs
        )
        results["pyguix start-up"] = median(
            lambda: run(sys.executable, "-m", "pyguix", "--version"), runs
        )
        code = f"from store.nar import hash_path; hash_path({tree!r})"
        results["python hash_path"] = median(
            lambda: run(sys.executable, "-c", code), runs
        )

        if has_nix:
            nix_path = run("nix-store", "--add", tree)

            def delete_nix() -> None:
                subprocess.run(["nix-store", "--delete", nix_path], capture_output=True)

            results["nix-store --add (cold)"] = median(
                lambda: run("nix-store", "--add", tree), runs, delete_nix
            )
            results["nix-store --add (valid)"] = median(
                lambda: run("nix-store", "--add", tree), runs
            )
            results["nix-hash"] = median(
                lambda: run("nix-hash", "--type", "sha256", tree), runs
            )
            delete_nix()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a 8 MB tree, one run")
    parser.add_argument("--runs", type=int, default=5)
    options = parser.parse_args()
    size = 8 * MIB if options.smoke else 100 * MIB
    runs = 1 if options.smoke else options.runs
    has_nix = shutil.which("nix-store") is not None
    results = measure(size, runs)

    print(f"tree: {size // MIB} MiB, median of {runs} run(s), seconds")
    for name, seconds in results.items():
        print(f"  {name:26s} {seconds:8.3f}")
    readd = results["pyguix add (valid)"]
    hash_cost = results["python hash_path"]
    if has_nix:
        print(
            f"pyguix add, fsync / nix-store --add:      "
            f"{results['pyguix add (cold, fsync)'] / results['nix-store --add (cold)']:.2f}"
        )
    print(f"pyguix re-add / (interpreter + hash_path): {readd / hash_cost:.2f}")
    if has_nix:
        print(
            f"pyguix add / nix-store --add (cold):      "
            f"{results['pyguix add (cold)'] / results['nix-store --add (cold)']:.2f}"
        )
        print(
            f"pyguix add / nix-store --add (valid):     "
            f"{readd / results['nix-store --add (valid)']:.2f}"
        )


if __name__ == "__main__":
    main()
