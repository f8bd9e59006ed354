"""Store path computation and parsing against Nix 2.8
(fixtures/storepaths/*.json, fixtures/nar/cases.json)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from store.errors import InvalidPathError
from store.hash import Hash
from store.paths import (
    StorePath,
    check_name,
    make_fixed_output_path,
    make_text_path,
)

FIXTURES = Path(__file__).parents[2] / "fixtures"
STORE = "/nix/store"
TEXT = json.loads((FIXTURES / "storepaths" / "text.json").read_text())
FIXED = json.loads((FIXTURES / "storepaths" / "fixed.json").read_text())
NAMES = json.loads((FIXTURES / "storepaths" / "names.json").read_text())
NARS = json.loads((FIXTURES / "nar" / "cases.json").read_text())


@pytest.mark.parametrize("case", TEXT, ids=lambda case: case["name"])
def test_make_text_path_matches_to_file(case: dict[str, Any]) -> None:
    text_hash = hashlib.sha256(case["contents"].encode()).digest()
    path = make_text_path(case["name"], text_hash, case["references"], STORE)
    assert str(path) == case["path"]


def test_text_references_are_sorted_whatever_the_order_given() -> None:
    case = next(c for c in TEXT if len(c["references"]) == 2)
    text_hash = hashlib.sha256(case["contents"].encode()).digest()
    reversed_refs = list(reversed(case["references"]))
    assert (
        str(make_text_path(case["name"], text_hash, reversed_refs, STORE))
        == case["path"]
    )


@pytest.mark.parametrize("case", FIXED, ids=lambda case: case["name"])
def test_make_fixed_output_path_matches_add_fixed(case: dict[str, Any]) -> None:
    content_hash = Hash.from_string(case["hash_base16"], case["algorithm"])
    path = make_fixed_output_path(case["method"], content_hash, case["name"], STORE)
    assert str(path) == case["path"]


@pytest.mark.parametrize("name", sorted(NARS), ids=str)
def test_make_fixed_output_path_recursive_sha256_is_nix_store_add(name: str) -> None:
    case = NARS[name]
    nar_hash = Hash.from_string(case["nar_sha256_base32"], "sha256")
    path = make_fixed_output_path("recursive", nar_hash, name, STORE)
    assert str(path) == case["store_path"]


ACCEPTED = [case for case in NAMES if case["error"] is None]
REJECTED = [case for case in NAMES if case["error"] is not None]


@pytest.mark.parametrize("case", ACCEPTED, ids=lambda case: case["name"][:24])
def test_names_nix_accepts_give_its_path(case: dict[str, Any]) -> None:
    text_hash = hashlib.sha256(case["contents"].encode()).digest()
    assert str(make_text_path(case["name"], text_hash, [], STORE)) == case["path"]
    assert str(StorePath.from_string(case["path"], STORE)) == case["path"]


@pytest.mark.parametrize(
    "case", REJECTED, ids=lambda case: case["name"][:24] or "empty"
)
def test_names_nix_rejects_are_rejected(case: dict[str, Any]) -> None:
    with pytest.raises(InvalidPathError):
        check_name(case["name"])


def test_name_limit_is_211() -> None:
    check_name("x" * 211)
    with pytest.raises(InvalidPathError, match="211"):
        check_name("x" * 212)


ALL_PATHS = [case["path"] for case in TEXT + FIXED + ACCEPTED] + [
    case["store_path"] for case in NARS.values()
]


@pytest.mark.parametrize("path", ALL_PATHS, ids=lambda path: path[44:70])
def test_store_path_round_trips(path: str) -> None:
    parsed = StorePath.from_string(path, STORE)
    assert str(parsed) == path
    assert parsed.store_dir == STORE
    assert parsed.base_name == path[len(STORE) + 1 :]
    assert StorePath.from_base_name(parsed.base_name, STORE) == parsed


HASH = "0" * 32


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(f"/gnu/store/{HASH}-x", id="outside-store-dir"),
        pytest.param(f"/nix/store/{HASH}", id="name-missing"),
        pytest.param(f"/nix/store/{HASH}-", id="name-empty"),
        pytest.param(f"/nix/store/{HASH}_x", id="dash-missing"),
        pytest.param(f"/nix/store/{HASH[:31]}-x", id="hash-part-too-short"),
        pytest.param(f"/nix/store/{HASH[:31]}e-x", id="hash-part-letter-e"),
        pytest.param(f"/nix/store/{HASH[:31]}A-x", id="hash-part-uppercase"),
        pytest.param(f"/nix/store/{HASH}-x/bin", id="file-inside-item"),
        pytest.param(f"/nix/store/{HASH}-a b", id="name-space"),
        pytest.param(f"/nix/store/{HASH}-caf\u00e9", id="name-non-ascii"),
        pytest.param(f"/nix/store/{HASH}-x~", id="name-tilde"),
        pytest.param(f"/nix/store/{HASH}-" + "x" * 212, id="name-too-long"),
        pytest.param(f"/nix/store{HASH}-x", id="slash-missing"),
        pytest.param("", id="empty"),
    ],
)
def test_store_path_rejects(path: str) -> None:
    with pytest.raises(InvalidPathError) as caught:
        StorePath.from_string(path, STORE)
    assert caught.value.path == path


def test_store_path_is_derivation() -> None:
    assert StorePath(STORE, HASH, "hello-1.0.drv").is_derivation()
    assert not StorePath(STORE, HASH, "hello-1.0").is_derivation()


def test_store_paths_sort_as_full_paths() -> None:
    paths = [StorePath.from_string(p, STORE) for p in ALL_PATHS]
    assert [str(p) for p in sorted(paths)] == sorted(ALL_PATHS)
