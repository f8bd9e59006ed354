"""Nix base32 against the vectors of Nix 2.8 (fixtures/base32/cases.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from store import base32
from store.hash import ALGORITHMS

CASES = json.loads(
    (Path(__file__).parents[2] / "fixtures" / "base32" / "cases.json").read_text()
)


def _id(case: dict[str, Any]) -> str:
    return f"{case['algorithm']}-{case.get('base16', case.get('base32'))}"[:40]


DIGESTS = CASES["to_base32"] + CASES["hashes"]
ACCEPTED = [case for case in CASES["parse"] if case["error"] is None]
REJECTED = [case for case in CASES["parse"] if case["error"] is not None]


@pytest.mark.parametrize("case", DIGESTS, ids=_id)
def test_encode_matches_nix(case: dict[str, Any]) -> None:
    assert base32.encode(bytes.fromhex(case["base16"])) == case["base32"]


@pytest.mark.parametrize("case", DIGESTS, ids=_id)
def test_decode_matches_nix(case: dict[str, Any]) -> None:
    size = ALGORITHMS[case["algorithm"]]
    assert base32.decode(case["base32"], size).hex() == case["base16"]


@pytest.mark.parametrize("case", ACCEPTED, ids=_id)
def test_decode_accepts_what_nix_accepts(case: dict[str, Any]) -> None:
    size = ALGORITHMS[case["algorithm"]]
    assert base32.decode(case["base32"], size).hex() == case["base16"]


@pytest.mark.parametrize("case", REJECTED, ids=_id)
def test_decode_rejects_what_nix_rejects(case: dict[str, Any]) -> None:
    with pytest.raises(base32.Base32Error):
        base32.decode(case["base32"], ALGORITHMS[case["algorithm"]])


def test_parse_vectors_cover_both_verdicts_for_every_algorithm() -> None:
    for algorithm in ALGORITHMS:
        verdicts = {
            c["error"] is None for c in CASES["parse"] if c["algorithm"] == algorithm
        }
        assert verdicts == {True, False}, algorithm


@pytest.mark.parametrize(
    ("size", "length"), [(16, 26), (20, 32), (32, 52), (64, 103), (1, 2), (0, 0)]
)
def test_encoded_length_is_nix_base32_len(size: int, length: int) -> None:
    assert base32.encoded_length(size) == length
    assert len(base32.encode(bytes(size))) == length


def test_last_character_holds_the_low_bits_of_byte_zero() -> None:
    assert base32.encode(b"\x01" + bytes(19)).endswith("1")
    assert base32.encode(b"\x1f" + bytes(19)) == "0" * 31 + "z"


@pytest.mark.parametrize(
    ("text", "size"),
    [
        pytest.param("0" * 51, 32, id="too-short"),
        pytest.param("0" * 53, 32, id="too-long"),
        pytest.param("0" * 51 + "e", 32, id="letter-e-not-in-alphabet"),
        pytest.param("0" * 51 + "A", 32, id="uppercase"),
        pytest.param("2" + "0" * 51, 32, id="top-bits-overflow"),
    ],
)
def test_decode_rejects_invalid_text(text: str, size: int) -> None:
    with pytest.raises(base32.Base32Error) as caught:
        base32.decode(text, size)
    assert text in str(caught.value)


def test_decode_error_names_offset_of_bad_character() -> None:
    with pytest.raises(base32.Base32Error) as caught:
        base32.decode("0" * 10 + "u" + "0" * 41, 32)
    assert caught.value.offset == 10
