"""NAR writing, hashing and restoring against Nix 2.8's ``nix-store --dump``
and ``nix-hash`` (fixtures/nar/cases.json and its .nar files)."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest

from store.nar import (
    Directory,
    DirectoryEnd,
    FileChunk,
    NarError,
    RegularFile,
    Symlink,
    copy_nar,
    copy_path,
    dump,
    dump_bytes,
    hash_path,
    read_events,
    restore,
)

FIXTURES = Path(__file__).parents[2] / "fixtures" / "nar"
CASES: dict[str, dict[str, Any]] = json.loads((FIXTURES / "cases.json").read_text())
SMALL = sorted(name for name, case in CASES.items() if "nar_file" in case)

_spec = importlib.util.spec_from_file_location("nar_trees", FIXTURES / "trees.py")
assert _spec is not None and _spec.loader is not None
trees = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(trees)


def build(tmp_path: Path, name: str) -> Path:
    """Build the tree of vector ``name`` in ``tmp_path``."""
    root = tmp_path / name
    trees.build_tree(CASES[name]["tree"], root)
    return root


def nix_nar(name: str) -> bytes:
    return (FIXTURES / CASES[name]["nar_file"]).read_bytes()


@pytest.mark.parametrize("name", SMALL)
def test_dump_equals_nix_store_dump(tmp_path: Path, name: str) -> None:
    assert dump_bytes(build(tmp_path, name)) == nix_nar(name)


@pytest.mark.parametrize("name", sorted(CASES))
def test_hash_path_equals_nix_hash(tmp_path: Path, name: str) -> None:
    root = build(tmp_path, name)
    case = CASES[name]
    digest, size = hash_path(root)
    assert digest.to_base16() == case["nar_sha256_base16"]
    assert digest.to_base32() == case["nar_sha256_base32"]
    assert size == case["nar_size"]
    for algorithm in ("md5", "sha1", "sha512"):
        assert (
            hash_path(root, algorithm)[0].to_base16() == case[f"nar_{algorithm}_base16"]
        )


@pytest.mark.parametrize("name", sorted(CASES))
def test_copy_path_hashes_what_it_copies(tmp_path: Path, name: str) -> None:
    source = build(tmp_path, name)
    target = tmp_path / "copy"
    digest, size = copy_path(source, target)

    # The copy is the same tree, and the hash returned is Nix's.
    case = CASES[name]
    assert digest.to_base16() == case["nar_sha256_base16"]
    assert size == case["nar_size"]
    assert hash_path(target) == (digest, size)


def test_copy_path_keeps_only_the_executable_bit(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (source / "tool").write_text("#!/bin/sh\n")
    (source / "tool").chmod(0o700)
    (source / "data").write_text("x")
    (source / "data").chmod(0o600)
    os.utime(source / "data", (5, 5))
    copy_path(source, tmp_path / "copy")
    assert stat.S_IMODE((tmp_path / "copy" / "tool").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "copy" / "data").stat().st_mode) == 0o644
    assert (tmp_path / "copy" / "data").stat().st_mtime != 5


def test_copy_path_refuses_an_existing_target(tmp_path: Path) -> None:
    (tmp_path / "source").write_text("x")
    (tmp_path / "copy").write_text("already here")
    with pytest.raises(FileExistsError):
        copy_path(tmp_path / "source", tmp_path / "copy")
    assert (tmp_path / "copy").read_text() == "already here"


def test_large_file_streams_in_chunks(tmp_path: Path) -> None:
    root = build(tmp_path, "large-file")
    pieces: list[bytes] = []
    dump(root, pieces.append)
    assert max(len(piece) for piece in pieces) <= 1 << 20
    nar = b"".join(pieces)
    assert hashlib.sha256(nar).hexdigest() == CASES["large-file"]["nar_sha256_base16"]

    target = tmp_path / "restored"
    assert restore(io.BytesIO(nar), target) == len(nar)
    assert target.read_bytes() == (root).read_bytes()


@pytest.mark.parametrize("name", SMALL)
def test_restore_of_nix_nar_dumps_to_same_bytes(tmp_path: Path, name: str) -> None:
    nar = nix_nar(name)
    target = tmp_path / "restored"
    assert restore(io.BytesIO(nar), target) == len(nar)
    assert dump_bytes(target) == nar


@pytest.mark.parametrize("name", SMALL)
def test_copy_nar_copies_exact_bytes(name: str) -> None:
    nar = nix_nar(name)
    out = io.BytesIO()
    assert copy_nar(io.BytesIO(nar), out.write) == len(nar)
    assert out.getvalue() == nar


@pytest.mark.parametrize("name", ["mixed-tree", "regular-file", "relative-symlink"])
def test_embedded_nar_is_read_without_over_reading(tmp_path: Path, name: str) -> None:
    nar = nix_nar(name)
    stream = io.BytesIO(nar + b"after the archive")
    assert copy_nar(stream, lambda _: None) == len(nar)
    assert stream.read() == b"after the archive"

    stream = io.BytesIO(nar + nar)
    assert restore(stream, tmp_path / "first", expect_eof=False) == len(nar)
    assert restore(stream, tmp_path / "second") == len(nar)
    assert dump_bytes(tmp_path / "second") == nar


def test_restore_through_a_pipe_reads_exactly_the_archive(tmp_path: Path) -> None:
    nar = nix_nar("mixed-tree")
    left, right = socket.socketpair()
    with left, right:
        right.sendall(nar + b"TAIL")
        right.shutdown(socket.SHUT_WR)
        with left.makefile("rb", buffering=0) as stream:
            assert restore(stream, tmp_path / "out", expect_eof=False) == len(nar)
            assert stream.read() == b"TAIL"


def test_restore_modes(tmp_path: Path) -> None:
    target = tmp_path / "restored"
    restore(io.BytesIO(nix_nar("mixed-tree")), target)
    hello = (target / "bin" / "hello").stat().st_mode
    readme = (target / "share" / "doc" / "README").stat().st_mode
    assert hello & stat.S_IXUSR
    assert not readme & stat.S_IXUSR
    assert os.readlink(target / "dangling") == "does/not/exist"
    assert os.readlink(target / "absolute") == "/etc/passwd"
    assert (target / "empty-dir").is_dir() and not any((target / "empty-dir").iterdir())


def test_executable_is_the_owner_bit_only(tmp_path: Path) -> None:
    owner = dump_bytes(build(tmp_path, "owner-executable-only"))
    group = dump_bytes(build(tmp_path, "group-executable-is-not-executable"))
    assert b"executable" in owner
    assert b"executable" not in group


def test_events_of_mixed_tree(tmp_path: Path) -> None:
    events = list(read_events(io.BytesIO(nix_nar("mixed-tree"))))
    assert events[0] == Directory(b"")
    assert events[-1] == DirectoryEnd(b"")
    assert Symlink(b"bin/hi", b"hello") in events
    assert RegularFile(b"empty", False, 0) in events
    index = events.index(RegularFile(b"bin/hello", True, 21))
    assert events[index + 1] == FileChunk(b"#!/bin/sh\necho hello\n")
    assert Directory(b"share/doc/deep/deeper") in events


def test_entries_are_sorted_by_bytes(tmp_path: Path) -> None:
    events = read_events(io.BytesIO(dump_bytes(build(tmp_path, "sort-order"))))
    names = [e.path for e in events if isinstance(e, RegularFile)]
    assert names == sorted(names)
    assert names.index(b"B") < names.index(b"a") < names.index(b"~")
    assert (
        names.index(b"-") < names.index(b".dot") < names.index(b"0") < names.index(b"_")
    )


def test_dump_rejects_a_socket(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    root.mkdir()
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(root / "sock"))
        with pytest.raises(NarError) as caught:
            dump_bytes(root)
    assert caught.value.path == str(root / "sock")
    assert "unsupported type" in str(caught.value)


def test_dump_rejects_a_fifo(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(NarError, match="unsupported type") as caught:
        hash_path(tmp_path / "fifo")
    assert caught.value.path == str(tmp_path / "fifo")


def test_dump_of_missing_path_is_a_nar_error(tmp_path: Path) -> None:
    with pytest.raises(NarError) as caught:
        dump_bytes(tmp_path / "missing")
    assert caught.value.path == str(tmp_path / "missing")


def test_restore_refuses_existing_target(tmp_path: Path) -> None:
    (tmp_path / "there").mkdir()
    with pytest.raises(NarError, match="already exists"):
        restore(io.BytesIO(nix_nar("regular-file")), tmp_path / "there")
    assert not any((tmp_path / "there").iterdir())


def test_restore_into_missing_parent_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(NarError) as caught:
        restore(io.BytesIO(nix_nar("mixed-tree")), tmp_path / "no" / "such")
    assert caught.value.path == str(tmp_path / "no" / "such")
    assert not (tmp_path / "no").exists()
