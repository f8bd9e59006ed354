"""``pyguix hash`` against the hashes Nix 2.8 printed for the NAR vectors
(fixtures/nar/cases.json), the flat hashes (fixtures/base32/cases.json) and
``nix-hash --truncate`` (fixtures/hash/truncate.json)."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from helpers.deep import make_deep_tree

from pyguix.cli import cli

FIXTURES = Path(__file__).parents[2] / "fixtures"
NARS: dict[str, dict[str, Any]] = json.loads(
    (FIXTURES / "nar" / "cases.json").read_text()
)
FLAT = json.loads((FIXTURES / "base32" / "cases.json").read_text())["hashes"]
TRUNCATED: dict[str, Any] = json.loads(
    (FIXTURES / "hash" / "truncate.json").read_text()
)

_spec = importlib.util.spec_from_file_location(
    "nar_trees", FIXTURES / "nar" / "trees.py"
)
assert _spec is not None and _spec.loader is not None
trees = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(trees)

SMALL = ["mixed-tree", "executable-file", "relative-symlink", "empty-directory"]


def run(*args: str) -> str:
    result = CliRunner().invoke(cli, ["hash", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def built(tmp_path: Path) -> dict[str, Path]:
    paths = {}
    for name in SMALL:
        paths[name] = tmp_path / name
        trees.build_tree(NARS[name]["tree"], paths[name])
    return paths


def test_path_prints_base16_sha256_one_per_line(built: dict[str, Path]) -> None:
    output = run("path", *(str(built[name]) for name in SMALL))
    assert output.splitlines() == [NARS[name]["nar_sha256_base16"] for name in SMALL]


@pytest.mark.parametrize(
    ("flags", "key"),
    [
        (["--type", "sha256", "--base32"], "nar_sha256_base32"),
        (["--type", "sha256", "--base16"], "nar_sha256_base16"),
        (["--type", "md5"], "nar_md5_base16"),
        (["--type", "sha1"], "nar_sha1_base16"),
        (["--type", "sha512"], "nar_sha512_base16"),
    ],
)
def test_path_type_and_encoding(
    built: dict[str, Path], flags: list[str], key: str
) -> None:
    assert (
        run("path", *flags, str(built["mixed-tree"])).strip() == NARS["mixed-tree"][key]
    )


def test_path_sri_and_base64(built: dict[str, Path]) -> None:
    digest = bytes.fromhex(NARS["mixed-tree"]["nar_sha256_base16"])
    encoded = base64.b64encode(digest).decode()
    assert run("path", "--base64", str(built["mixed-tree"])).strip() == encoded
    assert run("path", "--sri", str(built["mixed-tree"])).strip() == f"sha256-{encoded}"


FLAT_CASES = [case for case in FLAT if case["text"] == "abc"]


@pytest.mark.parametrize("case", FLAT_CASES, ids=lambda case: case["algorithm"])
@pytest.mark.parametrize("form", ["base16", "base32", "base64", "sri"])
def test_file_matches_nix_hash_flat(
    tmp_path: Path, case: dict[str, Any], form: str
) -> None:
    file = tmp_path / "abc"
    file.write_text(case["text"])
    output = run("file", "--type", case["algorithm"], f"--{form}", str(file))
    assert output.strip() == case[form]


@pytest.mark.parametrize("algorithm", ["md5", "sha1", "sha256", "sha512"])
@pytest.mark.parametrize("base", ["base16", "base32"])
def test_path_truncate_matches_nix_hash(
    built: dict[str, Path], algorithm: str, base: str
) -> None:
    output = run(
        "path",
        "--truncate",
        "--type",
        algorithm,
        f"--{base}",
        *(str(built[name]) for name in SMALL),
    )
    expected = [
        TRUNCATED["nar"][name][algorithm][f"truncated_{base}"] for name in SMALL
    ]
    assert output.splitlines() == expected


@pytest.mark.parametrize("name", sorted(TRUNCATED["flat"]))
@pytest.mark.parametrize("algorithm", ["md5", "sha1", "sha256", "sha512"])
def test_file_truncate_matches_nix_hash_flat(
    tmp_path: Path, name: str, algorithm: str
) -> None:
    case = TRUNCATED["flat"][name]
    file = tmp_path / name
    file.write_text(case["text"])
    expected = case["hashes"][algorithm]
    for base in ["base16", "base32"]:
        output = run("file", "--truncate", "--type", algorithm, f"--{base}", str(file))
        assert output.strip() == expected[f"truncated_{base}"]
    assert run("file", "--type", algorithm, str(file)).strip() == expected["base16"]


def test_truncate_folds_rather_than_cuts(built: dict[str, Path]) -> None:
    full = bytes.fromhex(NARS["mixed-tree"]["nar_sha256_base16"])
    folded = bytes.fromhex(TRUNCATED["nar"]["mixed-tree"]["sha256"]["truncated_base16"])
    assert folded != full[:20]
    assert folded[:12] == bytes(
        a ^ b for a, b in zip(full[:12], full[20:], strict=True)
    )
    encoded = base64.b64encode(folded).decode()
    tree = str(built["mixed-tree"])
    assert run("path", "--truncate", "--base64", tree).strip() == encoded
    assert run("path", "--truncate", "--sri", tree).strip() == f"sha256-{encoded}"


def _main(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pyguix", "hash", *args],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "words"),
    [
        pytest.param(["path", "MISSING"], "does not exist", id="path-missing"),
        pytest.param(["file", "MISSING"], "not a regular file", id="file-missing"),
        pytest.param(["file", "/"], "not a regular file", id="file-is-directory"),
    ],
)
def test_bad_paths_give_one_error_line(
    tmp_path: Path, args: list[str], words: str
) -> None:
    # A path under tmp_path surely does not exist, whatever the host holds.
    missing = str(tmp_path / "missing")
    result = _main(*[missing if arg == "MISSING" else arg for arg in args])
    assert result.returncode == 1
    assert result.stdout == ""
    assert (
        result.stderr.startswith("error: ") and words in result.stderr.splitlines()[0]
    )
    assert "Traceback" not in result.stderr


def test_unsupported_file_type_is_an_error(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    result = _main("path", str(tmp_path / "fifo"))
    assert result.returncode == 1
    assert "unsupported type" in result.stderr.splitlines()[0]
    assert "Traceback" not in result.stderr


def test_unknown_type_is_a_usage_error(tmp_path: Path) -> None:
    result = _main("path", "--type", "sha3", str(tmp_path))
    assert result.returncode == 2
    assert "sha3" in result.stderr


DEEP_TREE_HASH = "ffa1e7061b5cbf52fc1b63345baa111b8d524efd8227ca62750bd7324709082d"
"""``nix-hash --type sha256 top`` (Nix 2.8) of ``top/d/.../d/leaf``: 1100
directories ``d`` below ``top``, then the file ``leaf`` holding ``deep\\n``."""


def test_path_nested_deeper_than_the_recursion_limit(clean_tmp_path: Path) -> None:
    path = str(clean_tmp_path / "top")
    make_deep_tree(Path(path), 1100)
    result = subprocess.run(
        [sys.executable, "-m", "pyguix", "hash", "path", path],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == DEEP_TREE_HASH
