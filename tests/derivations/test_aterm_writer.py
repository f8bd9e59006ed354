from __future__ import annotations

from typing import Any

from derivations.aterm_writer import to_aterm
from derivations.derivation import Derivation, DerivationOutput


def test_parse_then_write_gives_nix_bytes(golden: Any, golden_path: str) -> None:
    assert to_aterm(golden.drvs[golden_path]) == golden.data[golden_path]


def _drv(**changes: object) -> Derivation:
    fields: dict[str, object] = dict(
        name="x",
        outputs={"out": DerivationOutput("/s/00000000000000000000000000000000-x")},
        input_derivations={},
        input_sources=frozenset(),
        system="x86_64-linux",
        builder="/bin/sh",
        args=(),
        env={"out": "/s/00000000000000000000000000000000-x"},
    )
    fields.update(changes)
    return Derivation(**fields)  # type: ignore[arg-type]


def test_quoted_strings_escape_only_five_characters() -> None:
    text = to_aterm(_drv(args=('"\\\n\r\t\x01\x7fé',)))
    assert b'["\\"\\\\\\n\\r\\t\x01\x7f\xc3\xa9"]' in text


def test_system_is_written_raw() -> None:
    assert b',"a\tb\nc",' in to_aterm(_drv(system="a\tb\nc"))


def test_surrogate_escapes_become_the_original_bytes() -> None:
    text = to_aterm(_drv(env={"k": "caf\udce9"}))
    assert b'("k","caf\xe9")' in text


def test_lists_are_sorted_by_bytes_not_code_points() -> None:
    # U+00E9 is C3 A9 in UTF-8; the lone byte E9 sorts after it.
    text = to_aterm(_drv(env={"\udce9": "1", "é": "2", "z": "3"}))
    assert text.index(b'"z"') < text.index(b'"\xc3\xa9"') < text.index(b'"\xe9"')


def test_masking_empties_output_paths_and_output_variables() -> None:
    text = to_aterm(_drv(env={"out": "/s/p", "other": "/s/p"}), mask_outputs=True)
    assert text.startswith(b'Derive([("out","","","")]')
    assert b'("out","")' in text and b'("other","/s/p")' in text


def test_fixed_output_fields() -> None:
    output = DerivationOutput("/s/p", "sha1", bytes(range(20)), recursive=True)
    text = to_aterm(_drv(outputs={"out": output}))
    assert text.startswith(
        b'Derive([("out","/s/p","r:sha1","000102030405060708090a0b0c0d0e0f10111213")]'
    )


def test_replaced_inputs_are_written_in_their_place() -> None:
    text = to_aterm(_drv(), input_derivations={"bb": {"out"}, "aa": {"z", "a"}})
    assert b'[("aa",["a","z"]),("bb",["out"])]' in text
