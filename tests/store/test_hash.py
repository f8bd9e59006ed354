"""Hash printing and parsing in every form Nix 2.8 prints, and the XOR fold
(fixtures/base32/cases.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from store.hash import ALGORITHMS, Hash, HashError, compress_hash, hash_bytes

CASES = json.loads(
    (Path(__file__).parents[2] / "fixtures" / "base32" / "cases.json").read_text()
)


def _id(case: dict[str, Any]) -> str:
    return f"{case['algorithm']}-{case['text'][:12]!r}"


@pytest.mark.parametrize("case", CASES["hashes"], ids=_id)
def test_hash_bytes_prints_every_form_as_nix(case: dict[str, Any]) -> None:
    digest = hash_bytes(case["algorithm"], case["text"].encode())
    assert digest.to_base16() == case["base16"]
    assert digest.to_base32() == case["base32"]
    assert digest.to_base64() == case["base64"]
    assert digest.to_sri() == case["sri"]
    assert digest.to_string("base16") == f"{case['algorithm']}:{case['base16']}"
    assert digest.to_string("base32", prefixed=False) == case["base32"]


@pytest.mark.parametrize("case", CASES["hashes"], ids=_id)
@pytest.mark.parametrize("form", ["base16", "base32", "base64"])
def test_from_string_parses_every_form(case: dict[str, Any], form: str) -> None:
    expected = Hash(case["algorithm"], bytes.fromhex(case["base16"]))
    text = case[form]
    assert Hash.from_string(f"{case['algorithm']}:{text}") == expected
    assert Hash.from_string(text, case["algorithm"]) == expected


@pytest.mark.parametrize("case", CASES["hashes"], ids=_id)
def test_from_string_parses_sri(case: dict[str, Any]) -> None:
    expected = Hash(case["algorithm"], bytes.fromhex(case["base16"]))
    assert Hash.from_string(case["sri"]) == expected


@pytest.mark.parametrize("case", CASES["compress_hash"], ids=_id)
def test_compress_hash_matches_nix_truncate(case: dict[str, Any]) -> None:
    digest = bytes.fromhex(case["base16"])
    # nix-hash --truncate folds only digests longer than 20 bytes.
    expected = case["truncated_base16"]
    if len(digest) > 20:
        assert compress_hash(digest, 20).hex() == expected
    else:
        assert expected == case["base16"]


def test_compress_hash_folds_by_xor() -> None:
    assert compress_hash(bytes([1, 2, 3, 4]), 2) == bytes([1 ^ 3, 2 ^ 4])


@pytest.mark.parametrize(
    ("text", "algorithm"),
    [
        pytest.param("sha256:abc", None, id="wrong-length"),
        pytest.param("sha3:" + "0" * 64, None, id="unknown-algorithm"),
        pytest.param("0" * 64, None, id="algorithm-missing"),
        pytest.param("sha1:" + "0" * 64, "sha256", id="algorithm-conflict"),
        pytest.param("sha256:" + "g" * 64, None, id="bad-base16"),
        pytest.param("sha256:" + "e" * 52, None, id="bad-base32"),
        pytest.param("sha256-" + "!" * 44, None, id="bad-sri"),
    ],
)
def test_from_string_rejects(text: str, algorithm: str | None) -> None:
    with pytest.raises(HashError):
        Hash.from_string(text, algorithm)


def test_every_algorithm_has_vectors() -> None:
    assert {case["algorithm"] for case in CASES["hashes"]} == set(ALGORITHMS)
