"""Benchmark writing small texts into a pyguix store: the path of ``.drv`` files.

Measured, per text of about 1 KiB referring to the two texts before it, in a
fresh store each time:

* ``add_text`` one at a time, cold, then again once valid;
* ``add_texts`` of all of them (one transaction), and ``add_text`` calls
  inside ``with store.batch()``, when the store has them;
* the floor: creating, writing and closing as many files in a directory of
  the same file system, and as much when the store is on ``/dev/shm``
  (tmpfs), which shows the cost of pyguix apart from the disk's.

Each figure is wall-clock time and, in brackets, the CPU time of the process
(user and system): on a machine busy with other work, the CPU time is the
steadier of the two.

Usage: ``python3 benchmarks/store_text.py [--smoke] [--count N] [--dir D]``.
Timings are printed, never asserted; run it with ``PYTHONPATH`` pointing at
another checkout to compare two versions of ``store``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable

from store.local import LocalStore

Items = list[tuple[str, str, list[str]]]


def items(store: LocalStore, count: int, prefix: str) -> Items:
    """Texts referring to the two before them (their paths computed)."""
    import hashlib

    from store.paths import make_text_path

    result: Items = []
    paths: list[str] = []
    for index in range(count):
        refs = paths[-2:]
        text = f"Derive {prefix}{index} {' '.join(refs)}\n" + "x" * 900
        name = f"{prefix}{index}.drv"
        result.append((name, text, refs))
        digest = hashlib.sha256(text.encode()).digest()
        paths.append(str(make_text_path(name, digest, refs, store.store_dir)))
    return result


def per_item(count: int, action: Callable[[], object]) -> tuple[float, float]:
    """Return the wall-clock and CPU microseconds of ``action`` per item."""
    start, cpu = time.perf_counter(), time.process_time()
    action()
    wall = time.perf_counter() - start
    return wall / count * 1e6, (time.process_time() - cpu) / count * 1e6


def floor(directory: str, count: int) -> tuple[float, float]:
    """Microseconds to create, write and close one ~1 KiB file."""
    target = tempfile.mkdtemp(dir=directory)
    data = b"x" * 1000

    def create() -> None:
        for index in range(count):
            fd = os.open(f"{target}/f{index}", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            os.write(fd, data)
            os.close(fd)

    return per_item(count, create)


def measure(directory: str | None, count: int) -> dict[str, tuple[float, float]]:
    results: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(dir=directory) as work:
        store = LocalStore(f"{work}/store", f"{work}/state")
        texts = items(store, count, "single")

        def single() -> None:
            for text in texts:
                store.add_text(*text)

        results["add_text, cold"] = per_item(count, single)
        results["add_text, valid"] = per_item(count, single)
        if hasattr(store, "add_texts"):
            many = items(store, count, "many")
            results["add_texts"] = per_item(count, lambda: store.add_texts(many))
            batched = items(store, count, "batched")

            def in_batch() -> None:
                with store.batch():
                    for text in batched:
                        store.add_text(*text)

            results["add_text in batch()"] = per_item(count, in_batch)
        results["floor: create a file"] = floor(work, count)
        store.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="500 texts")
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--dir", help="where the store goes (default: $TMPDIR)")
    options = parser.parse_args()
    count = 500 if options.smoke else options.count
    places = {"disk": options.dir}
    if os.path.isdir("/dev/shm"):
        places["tmpfs"] = "/dev/shm"
    print(f"{count} texts of ~1 KiB, microseconds per text")
    for place, directory in places.items():
        for name, (wall, cpu) in measure(directory, count).items():
            print(f"  {place:5s} {name:24s} {wall:8.0f} ({cpu:6.0f})")


if __name__ == "__main__":
    main()
