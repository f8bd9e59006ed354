"""Strict NAR reading: every archive of fixtures/nar/restore.json breaks one
rule and is rejected with the offset of the problem, leaving nothing behind.
The vectors also record which of them ``nix-store --restore`` 2.8 accepts."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import pytest

from store.nar import MAGIC, NarError, copy_nar, restore
from store.nar.grammar import token

FIXTURES = Path(__file__).parents[2] / "fixtures" / "nar"
CASES: dict[str, dict[str, Any]] = json.loads((FIXTURES / "restore.json").read_text())


def archive(rule: str) -> bytes:
    return (FIXTURES / CASES[rule]["nar_file"]).read_bytes()


@pytest.mark.parametrize("rule", sorted(CASES))
def test_restore_rejects_with_offset(tmp_path: Path, rule: str) -> None:
    target = tmp_path / "target"
    with pytest.raises(NarError) as caught:
        restore(io.BytesIO(archive(rule)), target)
    assert caught.value.offset == CASES[rule]["offset"]
    assert f"offset {CASES[rule]['offset']}" in str(caught.value)
    assert not target.exists() and not target.is_symlink()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("rule", sorted(CASES))
def test_copy_nar_rejects_with_offset(rule: str) -> None:
    copied = io.BytesIO()
    with pytest.raises(NarError) as caught:
        copy_nar(io.BytesIO(archive(rule)), copied.write, expect_eof=True)
    assert caught.value.offset == CASES[rule]["offset"]
    assert archive(rule).startswith(copied.getvalue())


def test_trailing_bytes_are_left_unread_without_expect_eof(tmp_path: Path) -> None:
    data = archive("trailing-bytes")
    stream = io.BytesIO(data)
    size = restore(stream, tmp_path / "target", expect_eof=False)
    assert size == CASES["trailing-bytes"]["offset"]
    assert stream.read() == data[size:]


def test_duplicate_entry_created_earlier_files_then_removed_them(
    tmp_path: Path,
) -> None:
    # The first two entries exist on disk when the duplicate is read.
    with pytest.raises(NarError, match="duplicate"):
        restore(io.BytesIO(archive("name-duplicate")), tmp_path / "target")
    assert not (tmp_path / "target").exists()


@pytest.mark.parametrize(
    ("rule", "words"),
    [
        ("name-dot", "'.'"),
        ("name-dotdot", "'..'"),
        ("name-slash", "slash"),
        ("name-nul", "NUL"),
        ("name-empty", "empty"),
        ("name-duplicate", "duplicate"),
        ("names-unsorted", "not sorted"),
        ("padding-nonzero", "padding"),
        ("truncated-at-20", "truncated"),
        ("trailing-bytes", "trailing"),
        ("executable-after-contents", "expected ')'"),
        ("bad-magic", "nix-archive-1"),
        ("length-absurd", "more than"),
        ("type-unknown", "'fifo'"),
    ],
)
def test_message_names_the_rule(tmp_path: Path, rule: str, words: str) -> None:
    with pytest.raises(NarError) as caught:
        restore(io.BytesIO(archive(rule)), tmp_path / "target")
    assert words in caught.value.message


def test_vectors_record_where_nix_is_lenient() -> None:
    lenient = {rule for rule, case in CASES.items() if case["nix_accepts"]}
    assert lenient == {
        "contents-missing",
        "executable-after-contents",
        "names-sorted-by-locale-not-bytes",
        "names-unsorted",
        "trailing-bytes",
    }


def test_every_rule_of_the_brief_has_a_vector() -> None:
    for rule in [
        "name-dot",
        "name-dotdot",
        "name-slash",
        "name-nul",
        "name-empty",
        "name-duplicate",
        "names-unsorted",
        "padding-nonzero",
        "trailing-bytes",
        "executable-after-contents",
        "bad-magic",
        "truncated-at-0",
        "truncated-at-24",
    ]:
        assert rule in CASES
    assert sum(rule.startswith("truncated-") for rule in CASES) >= 5


def test_archive_too_deep_for_the_file_system_leaves_nothing(
    clean_tmp_path: Path,
) -> None:
    tmp_path = clean_tmp_path
    head = token(b"(") + token(b"type") + token(b"directory")
    entry = token(b"entry") + token(b"(") + token(b"name") + token(b"d")
    depth = 3000
    archive = (
        token(MAGIC)
        + (head + entry + token(b"node")) * depth
        + head
        + token(b")")
        + (token(b")") + token(b")")) * depth
    )
    target = tmp_path / "target"
    with pytest.raises(NarError, match="File name too long") as caught:
        restore(io.BytesIO(archive), target)
    # The offset is the end of the header of the directory that could not
    # be created.
    level = len(head + entry + token(b"node"))
    assert (caught.value.offset - len(token(MAGIC))) % level == len(head)
    assert caught.value.hint is not None
    assert not os.path.lexists(target)
