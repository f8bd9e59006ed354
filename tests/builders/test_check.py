"""Reproducibility comparison on real trees: every kind of difference, order,
diffs of small text files, the report and the error."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from builders.check import (
    DIFF_SIZE_LIMIT,
    NondeterminismError,
    compare_outputs,
    format_check_report,
)
from store.nar import hash_path


def make_output(top: Path, date: str = "Thu Dec  3 16:43:38 UTC 2026") -> Path:
    """An output with a binary, a library directory, a symlink and a date."""
    (top / "bin").mkdir(parents=True)
    (top / "lib" / "deep").mkdir(parents=True)
    tool = top / "bin" / "tool"
    tool.write_text("#!/bin/sh\necho tool\n")
    tool.chmod(0o755)
    (top / "lib" / "deep" / "data").write_bytes(b"\0\1\2binary")
    (top / "share").mkdir()
    (top / "share" / "built-on").write_text(f"header\nbuilt on {date}\nfooter\n")
    os.symlink("bin/tool", top / "link")
    return top


def differences(result: object) -> list[tuple[str, str, str]]:
    return [(d.path, d.kind, d.detail) for d in result.differences]  # type: ignore[attr-defined]


def test_identical_trees(tmp_path: Path) -> None:
    original, rebuilt = make_output(tmp_path / "a"), make_output(tmp_path / "b")

    result = compare_outputs(str(original), str(rebuilt))

    assert result.identical and result.differences == ()
    assert hash_path(original) == hash_path(rebuilt)
    assert format_check_report(result) == (
        f"output '{original}' is identical to its rebuild '{rebuilt}'"
    )


def test_changed_text_gets_a_unified_diff(tmp_path: Path) -> None:
    original = make_output(tmp_path / "a")
    rebuilt = make_output(tmp_path / "b", date="Thu Dec  3 16:43:39 UTC 2026")

    result = compare_outputs(str(original), str(rebuilt))

    assert hash_path(original) != hash_path(rebuilt)
    (difference,) = result.differences
    assert (difference.path, difference.kind) == ("share/built-on", "content")
    assert difference.detail == "52 -> 52 bytes"
    assert difference.diff is not None
    assert difference.diff.splitlines() == [
        "--- original/share/built-on",
        "+++ rebuilt/share/built-on",
        "@@ -1,3 +1,3 @@",
        " header",
        "-built on Thu Dec  3 16:43:38 UTC 2026",
        "+built on Thu Dec  3 16:43:39 UTC 2026",
        " footer",
    ]


def test_every_kind_of_difference_in_tree_order(tmp_path: Path) -> None:
    original, rebuilt = make_output(tmp_path / "a"), make_output(tmp_path / "b")
    (rebuilt / "bin" / "tool").chmod(0o644)
    (rebuilt / "lib" / "deep" / "data").unlink()
    (rebuilt / "lib" / "deep").rmdir()
    (rebuilt / "lib" / "deep").write_text("now a file\n")
    (rebuilt / "link").unlink()
    os.symlink("share/built-on", rebuilt / "link")
    (rebuilt / "share" / "extra").mkdir()
    (rebuilt / "share" / "extra" / "inside").write_text("x")
    (original / "a-file").write_text("only here\n")

    result = compare_outputs(str(original), str(rebuilt))

    assert differences(result) == [
        ("a-file", "removed", "regular file"),
        ("bin/tool", "executable", "executable -> not executable"),
        ("lib/deep", "type", "directory -> regular file"),
        ("link", "symlink", "'bin/tool' -> 'share/built-on'"),
        ("share/extra", "added", "directory"),
    ]
    again = compare_outputs(str(original), str(rebuilt))
    assert again == result


def test_order_is_nar_order_not_string_order(tmp_path: Path) -> None:
    original, rebuilt = tmp_path / "a", tmp_path / "b"
    for top in (original, rebuilt):
        (top / "a").mkdir(parents=True)
    for name in ("a/b", "a-c", "B", "a/a"):
        (rebuilt / name).write_text("new")

    result = compare_outputs(str(original), str(rebuilt))

    assert [d.path for d in result.differences] == ["B", "a/a", "a/b", "a-c"]


def test_binary_and_large_files_get_no_diff(tmp_path: Path) -> None:
    original, rebuilt = make_output(tmp_path / "a"), make_output(tmp_path / "b")
    (rebuilt / "lib" / "deep" / "data").write_bytes(b"\0\1\2binarY")
    big = "line\n" * (DIFF_SIZE_LIMIT // 5 + 1)
    (original / "big").write_text(big)
    (rebuilt / "big").write_text(big.replace("line", "LINE", 1))

    result = compare_outputs(str(original), str(rebuilt))

    assert [(d.path, d.kind, d.diff) for d in result.differences] == [
        ("big", "content", None),
        ("lib/deep/data", "content", None),
    ]


def test_long_diff_is_cut(tmp_path: Path) -> None:
    original, rebuilt = tmp_path / "a", tmp_path / "b"
    original.mkdir()
    rebuilt.mkdir()
    (original / "log").write_text("".join(f"{i}\n" for i in range(200)))
    (rebuilt / "log").write_text("".join(f"{i}!\n" for i in range(200)))

    (difference,) = compare_outputs(str(original), str(rebuilt)).differences

    assert difference.diff is not None
    lines = difference.diff.splitlines()
    assert len(lines) == 41 and lines[-1].endswith("more diff lines")


def test_flat_outputs_compare_the_file_itself(tmp_path: Path) -> None:
    original, rebuilt = tmp_path / "a", tmp_path / "b"
    original.write_text("one\n")
    rebuilt.write_text("two\n")

    (difference,) = compare_outputs(str(original), str(rebuilt)).differences

    assert (difference.path, difference.kind) == (".", "content")
    assert difference.diff is not None and "+two" in difference.diff


def test_report_names_each_file_and_suggests_diffoscope(tmp_path: Path) -> None:
    original = make_output(tmp_path / "a")
    rebuilt = make_output(tmp_path / "b", date="later")
    (rebuilt / "new").write_text("x")

    report = format_check_report(
        compare_outputs(str(original), str(rebuilt)),
        drv_path="/pyguix/store/0abc-foo.drv",
        original_name="/pyguix/store/0abc-foo",
        rebuilt_name="/pyguix/store/0abc-foo-check",
    )

    lines = report.splitlines()
    assert lines[0] == (
        "output '/pyguix/store/0abc-foo' of '/pyguix/store/0abc-foo.drv' differs "
        "from its rebuild '/pyguix/store/0abc-foo-check' (2 differences):"
    )
    assert "  only in the rebuild: new (regular file)" in lines
    assert "  changed content: share/built-on (52 -> 29 bytes)" in lines
    assert "    +built on later" in lines
    assert (
        lines[-1]
        == f"hint: run 'diffoscope {original} {rebuilt}' to see every difference"
    )


def test_report_limits_the_listed_files(tmp_path: Path) -> None:
    original, rebuilt = tmp_path / "a", tmp_path / "b"
    original.mkdir()
    rebuilt.mkdir()
    for i in range(5):
        (rebuilt / f"f{i}").write_text("")

    report = format_check_report(compare_outputs(str(original), str(rebuilt)), limit=3)

    assert "  only in the rebuild: f2 (regular file)" in report
    assert "f3" not in report and "  ... and 2 more" in report


def test_nondeterminism_error_carries_result_and_hint(tmp_path: Path) -> None:
    original = make_output(tmp_path / "a")
    rebuilt = make_output(tmp_path / "b", date="later")
    result = compare_outputs(str(original), str(rebuilt))

    with pytest.raises(NondeterminismError) as raised:
        raise NondeterminismError("/pyguix/store/0abc-foo.drv", result)

    error = raised.value
    assert error.exit_status == 104 and error.result is result
    assert error.message.startswith(
        "derivation '/pyguix/store/0abc-foo.drv' is not deterministic: output"
    )
    assert "changed content: share/built-on" in error.message
    assert "hint:" not in error.message and error.hint is not None
    assert error.hint.startswith("run 'diffoscope ")
