"""'pyguix gc': roots, dry runs, deletion, refusal, run as real processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def pyguix(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    where = [
        "--store-dir",
        str(tmp_path / "store"),
        "--state-dir",
        str(tmp_path / "state"),
    ]
    return subprocess.run(
        [sys.executable, "-m", "pyguix", *where, *args],
        capture_output=True,
        text=True,
        check=False,
    )


def test_gc_cycle(tmp_path: Path, tree: Path) -> None:
    kept = pyguix(tmp_path, "store", "add", str(tree)).stdout.strip()
    dead = pyguix(tmp_path, "store", "add", str(tree / "README")).stdout.strip()
    link = str(tmp_path / "result")

    assert pyguix(tmp_path, "gc", "--add-root", link, kept).returncode == 0
    assert os.readlink(link) == kept
    roots = pyguix(tmp_path, "gc", "--list-roots").stdout
    assert f"{link} -> {kept}" in roots

    refused = pyguix(tmp_path, "gc", "--delete", kept)
    assert refused.returncode == 1
    assert f"kept by the root '{link}'" in refused.stderr

    assert pyguix(tmp_path, "gc", "--dry-run").stdout.split() == [dead]
    assert os.path.exists(dead)

    collected = pyguix(tmp_path, "gc")
    assert collected.stdout.split() == [dead]
    assert (
        "1 store paths deleted" in collected.stderr and "MiB freed" in collected.stderr
    )
    assert not os.path.exists(dead) and os.path.exists(kept)

    os.unlink(link)
    assert pyguix(tmp_path, "gc", "--delete", kept).stdout.split() == [kept]
    assert not os.path.exists(kept)


def test_paths_need_delete(tmp_path: Path) -> None:
    result = pyguix(tmp_path, "gc", str(tmp_path))
    assert result.returncode != 0 and "--delete" in result.stderr
