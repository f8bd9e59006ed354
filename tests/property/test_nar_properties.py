"""Properties of the NAR writer and reader: trees survive a round trip
byte for byte, and no input makes the reader fail other than with
:class:`NarError`."""

from __future__ import annotations

import io
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store.canonical import remove_tree
from store.nar import (
    MAGIC,
    NarError,
    copy_nar,
    copy_path,
    dump_bytes,
    hash_path,
    read_events,
    restore,
)
from store.nar.grammar import token

# A node: ("file", contents, executable) | ("link", target) | ("dir", {name: node}).
names = st.binary(min_size=1, max_size=12).filter(
    lambda name: name not in (b".", b"..") and b"/" not in name and b"\0" not in name
)
targets = st.binary(min_size=1, max_size=40).filter(lambda target: b"\0" not in target)
leaves = st.one_of(
    st.tuples(st.just("file"), st.binary(max_size=70), st.booleans()),
    st.tuples(st.just("link"), targets),
)
nodes = st.recursive(
    leaves,
    lambda children: st.tuples(
        st.just("dir"), st.dictionaries(names, children, max_size=5)
    ),
    max_leaves=12,
)

SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def build(node: tuple[Any, ...], path: bytes) -> None:
    """Create ``node`` at ``path``."""
    if node[0] == "file":
        with open(path, "xb") as file:
            file.write(node[1])
        os.chmod(path, 0o755 if node[2] else 0o644)
    elif node[0] == "link":
        os.symlink(node[1], path)
    else:
        os.mkdir(path)
        for name, child in node[1].items():
            build(child, path + b"/" + name)


def read_back(path: bytes) -> tuple[Any, ...]:
    """Describe the tree at ``path`` as a node."""
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        return ("link", os.readlink(path))
    if stat.S_ISDIR(info.st_mode):
        return (
            "dir",
            {name: read_back(path + b"/" + name) for name in os.listdir(path)},
        )
    with open(path, "rb") as file:
        return ("file", file.read(), bool(info.st_mode & stat.S_IXUSR))


@SETTINGS
@given(nodes)
def test_write_restore_gives_same_tree_and_bytes(node: tuple[Any, ...]) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        source = os.fsencode(scratch) + b"/source"
        build(node, source)
        nar = dump_bytes(source)

        target = os.fsencode(scratch) + b"/target"
        assert restore(io.BytesIO(nar), target) == len(nar)
        assert read_back(target) == node
        assert dump_bytes(target) == nar

        copied = io.BytesIO()
        assert copy_nar(io.BytesIO(nar + b"tail"), copied.write) == len(nar)
        assert copied.getvalue() == nar

        mirror = os.fsencode(scratch) + b"/mirror"
        assert copy_path(source, mirror) == hash_path(source)
        assert dump_bytes(mirror) == nar


def _only_nar_errors(data: bytes) -> None:
    """Read ``data`` every way; anything but success or NarError fails."""
    try:
        copy_nar(io.BytesIO(data), lambda _: None, expect_eof=True)
    except NarError as error:
        assert 0 <= error.offset <= len(data)
    try:
        for _ in read_events(io.BytesIO(data)):
            pass
    except NarError:
        pass
    with tempfile.TemporaryDirectory() as scratch:
        target = Path(scratch) / "target"
        try:
            restore(io.BytesIO(data), target)
        except NarError:
            assert not os.path.lexists(target)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_raise_nar_error(data: bytes) -> None:
    _only_nar_errors(data)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_after_magic_only_raise_nar_error(data: bytes) -> None:
    _only_nar_errors(b"\x0d" + bytes(7) + b"nix-archive-1\0\0\0" + data)


SAMPLE_TREE = (
    "dir",
    {
        b"a": ("file", b"hello", True),
        b"b": ("link", b"a"),
        b"c": ("dir", {b"d": ("file", b"", False)}),
    },
)


def _sample_nar() -> bytes:
    with tempfile.TemporaryDirectory() as scratch:
        root = os.fsencode(scratch) + b"/tree"
        build(SAMPLE_TREE, root)
        return dump_bytes(root)


SAMPLE_NAR = _sample_nar()


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, len(SAMPLE_NAR) - 1),
            st.sampled_from(["flip", "delete", "insert"]),
            st.integers(0, 255),
        ),
        min_size=1,
        max_size=3,
    )
)
def test_mutated_archives_only_raise_nar_error(
    mutations: list[tuple[int, str, int]],
) -> None:
    data = bytearray(SAMPLE_NAR)
    for position, kind, value in mutations:
        position = min(position, len(data) - 1)
        if kind == "flip":
            data[position] ^= value or 1
        elif kind == "delete":
            del data[position]
        else:
            data.insert(position, value)
    _only_nar_errors(bytes(data))


def _wrap(names: list[bytes], inner: bytes) -> bytes:
    """Return the NAR node of nested directories, the first holding the
    entry ``names[0]``, that one ``names[1]``, and so on, the last entry
    being the node ``inner``."""
    entry = token(b"(") + token(b"type") + token(b"directory") + token(b"entry")
    opening = b"".join(
        entry + token(b"(") + token(b"name") + token(name) + token(b"node")
        for name in names
    )
    return opening + inner + (token(b")") + token(b")")) * len(names)


@settings(max_examples=3, deadline=None)
@given(
    st.lists(
        st.sampled_from([b"d", b"e", b"a b", b"\xff"]), min_size=1000, max_size=1200
    ),
    leaves,
)
def test_chains_deeper_than_the_recursion_limit(
    chain: list[bytes], leaf: tuple[Any, ...]
) -> None:
    scratch = tempfile.mkdtemp()
    try:
        source = path = os.fsencode(scratch) + b"/source"
        os.mkdir(source)
        for name in chain:
            path += b"/" + name
            os.mkdir(path)
        build(leaf, path + b"/leaf")
        leaf_node = dump_bytes(path + b"/leaf")[len(token(MAGIC)) :]

        nar = dump_bytes(source)
        assert nar == token(MAGIC) + _wrap([*chain, b"leaf"], leaf_node)

        target = os.fsencode(scratch) + b"/target"
        assert restore(io.BytesIO(nar), target) == len(nar)
        assert dump_bytes(target) == nar

        mirror = os.fsencode(scratch) + b"/mirror"
        assert copy_path(source, mirror) == hash_path(source)
        assert dump_bytes(mirror) == nar
    finally:
        remove_tree(scratch)
