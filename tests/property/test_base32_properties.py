"""Properties of Nix base32 and of hash printing and parsing."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from store import base32
from store.hash import ALGORITHMS, Hash


@settings(max_examples=200)
@given(st.binary(max_size=80))
def test_decode_inverts_encode(data: bytes) -> None:
    text = base32.encode(data)
    assert len(text) == base32.encoded_length(len(data))
    assert set(text) <= set(base32.ALPHABET)
    assert base32.decode(text, len(data)) == data


@settings(max_examples=100)
@given(st.binary(min_size=1, max_size=40), st.binary(min_size=1, max_size=40))
def test_encoding_is_injective_for_equal_sizes(a: bytes, b: bytes) -> None:
    size = max(len(a), len(b))
    a, b = a.ljust(size, b"\0"), b.ljust(size, b"\0")
    assert (base32.encode(a) == base32.encode(b)) == (a == b)


@settings(max_examples=100)
@given(st.text(alphabet=base32.ALPHABET, min_size=52, max_size=52))
def test_decode_accepts_exactly_the_texts_that_round_trip(text: str) -> None:
    try:
        data = base32.decode(text, 32)
    except base32.Base32Error:
        assert text[0] not in "01"
    else:
        assert base32.encode(data) == text


@settings(max_examples=100)
@given(st.sampled_from(sorted(ALGORITHMS)), st.binary(max_size=64))
def test_hash_round_trips_in_every_form(algorithm: str, data: bytes) -> None:
    digest = Hash(algorithm, hashlib.new(algorithm, data).digest())
    for base in ("base16", "base32", "base64"):
        assert Hash.from_string(digest.to_string(base)) == digest  # type: ignore[arg-type]
        assert Hash.from_string(digest.to_string(base, False), algorithm) == digest  # type: ignore[arg-type]
    assert Hash.from_string(digest.to_sri()) == digest
