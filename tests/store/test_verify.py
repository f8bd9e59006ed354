"""verify: missing items, invalid items, strays, corrupt contents, repair."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from store.canonical import remove_tree
from store.local import LocalStore
from store.verify import verify_store


def kinds(report: object) -> list[tuple[str, bool]]:
    return sorted((p.kind, p.repaired) for p in report.problems)  # type: ignore[attr-defined]


def test_clean_store(store: LocalStore, tree: Path) -> None:
    store.add_path(str(tree))
    report = verify_store(store, check_contents=True)
    assert report.problems == []


def test_missing_item_and_its_referrers_are_invalidated(store: LocalStore) -> None:
    c = str(store.add_text("c", "leaf"))
    b = str(store.add_text("b", c, [c]))
    other = str(store.add_text("other", "x"))
    remove_tree(store.physical(c))

    report = verify_store(store)
    assert [(p.kind, p.path) for p in report.remaining] == [("missing", c)]
    assert store.is_valid(b)

    report = verify_store(store, repair=True)
    assert report.remaining == []
    # b is invalidated, then deleted from disk as an invalid item.
    assert sorted((p.kind, p.path) for p in report.problems) == sorted(
        [("missing", c), ("missing", b), ("invalid", b)]
    )
    assert store.query_valid([b, c, other]) == {other}
    assert not os.path.exists(store.physical(b))
    assert verify_store(store).problems == []


def test_invalid_item_is_deleted_on_repair(store: LocalStore) -> None:
    junk = f"{store.store_dir}/{'a' * 32}-junk"
    Path(store.physical(junk)).write_text("junk")
    assert kinds(verify_store(store)) == [("invalid", False)]
    assert kinds(verify_store(store, repair=True)) == [("invalid", True)]
    assert not os.path.exists(store.physical(junk))
    assert verify_store(store).problems == []


def test_strays_are_reported_and_removed(store: LocalStore) -> None:
    Path(store.real_store_dir, ".tmp-123-dead").mkdir()
    Path(store.real_store_dir, f"{'b' * 32}-x.lock").write_text("")
    assert kinds(verify_store(store)) == [("stray", False), ("stray", False)]
    assert verify_store(store, repair=True).remaining == []
    assert os.listdir(store.real_store_dir) == []


def test_corrupt_contents_cannot_be_repaired(store: LocalStore, tree: Path) -> None:
    path = str(store.add_path(str(tree)))
    readme = Path(store.physical(path), "README")
    readme.chmod(0o644)
    readme.write_text("tampered\n")
    assert verify_store(store).problems == []
    report = verify_store(store, check_contents=True, repair=True)
    assert [(p.kind, p.path) for p in report.remaining] == [("corrupt", path)]
    assert "cannot be repaired" in report.remaining[0].detail


def test_locked_invalid_item_is_being_built_not_a_problem(store: LocalStore) -> None:
    building = f"{store.store_dir}/{'c' * 32}-output"
    os.makedirs(store.physical(building))
    with store.lock_paths([building]):
        assert verify_store(store, repair=True).problems == []
        assert os.path.isdir(store.physical(building))
    assert kinds(verify_store(store)) == [("invalid", False)]


def test_repair_never_deletes_a_state_directory_in_the_store(tmp_path: Path) -> None:
    (tmp_path / "store" / "var").mkdir(parents=True)
    os.symlink(tmp_path / "store" / "var", tmp_path / "state")
    with LocalStore(str(tmp_path / "store"), str(tmp_path / "state")) as store:
        store.add_text("t", "x")
        report = verify_store(store, check_contents=True, repair=True)
        assert report.problems == []
        assert os.path.exists(tmp_path / "store" / "var" / "db" / "db.sqlite")


def test_check_leftover_is_a_note_that_repair_removes(
    store: LocalStore, tree: Path
) -> None:
    path = str(store.add_path(str(tree)))
    leftover = path + "-check"
    shutil.copytree(tree, store.physical(leftover), symlinks=True)
    stranger = os.path.join(store.store_dir, "0" * 32 + "-x-check")
    os.mkdir(store.physical(stranger))

    report = verify_store(store, check_contents=True)
    assert [(p.kind, p.path) for p in report.notes] == [("leftover", leftover)]
    assert [(p.kind, p.path) for p in report.remaining] == [("invalid", stranger)]

    report = verify_store(store, repair=True)
    assert kinds(report) == [("invalid", True), ("leftover", True)]
    assert not os.path.lexists(store.physical(leftover))
    assert verify_store(store, check_contents=True).problems == []
