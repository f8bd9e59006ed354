"""Properties of the ATerm writer and parser."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from derivations import json as drv_json
from derivations.aterm_fast import scan
from derivations.aterm_parser import DerivationParseError, from_aterm
from derivations.aterm_writer import to_aterm
from derivations.create import make_derivation
from derivations.derivation import Derivation, DerivationOutput
from derivations.hashing import check_output_paths
from store import base32

S = "/nix/store"
NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-._?="
ALGOS = {"md5": 16, "sha1": 20, "sha256": 32, "sha512": 64}

names = st.text(NAME_CHARS, min_size=1, max_size=20)
hash_parts = st.binary(min_size=20, max_size=20).map(base32.encode)
# Any text, and any bytes as the parser decodes them (surrogate escapes for
# bytes that are not UTF-8), so that every string is in its canonical form.
texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30) | st.binary(
    max_size=30
).map(lambda data: data.decode("utf-8", "surrogateescape"))


def store_path(hash_part: str, name: str) -> str:
    return f"{S}/{hash_part}-{name}"


@st.composite
def derivations(draw: st.DrawFn) -> Derivation:
    name = draw(names)
    if draw(st.booleans()):
        algo = draw(st.sampled_from(sorted(ALGOS)))
        digest = draw(st.binary(min_size=ALGOS[algo], max_size=ALGOS[algo]))
        out = DerivationOutput(
            store_path(draw(hash_parts), name), algo, digest, draw(st.booleans())
        )
        outputs = {"out": out}
    else:
        output_names = draw(
            st.sets(st.text(NAME_CHARS, min_size=1, max_size=8), min_size=1, max_size=4)
        )
        outputs = {
            o: DerivationOutput(
                store_path(draw(hash_parts), name if o == "out" else f"{name}-{o}")
            )
            for o in output_names
        }
    inputs = draw(
        st.dictionaries(
            st.builds(store_path, hash_parts, names.map(lambda n: n + ".drv")),
            st.frozensets(names, min_size=1, max_size=3),
            max_size=3,
        )
    )
    sources = draw(st.frozensets(st.builds(store_path, hash_parts, names), max_size=3))
    system = draw(
        st.text(
            st.characters(blacklist_characters='"\\', blacklist_categories=("Cs",)),
            max_size=15,
        )
    )
    return Derivation(
        name=name,
        outputs=outputs,
        input_derivations=inputs,
        input_sources=sources,
        system=system,
        builder=draw(texts),
        args=tuple(draw(st.lists(texts, max_size=4))),
        env=draw(st.dictionaries(texts, texts, max_size=5)),
    )


@settings(max_examples=300)
@given(derivations())
def test_write_then_parse_round_trips(drv: Derivation) -> None:
    text = to_aterm(drv)
    assert from_aterm(text, S, name=drv.name) == drv
    assert from_aterm(text, S) == drv


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_parser_on_arbitrary_bytes_raises_only_its_error(data: bytes) -> None:
    try:
        from_aterm(data, S)
    except DerivationParseError as error:
        assert 0 <= error.offset <= len(data)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    text = bytearray(to_aterm(draw(derivations())))
    for _ in range(draw(st.integers(1, 3))):
        index = draw(st.integers(0, len(text) - 1))
        text[index : index + draw(st.integers(0, 2))] = draw(st.binary(max_size=3))
    return bytes(text)


@settings(max_examples=200)
@given(mutated())
def test_parser_on_damaged_derivations_raises_only_its_error(data: bytes) -> None:
    try:
        drv = from_aterm(data, S)
    except DerivationParseError as error:
        assert 0 <= error.offset <= len(data)
    else:
        assert to_aterm(drv) == data


def strict(data: bytes) -> Derivation | None:
    try:
        return from_aterm(data, S, fast=False)
    except DerivationParseError:
        return None


@settings(max_examples=200)
@given(mutated() | derivations().map(to_aterm))
def test_fast_parser_accepts_exactly_what_the_strict_one_does(data: bytes) -> None:
    assert scan(data.decode("utf-8", "surrogateescape"), S, None) == strict(data)


@settings(max_examples=100)
@given(derivations())
def test_nix_json_round_trips(drv: Derivation) -> None:
    path = f"{S}/{'0' * 32}-{drv.name}.drv"
    with_path = dataclasses.replace(drv, path=path)
    assert (
        drv_json.from_json(path, drv_json.loads(drv_json.dumps([with_path]))[path])
        == with_path
    )


@settings(max_examples=100)
@given(
    names,
    st.lists(texts, max_size=3),
    st.dictionaries(texts, texts, max_size=4),
    st.sets(st.text(NAME_CHARS, min_size=1, max_size=6), min_size=1, max_size=3),
)
def test_created_derivations_parse_back_and_pass_the_output_check(
    name: str, args: list[str], env: dict[str, str], outputs: set[str]
) -> None:
    drv, aterm = make_derivation(
        S,
        name,
        "/bin/sh",
        args,
        env=env,
        outputs=sorted(outputs),
        system="x86_64-linux",
    )
    parsed = from_aterm(aterm, S, path=drv.path)
    assert parsed == drv
    check_output_paths(parsed, S, lambda path: parsed)
