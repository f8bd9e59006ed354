"""Reference scanning: hash parts in contents, names and symlink targets,
including a hash part split across two chunks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from store.references import RefScanner, scan_references

H1 = "0" * 31 + "1"
H2 = "ab" * 16
H3 = "zz" * 16
STORE = "/nix/store"


def test_contents_symlinks_and_names(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "f").write_text(f"use {STORE}/{H1}-dep/bin here")
    os.symlink(f"{STORE}/{H2}-lib/lib", tmp_path / "t" / "l")
    (tmp_path / "t" / f"{H3}-named").write_text("")
    candidates = [f"{STORE}/{h}-x" for h in (H1, H2, H3)] + ["y" * 32]
    assert scan_references(tmp_path / "t", candidates) == set(candidates[:3])


def test_hash_parts_are_accepted_as_candidates(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"\0" + H2.encode() + b"\0")
    assert scan_references(tmp_path / "f", [H1, H2]) == {H2}


@pytest.mark.parametrize("cut", [1, 5, 16, 31])
def test_hash_split_across_chunks(cut: int) -> None:
    scanner = RefScanner([H2])
    data = b"xx" + H2.encode() + b"yy"
    scanner.feed(data[: 2 + cut])
    scanner.feed(data[2 + cut :])
    assert scanner.found == {H2}


def test_hash_inside_a_longer_base32_run() -> None:
    scanner = RefScanner([H1])
    scanner.feed(b"abc" * 20 + H1.encode() + b"abc" * 20)
    assert scanner.found == {H1}


def test_no_false_positive_on_partial_hash(tmp_path: Path) -> None:
    (tmp_path / "f").write_text(H1[:-1] + "-" + H1[1:])
    assert scan_references(tmp_path / "f", [H1]) == set()


def test_large_file_split_over_read_chunks(tmp_path: Path) -> None:
    # Put the hash across the NAR writer's 1 MiB-ish chunk boundaries.
    data = bytearray(b"\0" * (3 * 1024 * 1024))
    for offset in (1024 * 1024 - 10, 2 * 1024 * 1024 - 20):
        data[offset : offset + 32] = H3.encode()
    (tmp_path / "big").write_bytes(bytes(data))
    assert scan_references(tmp_path / "big", [H3, H1]) == {H3}


@given(
    before=st.binary(max_size=200),
    after=st.binary(max_size=200),
    cuts=st.lists(st.integers(min_value=0, max_value=500), max_size=6),
)
def test_found_whatever_the_chunking(
    before: bytes, after: bytes, cuts: list[int]
) -> None:
    data = before + H2.encode() + after
    scanner = RefScanner([H2, H3])
    start = 0
    for cut in sorted(min(c, len(data)) for c in cuts):
        scanner.feed(data[start:cut])
        start = cut
    scanner.feed(data[start:])
    expected = {H2} | ({H3} if H3.encode() in data else set())
    assert scanner.found == expected
