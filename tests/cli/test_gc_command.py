"""'pyguix gc': roots, dry runs, deletion, refusal, run as real processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from helpers.deep import DEPTH, make_deep_tree


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


def one_error_and_hint(result: subprocess.CompletedProcess[str]) -> str:
    """Check that ``result`` failed with one error line and one hint line;
    return the error line."""
    lines = result.stderr.splitlines()
    assert result.returncode == 1, result.stderr
    assert [line.split(":")[0] for line in lines] == ["error", "hint"], lines
    return lines[0]


def test_add_root_in_a_missing_directory_is_refused(tmp_path: Path, tree: Path) -> None:
    path = pyguix(tmp_path, "store", "add", str(tree)).stdout.strip()
    link = str(tmp_path / "missing" / "dir" / "root")
    refused = pyguix(tmp_path, "gc", "--add-root", link, path)
    assert f"cannot make '{link}' a GC root" in one_error_and_hint(refused)
    assert pyguix(tmp_path, "gc", "--list-roots").stdout == ""


def test_add_root_to_an_invalid_path_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "store" / ("0" * 32 + "-x"))
    link = tmp_path / "r2"
    refused = pyguix(tmp_path, "gc", "--add-root", str(link), path)
    assert f"'{path}': it is not valid" in one_error_and_hint(refused)
    assert not os.path.lexists(link)
    assert pyguix(tmp_path, "gc", "--list-roots").stdout == ""


def test_delete_of_a_path_neither_valid_nor_on_disk_is_refused(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "store" / ("0" * 32 + "-x"))
    refused = pyguix(tmp_path, "gc", "--delete", path)
    assert f"'{path}': it is neither valid nor on disk" in one_error_and_hint(refused)


def test_delete_of_an_unregistered_entry_removes_it(tmp_path: Path) -> None:
    # As nix-store --delete 2.8 does with an entry of the store directory
    # that is not valid.
    pyguix(tmp_path, "gc", "--list-roots")  # creates the store
    path = str(tmp_path / "store" / ("0" * 32 + "-y"))
    os.mkdir(path)
    deleted = pyguix(tmp_path, "gc", "--delete", path)
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout.split() == [path]
    assert not os.path.lexists(path)


def test_deep_item_is_collected(clean_tmp_path: Path) -> None:
    tmp_path = clean_tmp_path
    deep = tmp_path / "deep"
    make_deep_tree(deep, DEPTH)
    path = pyguix(tmp_path, "store", "add", str(deep)).stdout.strip()
    collected = pyguix(tmp_path, "gc")
    assert collected.returncode == 0, collected.stderr[-2000:]
    assert collected.stdout.split() == [path]
    assert not os.path.lexists(path)
