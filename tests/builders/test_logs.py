"""Build logs: where they live, compression, atomic commit, the tail."""

from __future__ import annotations

import bz2
import os
import threading
from pathlib import Path

import pytest

from builders.logs import BuildLog, log_path, open_build_log, read_log

DRV = "/pyguix/store/0abcdfghijklmnpqrsvwxyz01234567-hello.drv"


def test_log_path_splits_the_base_name_as_nix(tmp_path: Path) -> None:
    path = log_path(str(tmp_path), DRV)

    assert path == str(
        tmp_path / "log" / "drvs" / "0a" / "bcdfghijklmnpqrsvwxyz01234567-hello.drv.bz2"
    )


def test_log_is_compressed_and_read_back(tmp_path: Path) -> None:
    text = b"".join(b"line %d of a rather repetitive build\n" % i for i in range(2000))

    with open_build_log(str(tmp_path), DRV) as log:
        for start in range(0, len(text), 777):
            log.write(text[start : start + 777])

    stored = Path(log_path(str(tmp_path), DRV)).read_bytes()
    assert bz2.decompress(stored) == text
    assert len(stored) < len(text) // 10
    assert read_log(str(tmp_path), DRV) == text
    assert log.size == len(text)


def test_log_appears_only_when_committed(tmp_path: Path) -> None:
    log = open_build_log(str(tmp_path), DRV)
    log.write(b"half of it\n")

    assert read_log(str(tmp_path), DRV) is None
    log.close()
    assert read_log(str(tmp_path), DRV) == b"half of it\n"
    assert os.listdir(os.path.dirname(log.path)) == [os.path.basename(log.path)]


def test_new_log_replaces_old_only_on_commit(tmp_path: Path) -> None:
    with open_build_log(str(tmp_path), DRV) as first:
        first.write(b"first build\n")
    second = open_build_log(str(tmp_path), DRV)
    second.write(b"second build\n")

    assert read_log(str(tmp_path), DRV) == b"first build\n"
    second.close()
    assert read_log(str(tmp_path), DRV) == b"second build\n"


def test_discard_keeps_previous_log_and_leaves_no_temp(tmp_path: Path) -> None:
    with open_build_log(str(tmp_path), DRV) as first:
        first.write(b"kept\n")
    dropped = open_build_log(str(tmp_path), DRV)
    dropped.write(b"dropped\n")
    dropped.discard()

    assert read_log(str(tmp_path), DRV) == b"kept\n"
    assert len(os.listdir(os.path.dirname(first.path))) == 1


def test_log_is_committed_when_the_build_raises(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), open_build_log(str(tmp_path), DRV) as log:
        log.write(b"error: compiler exploded\n")
        raise RuntimeError("build failed")

    assert read_log(str(tmp_path), DRV) == b"error: compiler exploded\n"


def test_tail_keeps_last_lines_across_chunk_boundaries(tmp_path: Path) -> None:
    log = open_build_log(str(tmp_path), DRV, tail_lines=3)
    log.write(b"one\ntwo\nth")
    log.write(b"ree\r\nfour\nfi")

    assert log.tail() == ["three", "four", "fi"]
    assert log.tail(2) == ["four", "fi"]
    assert log.tail(0) == []
    log.close()
    assert log.tail() == ["three", "four", "fi"]


def test_tail_of_short_log_and_bad_utf8(tmp_path: Path) -> None:
    log = open_build_log(str(tmp_path), DRV)
    log.write(b"caf\xe9\n")
    log.close()

    assert log.tail() == ["caf\ufffd"]
    assert read_log(str(tmp_path), DRV) == b"caf\xe9\n"


def test_tail_cuts_endless_lines(tmp_path: Path) -> None:
    log = open_build_log(str(tmp_path), DRV)
    for _ in range(100):
        log.write(b"x" * 10_000)
    log.close()

    (line,) = log.tail()
    assert 0 < len(line) <= 4096
    assert len(read_log(str(tmp_path), DRV) or b"") == 1_000_000


def test_on_line_sees_each_line_once_in_order(tmp_path: Path) -> None:
    seen: list[str] = []
    log = open_build_log(str(tmp_path), DRV, on_line=seen.append)
    log.write(b"a\nb")
    assert seen == ["a"]
    log.write(b"c\n\nd")
    log.close()

    assert seen == ["a", "bc", "", "d"]


def test_uncompressed_log_is_read_as_nix_reads_one(tmp_path: Path) -> None:
    plain = log_path(str(tmp_path), DRV).removesuffix(".bz2")
    os.makedirs(os.path.dirname(plain))
    Path(plain).write_bytes(b"from an older daemon\n")

    assert read_log(str(tmp_path), DRV) == b"from an older daemon\n"


def test_concurrent_logs_of_different_derivations(tmp_path: Path) -> None:
    drvs = [DRV.replace("hello", f"pkg{i}") for i in range(8)]

    def build(drv: str) -> None:
        with BuildLog(log_path(str(tmp_path), drv)) as log:
            for i in range(200):
                log.write(f"{drv} {i}\n".encode())

    threads = [threading.Thread(target=build, args=(drv,)) for drv in drvs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    for drv in drvs:
        lines = (read_log(str(tmp_path), drv) or b"").decode().splitlines()
        assert lines == [f"{drv} {i}" for i in range(200)]
