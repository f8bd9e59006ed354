"""``pyguix build -f FILE.py`` on gexp packages, in separate processes: real
builds whose programs are run, and the persistent lowering cache seen from
the command line (a second evaluation lowers nothing it knows; a damaged
cache file still gives the same derivations).

The file is ``fixtures/gexp/packages.py``, the example of ``docs/gexp.md``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgpack
import pytest

from builders.linux import namespaces_unavailable_reason
from store import base32
from store.local import LocalStore

PACKAGES = Path(__file__).resolve().parents[2] / "fixtures" / "gexp" / "packages.py"
OBJECTS = ["bundle", "show_data", "encode", "config", "split", "greeting", "hello"]
"""Every file-like object of the file: each is lowered through the cache."""

# Lowers the objects the way 'pyguix build -f' does and prints what the
# persistent cache answered, which the command line does not report yet.
DRIVER = """
import json, sys
from derivations.lowering import lowering_stats
from pyguix.commands.build import load_file_targets
from store.local import LocalStore

store_dir, state_dir, file, *names = sys.argv[1:]
store = LocalStore(store_dir, state_dir)
items = load_file_targets(store, file, names)
stats = lowering_stats(store)
print(json.dumps({
    "paths": [str(getattr(item, "path", item)) for item in items],
    "hits": stats.hits, "misses": stats.misses, "stale": stats.stale,
    "damaged": stats.damaged,
}))
"""

needs_namespaces = pytest.mark.skipif(
    namespaces_unavailable_reason() is not None,
    reason=f"no namespaces here: {namespaces_unavailable_reason()}",
)


class Store:
    """A store under ``tmp_path`` (logical directory = physical one) and
    the processes that use it."""

    def __init__(self, tmp_path: Path) -> None:
        self.store_dir = str(tmp_path / "store")
        self.state_dir = str(tmp_path / "state")
        self.cache_file = Path(self.state_dir, "cache", "lowering.msgpack")

    def pyguix(self, *args: str) -> list[str]:
        """Run ``pyguix build ARGS`` in a new process; return its stdout lines."""
        options = ["--store-dir", self.store_dir, "--state-dir", self.state_dir]
        command = [sys.executable, "-m", "pyguix", *options, "build", *args]
        return run(command).splitlines()

    def evaluate(self, *names: str) -> dict[str, Any]:
        """Lower ``names`` of the packages file in a new process; return
        the paths and the cache counters."""
        command = [sys.executable, "-c", DRIVER, self.store_dir, self.state_dir]
        result: dict[str, Any] = json.loads(run([*command, str(PACKAGES), *names]))
        return result

    def open(self) -> LocalStore:
        return LocalStore(self.store_dir, self.state_dir)


def run(command: list[str]) -> str:
    result = subprocess.run(
        command, capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path)


@needs_namespaces
def test_build_file_then_run_its_programs(store: Store) -> None:
    show_data, encode, bundle = store.pyguix(
        "-f", str(PACKAGES), "show_data", "encode", "bundle"
    )

    assert run([show_data]) == "data: hello, world\n"
    assert run([f"{bundle}/bin/encode", "a", "b"]) == base32.encode(b"a b") + "\n"
    assert os.readlink(f"{bundle}/bin/show-data") == show_data
    with store.open() as local:
        (split_lib,) = local.query_references(show_data)
        assert split_lib.endswith("-split-lib")
        split_drv = local.query_deriver(split_lib)
        assert split_drv is not None
        split_out = local.query_derivation_outputs(split_drv)["out"]
        assert local.is_valid(split_out), "the default output exists unreferenced"
        (tree,) = local.query_references(encode)
        assert tree.endswith("-module-import")
        bundled = local.query_references(bundle)
        assert {show_data, encode} < bundled and len(bundled) == 4


def test_second_evaluation_lowers_nothing_the_cache_knows(
    store: Store, tmp_path: Path
) -> None:
    args = ["-f", str(PACKAGES), "--derivation", *OBJECTS]
    first = store.pyguix(*args)
    written = store.cache_file.read_bytes(), store.cache_file.stat().st_mtime_ns

    second = store.pyguix(*args)
    warm = store.evaluate(*OBJECTS)
    cold = Store(tmp_path / "fresh").evaluate(*OBJECTS)

    assert second == first and len(first) == 5, "greeting and hello are no .drv"
    assert (store.cache_file.read_bytes(), store.cache_file.stat().st_mtime_ns) == (
        written
    ), "the second run recorded nothing new"
    assert warm["misses"] == 0
    assert warm["hits"] == len(OBJECTS)
    assert cold["hits"] == 0
    assert cold["misses"] > len(OBJECTS)
    drvs = [path for path in warm["paths"] if path.endswith(".drv")]
    assert drvs == first
    assert [Path(p).name[33:] for p in cold["paths"]] == [
        Path(p).name[33:] for p in warm["paths"]
    ]


def _garbage(data: bytes) -> bytes:
    return b"\x93not a msgpack cache" + data[::-1]


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _other_paths(data: bytes) -> bytes:
    """Keep the file well-formed but point every entry at a path that is
    not in the store (one character of each hash part changed)."""
    top = msgpack.unpackb(data, raw=False, strict_map_key=False)
    for entry in top["entries"].values():
        directory, _, base = entry[1].rpartition("/")
        changed = "0" if base[0] != "0" else "1"
        entry[1] = f"{directory}/{changed}{base[1:]}"
    packed: bytes = msgpack.packb(top, use_bin_type=True)
    return packed


@pytest.mark.parametrize(
    "corrupt",
    [_garbage, _truncated, _other_paths],
    ids=["garbage", "truncated", "paths-not-in-store"],
)
def test_corrupt_cache_still_gives_the_same_derivations(
    store: Store, corrupt: Any
) -> None:
    args = ["-f", str(PACKAGES), "--derivation", *OBJECTS]
    expected = store.pyguix(*args)
    healthy = store.cache_file.read_bytes()

    store.cache_file.write_bytes(corrupt(healthy))
    assert store.pyguix(*args) == expected
    store.cache_file.write_bytes(corrupt(healthy))
    damaged = store.evaluate(*OBJECTS)
    repaired = store.evaluate(*OBJECTS)

    assert [p for p in damaged["paths"] if p.endswith(".drv")] == expected
    assert damaged["hits"] == 0
    assert damaged["misses"] > len(OBJECTS)
    if corrupt is _other_paths:
        assert not damaged["damaged"] and damaged["stale"] == damaged["misses"]
    else:
        assert damaged["damaged"]
    assert repaired["paths"] == damaged["paths"]
    assert (repaired["hits"], repaired["misses"]) == (len(OBJECTS), 0)


def test_build_reports_what_it_lowered_and_what_the_cache_knew(store: Store) -> None:
    options = ["--store-dir", store.store_dir, "--state-dir", store.state_dir]
    command = [sys.executable, "-m", "pyguix", "-v", *options, "build", "-d"]
    command += ["-f", str(PACKAGES), "bundle"]

    def lowering_line() -> str:
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        (line,) = [line for line in result.stderr.splitlines() if "lowered" in line]
        return line

    first = lowering_line()
    assert not first.startswith("0 objects lowered")
    assert first.endswith(", 0 from cache")
    assert lowering_line().startswith("0 objects lowered, ")
