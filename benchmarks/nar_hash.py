#!/usr/bin/env python3
"""Measure NAR hashing against hashlib and nix-hash on a ~100 MB tree.

Builds a deterministic tree in a temporary directory (a few large files and
some thousands of small ones in nested directories), warms the page cache,
then times, three times each, in one run:

* ``hashlib``: sha256 over the concatenated file contents, read the same way
  as the NAR writer reads them (same order, one reused 1 MiB buffer);
* ``pyguix``: :func:`store.nar.hash_path`;
* ``nix-hash --type sha256`` when it is installed (process start included).

It prints the medians in MB/s of file contents and the ratios
pyguix/hashlib and pyguix/nix (above 1 means pyguix is faster).  Timings are
reported, never asserted.  ``--smoke`` uses a tiny tree, for CI.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

from benchmarks._common import median, timed  # noqa: E402
from store.nar import hash_path  # noqa: E402

RUNS = 3


def build_tree(root: Path, large: int, large_size: int, small: int) -> int:
    """Create the tree; return the total size of its file contents."""
    generator = random.Random(42)
    total = 0
    root.mkdir()
    for index in range(large):
        data = generator.randbytes(large_size)
        (root / f"large-{index}.bin").write_bytes(data)
        total += len(data)
    for index in range(small):
        folder = root / f"dir-{index % 40:02d}" / f"sub-{index % 7}"
        folder.mkdir(parents=True, exist_ok=True)
        data = generator.randbytes(generator.randrange(0, 12000))
        path = folder / f"file-{index:05d}"
        path.write_bytes(data)
        if index % 5 == 0:
            path.chmod(0o755)
        if index % 50 == 0:
            (folder / f"link-{index:05d}").symlink_to(path.name)
        total += len(data)
    return total


def files_in_nar_order(path: bytes) -> list[tuple[bytes, int]]:
    """Return the regular files under ``path``, with their sizes, in the
    order of the NAR; one ``lstat`` per entry, as the writer does."""
    info = os.lstat(path)
    if stat.S_ISREG(info.st_mode):
        return [(path, info.st_size)]
    if not stat.S_ISDIR(info.st_mode):
        return []
    files: list[tuple[bytes, int]] = []
    for name in sorted(os.listdir(path)):
        files.extend(files_in_nar_order(path + b"/" + name))
    return files


def hashlib_over_contents(root: Path) -> str:
    """Hash the concatenated contents, read as the NAR writer reads them:
    a small file in one read, a large one into a reused 1 MiB buffer."""
    hasher = hashlib.sha256()
    buffer = bytearray(1 << 20)
    view = memoryview(buffer)
    for path, size in files_in_nar_order(os.fsencode(root)):
        with open(path, "rb", buffering=0) as file:
            if size <= 1 << 16:
                hasher.update(file.read(size + 1))
                continue
            while count := file.readinto(buffer):
                hasher.update(view[:count])
    return hasher.hexdigest()


def pyguix_hash(root: Path) -> str:
    """Hash the NAR with pyguix."""
    return hash_path(root)[0].to_base16()


def nix_hash(root: Path) -> str:
    """Hash the NAR with nix-hash."""
    command = ["nix-hash", "--type", "sha256", str(root)]
    return subprocess.run(
        command, capture_output=True, text=True, check=True
    ).stdout.strip()


def median_time(
    function: Callable[[Path], str], root: Path, runs: int = RUNS
) -> tuple[float, str]:
    """Return the median duration of ``runs`` calls, and the last result."""
    times = []
    result = ""
    for _ in range(runs):
        result, seconds = timed(lambda: function(root))
        times.append(seconds)
    return median(times), result


def measure(
    smoke: bool, runs: int = RUNS, nix: bool = True
) -> tuple[int, dict[str, tuple[float, str]]]:
    """Build the tree, time each hasher ``runs`` times; return the size of
    the file contents and, by hasher, the median seconds and the digest
    (nix-hash's only when ``nix`` and it is installed)."""
    shape = (2, 200_000, 100) if smoke else (4, 20_000_000, 3000)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "tree"
        size = build_tree(root, *shape)
        hashlib_over_contents(root)  # warm the page cache

        timers: dict[str, Callable[[Path], str]] = {
            "hashlib": hashlib_over_contents,
            "pyguix": pyguix_hash,
        }
        if nix and shutil.which("nix-hash"):
            timers["nix-hash"] = nix_hash
        results = {
            name: median_time(timer, root, runs) for name, timer in timers.items()
        }
    return size, results


def main() -> None:
    """Build the tree, time each hasher, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="use a tiny tree")
    arguments = parser.parse_args()
    size, results = measure(arguments.smoke)

    megabytes = size / 1e6
    print(f"tree: {megabytes:.1f} MB of file contents, medians of {RUNS} runs")
    for name, (seconds, _) in results.items():
        print(f"  {name:9} {seconds * 1000:8.1f} ms  {megabytes / seconds:8.1f} MB/s")
    pyguix = results["pyguix"][0]
    print(f"  pyguix/hashlib speed ratio: {results['hashlib'][0] / pyguix:.3f}")
    if "nix-hash" in results:
        nix_seconds, nix_digest = results["nix-hash"]
        print(f"  pyguix/nix speed ratio:     {nix_seconds / pyguix:.3f}")
        agree = "yes" if nix_digest == results["pyguix"][1] else "NO"
        print(f"  pyguix and nix-hash agree:  {agree}")


if __name__ == "__main__":
    main()
