"""Export and import in the format of nix-store --export, against a stream
made by Nix 2.8 (fixtures/export/generate.sh)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from store.export import ExportError, export_paths, import_paths, sort_topologically
from store.local import LocalStore

FIXTURES = Path(__file__).parents[2] / "fixtures" / "export"
STREAM = (FIXTURES / "closure.export").read_bytes()
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())


def export(store: LocalStore, paths: list[str]) -> bytes:
    out = io.BytesIO()
    export_paths(store, paths, out.write)
    return out.getvalue()


def test_nix_stream_imports_with_same_paths_and_hashes(nix_store: LocalStore) -> None:
    assert import_paths(nix_store, io.BytesIO(STREAM)) == EXPECTED["order"]
    src = nix_store.query_path_info(EXPECTED["source"])
    assert src is not None
    assert src.nar_hash.to_string() == EXPECTED["source_nar_hash"]
    assert src.nar_size == EXPECTED["source_nar_size"]
    text = nix_store.query_path_info(EXPECTED["text"])
    assert text is not None and text.nar_hash.to_string() == EXPECTED["text_nar_hash"]
    assert text.references == frozenset(EXPECTED["text_references"])
    assert os.path.islink(nix_store.physical(EXPECTED["source"]) + "/link")


def test_export_is_byte_identical_to_nix(nix_store: LocalStore) -> None:
    import_paths(nix_store, io.BytesIO(STREAM))
    order = sort_topologically(nix_store, [EXPECTED["text"], EXPECTED["source"]])
    assert order == EXPECTED["order"]
    assert export(nix_store, order) == STREAM
    assert export(nix_store, order[::-1]) == STREAM


def test_round_trip_between_stores(
    store: LocalStore, tree: Path, tmp_path: Path
) -> None:
    src = str(store.add_path(str(tree)))
    text = str(store.add_text("t", src, [src]))
    stream = export(store, [src, text])
    other = LocalStore(
        store.store_dir, str(tmp_path / "state2"), root=str(tmp_path / "r2")
    )
    assert import_paths(other, io.BytesIO(stream)) == [src, text]
    mine, theirs = store.query_path_info(text), other.query_path_info(text)
    assert mine is not None and theirs is not None
    assert (theirs.nar_hash, theirs.nar_size, theirs.references) == (
        mine.nar_hash,
        mine.nar_size,
        mine.references,
    )
    # Importing again is a no-op that still succeeds.
    assert import_paths(other, io.BytesIO(stream)) == [src, text]


@pytest.mark.parametrize(
    "cut",
    [8, 100, len(STREAM) - 8, len(STREAM) - 1],
    ids=["marker", "nar", "end", "last"],
)
def test_truncated_stream_registers_nothing(nix_store: LocalStore, cut: int) -> None:
    with pytest.raises(ExportError):
        import_paths(nix_store, io.BytesIO(STREAM[:cut]))
    assert nix_store.query_valid(EXPECTED["order"]) == set()
    assert [n for n in os.listdir(nix_store.real_store_dir)] == []


def test_reference_must_be_valid_or_earlier(
    nix_store: LocalStore, tmp_path: Path
) -> None:
    import_paths(nix_store, io.BytesIO(STREAM))
    only_text = export(nix_store, [EXPECTED["text"]])
    fresh = LocalStore("/nix/store", "/other/state", root=str(tmp_path / "other"))
    with pytest.raises(ExportError, match="neither valid nor earlier"):
        import_paths(fresh, io.BytesIO(only_text))
    assert fresh.query_valid(EXPECTED["order"]) == set()


def test_path_of_another_store_is_refused(store: LocalStore) -> None:
    with pytest.raises(ExportError, match="not in the store"):
        import_paths(store, io.BytesIO(STREAM))
    assert os.listdir(store.real_store_dir) == []


def test_bad_marker_and_corrupt_nar(nix_store: LocalStore) -> None:
    with pytest.raises(ExportError, match="expected 0 or 1"):
        import_paths(nix_store, io.BytesIO((2).to_bytes(8, "little")))
    corrupt = bytearray(STREAM)
    corrupt[16:29] = b"nix-archive-2"
    with pytest.raises(ExportError, match="NAR is not valid"):
        import_paths(nix_store, io.BytesIO(bytes(corrupt)))
    assert nix_store.query_valid(EXPECTED["order"]) == set()


def _duplicate_stream(store_dir: str, first: bytes, second: bytes) -> bytes:
    """Return an export stream naming one path twice, with these contents."""

    def string(data: bytes) -> bytes:
        return len(data).to_bytes(8, "little") + data + bytes(-len(data) % 8)

    def u64(value: int) -> bytes:
        return value.to_bytes(8, "little")

    path = f"{store_dir}/{'4' * 32}-d".encode()
    items = b""
    for contents in (first, second):
        archive = (
            b"".join(
                string(t)
                for t in (b"nix-archive-1", b"(", b"type", b"regular", b"contents")
            )
            + string(contents)
            + string(b")")
        )
        items += u64(1) + archive + u64(0x4558494E) + string(path)
        items += u64(0) + string(b"") + u64(0)
    return items + u64(0)


@pytest.mark.parametrize(
    "second", [b"hi\n", b"other"], ids=["same-contents", "other-contents"]
)
def test_duplicate_path_keeps_first_copy(nix_store: LocalStore, second: bytes) -> None:
    # Nix 2.8 (nix-store --store DIR --import) keeps the first copy of a path
    # named twice and skips the later ones, whatever they hold; its store then
    # verifies clean.
    from store.verify import verify_store

    stream = _duplicate_stream("/nix/store", b"hi\n", second)
    path = f"/nix/store/{'4' * 32}-d"
    assert import_paths(nix_store, io.BytesIO(stream)) == [path, path]
    with open(nix_store.physical(path), "rb") as file:
        assert file.read() == b"hi\n"
    assert verify_store(nix_store, check_contents=True).problems == []
    assert os.listdir(nix_store.real_store_dir) == [f"{'4' * 32}-d"]
