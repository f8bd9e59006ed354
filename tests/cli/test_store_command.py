"""'pyguix store': add, dump, restore, export, import, query, verify, run as
real processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from helpers.deep import DEPTH, make_deep_tree

from store import nar
from store.nar.grammar import token

FIXTURES = Path(__file__).parents[2] / "fixtures" / "export"


def pyguix(
    tmp_path: Path, *args: str, stdin: bytes = b"", nix: bool = False
) -> subprocess.CompletedProcess[bytes]:
    """Run pyguix on a store under ``tmp_path`` (named /nix/store if ``nix``)."""
    if nix:
        where = [
            "--store-dir",
            "/nix/store",
            "--state-dir",
            "/nix/var/nix",
            "--root",
            str(tmp_path / "root"),
        ]
    else:
        where = [
            "--store-dir",
            str(tmp_path / "store"),
            "--state-dir",
            str(tmp_path / "state"),
        ]
    return subprocess.run(
        [sys.executable, "-m", "pyguix", *where, *args],
        input=stdin,
        capture_output=True,
        check=False,
    )


def test_add_query_and_dry_run(tmp_path: Path, tree: Path) -> None:
    dry = pyguix(tmp_path, "store", "add", "--dry-run", str(tree))
    assert dry.returncode == 0
    path = dry.stdout.decode().strip()
    assert not os.path.exists(path)

    added = pyguix(tmp_path, "store", "add", str(tree), str(tree / "README"))
    lines = added.stdout.decode().split()
    assert lines[0] == path and len(lines) == 2

    flat = pyguix(tmp_path, "store", "add", "--flat", str(tree / "README"))
    assert flat.stdout.decode().strip() != lines[1]

    hashed = pyguix(tmp_path, "store", "query", "--hash", path)
    assert hashed.stdout.decode().strip() == nar.hash_path(tree)[0].to_string()
    size = pyguix(tmp_path, "store", "query", "--size", path)
    assert int(size.stdout) == nar.hash_path(tree)[1]
    deriver = pyguix(tmp_path, "store", "query", "--deriver", path)
    assert deriver.stdout == b"unknown-deriver\n"


def test_dump_and_restore(tmp_path: Path, tree: Path) -> None:
    dumped = pyguix(tmp_path, "store", "dump", str(tree))
    assert dumped.stdout == nar.dump_bytes(tree)
    restored = pyguix(
        tmp_path, "store", "restore", str(tmp_path / "out"), stdin=dumped.stdout
    )
    assert restored.returncode == 0
    assert nar.dump_bytes(tmp_path / "out") == dumped.stdout


def test_import_nix_stream_then_query_and_export(tmp_path: Path) -> None:
    stream = (FIXTURES / "closure.export").read_bytes()
    expected = json.loads((FIXTURES / "expected.json").read_text())
    imported = pyguix(tmp_path, "store", "import", stdin=stream, nix=True)
    assert imported.stdout.decode().split() == expected["order"]

    refs = pyguix(
        tmp_path, "store", "query", "--references", expected["text"], nix=True
    )
    assert refs.stdout.decode().split() == expected["text_references"]
    referrers = pyguix(
        tmp_path, "store", "query", "--referrers", expected["source"], nix=True
    )
    assert referrers.stdout.decode().split() == [expected["text"]]
    requisites = pyguix(
        tmp_path, "store", "query", "--requisites", expected["text"], nix=True
    )
    assert sorted(requisites.stdout.decode().split()) == sorted(expected["order"])

    exported = pyguix(tmp_path, "store", "export", *expected["order"], nix=True)
    assert exported.stdout == stream


def test_verify_exit_status(tmp_path: Path, tree: Path) -> None:
    path = pyguix(tmp_path, "store", "add", str(tree)).stdout.decode().strip()
    assert pyguix(tmp_path, "store", "verify", "--check-contents").returncode == 0
    os.chmod(f"{path}/README", 0o644)
    Path(path, "README").write_text("changed\n")
    bad = pyguix(tmp_path, "store", "verify", "--check-contents", "--repair")
    assert bad.returncode == 1
    assert b"corrupt" in bad.stderr and b"error: the store has 1 problem" in bad.stderr


def test_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    missing = pyguix(tmp_path, "store", "add", str(tmp_path / "nope"))
    assert missing.returncode == 1
    assert missing.stderr.decode().startswith("error: cannot add")
    assert b"Traceback" not in missing.stderr

    invalid = pyguix(tmp_path, "store", "query", "--hash", "/elsewhere/x")
    assert invalid.returncode == 1 and b"not in the store" in invalid.stderr

    truncated = (FIXTURES / "closure.export").read_bytes()[:200]
    bad_import = pyguix(tmp_path, "store", "import", stdin=truncated, nix=True)
    assert bad_import.returncode == 1 and b"error:" in bad_import.stderr
    assert b"Traceback" not in bad_import.stderr


def test_dump_reads_a_store_path_under_the_root(tmp_path: Path, tree: Path) -> None:
    added = pyguix(tmp_path, "store", "add", str(tree), nix=True)
    path = added.stdout.decode().strip()
    assert path.startswith("/nix/store/") and not os.path.exists(path)

    dumped = pyguix(tmp_path, "store", "dump", path, nix=True)
    assert dumped.returncode == 0, dumped.stderr
    assert dumped.stdout == nar.dump_bytes(tree)


def test_a_copy_that_cannot_be_written_leaves_nothing(tmp_path: Path) -> None:
    source = tmp_path / "big"
    source.mkdir()
    (source / "data").write_bytes(os.urandom(3 << 20))
    pyguix(tmp_path, "store", "verify")  # creates the store and its database

    # Files may not grow past 2 MiB: the copy of the 3 MiB file fails.
    def limit() -> None:
        import resource
        import signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2 << 20, 2 << 20))

    where = [
        "--store-dir",
        str(tmp_path / "store"),
        "--state-dir",
        str(tmp_path / "state"),
    ]
    failed = subprocess.run(
        [sys.executable, "-m", "pyguix", *where, "store", "add", str(source)],
        capture_output=True,
        preexec_fn=limit,
        check=False,
    )
    assert failed.returncode == 1, failed.stderr
    assert failed.stderr.decode().startswith(
        f"error: cannot copy '{source}' into the store"
    )
    assert b"Traceback" not in failed.stderr

    # No item, valid or not, and no temporary copy is left.
    assert os.listdir(tmp_path / "store") == []
    assert pyguix(tmp_path, "store", "verify", "--check-contents").returncode == 0
    added = pyguix(tmp_path, "store", "add", str(source))
    assert added.returncode == 0 and added.stdout.startswith(str(tmp_path).encode())


def deep_nar(depth: int) -> bytes:
    """Return the NAR of ``depth`` nested directories named ``d``."""
    head = token(b"(") + token(b"type") + token(b"directory")
    entry = token(b"entry") + token(b"(") + token(b"name") + token(b"d")
    opening = (head + entry + token(b"node")) * depth
    closing = (token(b")") + token(b")")) * depth
    return token(nar.MAGIC) + opening + head + token(b")") + closing


def one_error_and_hint(result: subprocess.CompletedProcess[bytes]) -> str:
    """Check that ``result`` failed with one error line and one hint line,
    without a traceback; return the error line."""
    lines = result.stderr.decode().splitlines()
    assert result.returncode == 1, lines
    assert [line.split(":")[0] for line in lines] == ["error", "hint"], lines
    return lines[0]


def test_deep_tree_is_added_dumped_and_verified(clean_tmp_path: Path) -> None:
    tmp_path = clean_tmp_path
    deep = tmp_path / "deep"
    make_deep_tree(deep, DEPTH)
    added = pyguix(tmp_path, "store", "add", str(deep))
    assert added.returncode == 0, added.stderr[-2000:]
    path = added.stdout.decode().strip()

    dumped = pyguix(tmp_path, "store", "dump", path)
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    assert dumped.stdout == pyguix(tmp_path, "store", "dump", str(deep)).stdout
    assert dumped.stdout.count(b"\x01\x00\x00\x00\x00\x00\x00\x00d\x00") == DEPTH

    verified = pyguix(tmp_path, "store", "verify", "--check-contents")
    assert verified.returncode == 0, verified.stderr[-2000:]


def test_restore_of_a_nar_too_deep_for_the_file_system(clean_tmp_path: Path) -> None:
    tmp_path = clean_tmp_path
    # Paths of 3000 nested 'd' directories pass PATH_MAX; Nix fails there
    # too, with 'File name too long'.
    target = tmp_path / "out"
    failed = pyguix(tmp_path, "store", "restore", str(target), stdin=deep_nar(3000))
    error = one_error_and_hint(failed)
    assert error.startswith("error: NAR error at byte offset ")
    assert "File name too long" in error and len(error) < 400
    assert not os.path.lexists(target)


def test_query_accepts_a_trailing_slash(tmp_path: Path, tree: Path) -> None:
    path = pyguix(tmp_path, "store", "add", str(tree)).stdout.decode().strip()
    for given in (path + "/", path + "//", path.replace("/store/", "/store//")):
        hashed = pyguix(tmp_path, "store", "query", "--hash", given)
        assert hashed.returncode == 0, hashed.stderr
        assert hashed.stdout.decode().strip() == nar.hash_path(tree)[0].to_string()


def test_check_leftover_is_noted_not_failed(tmp_path: Path, tree: Path) -> None:
    path = pyguix(tmp_path, "store", "add", str(tree)).stdout.decode().strip()
    shutil.copytree(tree, path + "-check", symlinks=True)
    verified = pyguix(tmp_path, "store", "verify", "--check-contents")
    assert verified.returncode == 0, verified.stderr
    assert verified.stderr.decode().startswith(f"note: leftover '{path}-check': ")
    repaired = pyguix(tmp_path, "store", "verify", "--repair")
    assert repaired.stderr.decode().startswith(f"repaired: leftover '{path}-check'")
    assert not os.path.lexists(path + "-check")


def test_errors_have_a_hint(tmp_path: Path, tree: Path) -> None:
    path = pyguix(tmp_path, "store", "add", str(tree)).stdout.decode().strip()
    store_dir = str(tmp_path / "store")
    evil = (
        (FIXTURES / "closure.export")
        .read_bytes()
        .replace(b"/nix/store/", b"/etc/evilx/")
    )
    cases = {
        "dump-missing": (["store", "dump", "/nope"], b""),
        "restore-truncated": (
            ["store", "restore", str(tmp_path / "r2")],
            nar.dump_bytes(tree)[:100],
        ),
        "query-inside-item": (
            ["store", "query", "--references", path + "/README"],
            b"",
        ),
        "query-outside-store": (["store", "query", "--hash", "/elsewhere/x"], b""),
        "query-bad-hash": (["store", "query", "--hash", store_dir + "/e-x"], b""),
        "import-evil-path": (["store", "import"], evil),
        "hash-missing": (["hash", "path", str(tmp_path / "nonexistent")], b""),
    }
    for name, (args, stdin) in cases.items():
        result = pyguix(tmp_path, *args, stdin=stdin)
        assert one_error_and_hint(result), name
    inside = pyguix(tmp_path, "store", "query", "--references", path + "/README")
    assert f"give the store item itself, '{path}'" in inside.stderr.decode()
