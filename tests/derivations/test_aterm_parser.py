from __future__ import annotations

from typing import Any

import pytest

from derivations.aterm_parser import DerivationParseError, from_aterm
from derivations.aterm_writer import to_aterm
from store.errors import PyguixError

S = "/nix/store"
OUT = f"{S}/3ym13w8d4dgv69q58kslw5k991dg29vr-simple"
DRV = f"{S}/8ryr49qc64rw54kc4hy3khcg24gvgj1r-simple.drv"
GOOD = (
    f'Derive([("out","{OUT}","","")],[("{DRV}",["out"])],["{OUT}"],"x86_64-linux",'
    '"/bin/sh",["-c","true"],[("a","1"),("out","")])'
).encode()


def parse(text: bytes) -> Any:
    return from_aterm(text, S, name="simple")


def test_golden_files_parse_with_their_fields(golden: Any) -> None:
    fod = golden.case("fod-recursive-sha512")
    assert fod.is_fixed_output()
    assert fod.outputs["out"].recursive and fod.outputs["out"].hash_algo == "sha512"
    multi = golden.case("two-outputs-of-one")
    (inputs,) = multi.input_derivations.values()
    assert inputs == frozenset({"dev", "lib"})
    assert golden.case("structured").env.keys() == {"__json", "dev", "out"}


def test_non_utf8_bytes_survive(golden: Any) -> None:
    drv = golden.case("raw-bytes")
    assert drv.env["latin1"] == "caf\udce9 \udca9"
    assert drv.env["mixed"] == "é then \udce9"


def test_a_good_text_round_trips() -> None:
    assert to_aterm(parse(GOOD)) == GOOD


def test_name_is_inferred_from_the_out_path() -> None:
    assert from_aterm(GOOD, S).name == "simple"


BAD = {
    "unknown-escape": (GOOD.replace(b'"1"', b'"\\x"'), "unknown escape"),
    "raw-newline-in-quoted": (GOOD.replace(b'"1"', b'"\n"'), "raw '\\n'"),
    "backslash-in-system": (GOOD.replace(b"x86_64-linux", b"x86\\_64"), "backslash"),
    "trailing-bytes": (GOOD + b"\n", "trailing bytes"),
    "unterminated": (GOOD[:-20], "unterminated"),
    "truncated": (GOOD[:30], "end of text"),
    "duplicate-env": (
        GOOD.replace(b'("a","1")', b'("a","1"),("a","2")'),
        "duplicate env",
    ),
    "unsorted-env": (
        GOOD.replace(b'("a","1"),("out","")', b'("out",""),("a","1")'),
        "unsorted env",
    ),
    "duplicate-output-name": (
        GOOD.replace(b'["out"])', b'["out","out"])'),
        "duplicate output name",
    ),
    "no-outputs": (
        b"Derive([]" + GOOD[GOOD.index(b"],[(") + 1 :],
        "at least one output",
    ),
    "not-a-store-path": (
        GOOD.replace(f'["{OUT}"]'.encode(), b'["/tmp/x"]'),
        "invalid input source",
    ),
    "other-store": (GOOD.replace(b"/nix/store", b"/gnu/store"), "not in the store"),
    "input-not-drv": (
        GOOD.replace(b"simple.drv", b"simple.txt"),
        "does not end in '.drv'",
    ),
    "no-outputs-of-input": (GOOD.replace(b'["out"])', b"[])"), "no output used"),
    "unknown-algo": (
        GOOD.replace(b'"","")]', b'"sha3","00")]', 1),
        "unknown hash algorithm",
    ),
    "bad-hash-length": (
        GOOD.replace(b'"","")]', b'"sha1","00")]', 1),
        "is not a base16 sha1",
    ),
    "uppercase-hash": (
        GOOD.replace(b'"","")]', b'"md5","' + b"A" * 32 + b'")]', 1),
        "base16",
    ),
    "floating-output": (GOOD.replace(b'"","")]', b'"r:sha256","")]', 1), "base16"),
    "misnamed-output": (GOOD.replace(b'-simple",', b'-other",'), "not named 'simple'"),
    "wrong-head": (b"Derivation" + GOOD[6:], "expected 'Derive('"),
    "missing-comma": (
        GOOD.replace(b'"-c","true"', b'"-c" "true"'),
        "expected ',' or ']'",
    ),
}


@pytest.mark.parametrize("text,reason", BAD.values(), ids=BAD.keys())
def test_rejects_what_nix_never_writes(text: bytes, reason: str) -> None:
    with pytest.raises(DerivationParseError) as error:
        parse(text)
    assert reason in str(error.value)
    assert 0 <= error.value.offset <= len(text)
    assert isinstance(error.value, PyguixError)


def test_fixed_output_must_be_alone() -> None:
    two = f'Derive([("dev","{OUT}-dev","",""),("out","{OUT}","sha1","{"0" * 40}")],[],[],"s","b",[],[])'
    with pytest.raises(DerivationParseError, match="only output"):
        parse(two.encode())


def test_error_shows_offset_and_caret() -> None:
    text = GOOD.replace(b'"1"', b'"\\q"')
    with pytest.raises(DerivationParseError) as error:
        parse(text)
    offset = text.index(b"\\q")
    assert error.value.offset == offset
    excerpt, caret = str(error.value).splitlines()[-2:]
    assert excerpt[caret.index("^") :].startswith("\\q")


def test_offset_counts_bytes_after_non_ascii() -> None:
    text = GOOD.replace(b'"1"', '"é☃\\q"'.encode())
    with pytest.raises(DerivationParseError) as error:
        parse(text)
    assert error.value.offset == text.index(b"\\q")
