"""Properties of the writers of ``.attrs.json`` and ``.attrs.sh``."""

from __future__ import annotations

import json
import shlex
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from builders.structured_attrs import to_attrs_json, to_attrs_sh

texts = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"))
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4)
    ),
    max_leaves=20,
)


@given(values)
def test_json_reads_back_as_written(value: Any) -> None:
    text = to_attrs_json(value)
    assert json.loads(text) == value
    assert "\n" not in text


@given(st.dictionaries(texts, values, max_size=6))
def test_json_keys_are_sorted_by_their_utf8_bytes(attrs: dict[str, Any]) -> None:
    keys = list(json.loads(to_attrs_json(attrs)))
    assert keys == sorted(keys, key=lambda key: key.encode())


@given(texts)
def test_shell_strings_read_back_as_written(text: str) -> None:
    line = to_attrs_sh({"v": text})
    assert line.startswith("declare v=") and line.endswith("\n")
    assert shlex.split(line[len("declare v=") : -1]) == [text]


keys = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0]="))


@given(st.dictionaries(keys, texts, max_size=4))
def test_shell_objects_quote_every_key_and_value(entries: dict[str, str]) -> None:
    line = to_attrs_sh({"v": entries})
    words = shlex.split(line[len("declare -A v=(") : -2])
    pairs = [word.split("]=", 1) for word in words]
    assert {key.removeprefix("["): value for key, value in pairs} == entries
