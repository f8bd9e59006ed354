"""builtin:fetchurl on real files and a real HTTP server on 127.0.0.1, and
fixed-output checks against hashes computed by Nix 2.8's nix-hash."""

from __future__ import annotations

import functools
import http.server
import lzma
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from builders.fetchurl import (
    FetchError,
    FixedOutputError,
    HashMismatchError,
    fetch_url,
    fixed_output_from_env,
    run_builtin_fetchurl,
    verify_fixed_output,
)
from store.hash import Hash
from store.nar import dump_bytes, hash_path

HELLO = b"hello world\n"
# nix-hash --type sha256 [--flat] --base32 of a file holding HELLO (Nix 2.8)
HELLO_FLAT = "sha256:0ix4jahrkll5zg01wandq78jw3ab30q4nscph67rniqg5x7r0j59"
HELLO_NAR = "sha256:00zns3gj9hwz2a4b0i07y7nmxybq59lh24bl3xsxblcl6333mjil"
HELLO_NAR_EXECUTABLE = "sha256:08dz2j85pn9szqrsnm3r7snlrhwr6wfvs6rl384j8kksb5qv818b"
HELLO_FLAT_SHA1 = "sha1:27ahx31f6615vf0zk1pv0h6yndin6n92"
DRV = "/pyguix/store/0abcdfghijklmnpqrsvwxyz01234567-hello.drv"


def digest(text: str) -> bytes:
    return Hash.from_string(text).digest


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "src" / "hello.txt"
    path.parent.mkdir()
    path.write_bytes(HELLO)
    return path


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    timeout = 5

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server(source: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 serving the source directory; its base URL."""
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    handler = functools.partial(QuietHandler, directory=str(source.parent))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def test_file_url_fetch_and_flat_verify(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"

    size = fetch_url(source.as_uri(), str(out))

    assert size == len(HELLO) and out.read_bytes() == HELLO
    assert not os.access(out, os.X_OK)
    verify_fixed_output(str(out), "sha256", digest(HELLO_FLAT), False)
    verify_fixed_output(str(out), "sha1", digest(HELLO_FLAT_SHA1), False)
    verify_fixed_output(str(out), "sha256", digest(HELLO_NAR), True)


def test_executable_fetch_through_the_environment(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"

    run_builtin_fetchurl({"url": source.as_uri(), "executable": "1"}, str(out))

    assert os.stat(out).st_mode & 0o777 == 0o755
    verify_fixed_output(str(out), "sha256", digest(HELLO_NAR_EXECUTABLE), True)
    verify_fixed_output(str(out), "sha256", digest(HELLO_FLAT), False)


def test_http_fetch_from_loopback(server: str, tmp_path: Path) -> None:
    out = tmp_path / "out"

    run_builtin_fetchurl({"url": f"{server}/hello.txt"}, str(out))

    assert out.read_bytes() == HELLO
    verify_fixed_output(str(out), "sha256", digest(HELLO_FLAT), False, drv_path=DRV)


def test_http_fetch_streams_a_large_file(
    server: str, source: Path, tmp_path: Path
) -> None:
    data = os.urandom(3 << 20)
    (source.parent / "big.bin").write_bytes(data)
    out = tmp_path / "out"

    assert fetch_url(f"{server}/big.bin", str(out)) == len(data)
    assert out.read_bytes() == data


def test_http_error_names_url_and_status(server: str, tmp_path: Path) -> None:
    out = tmp_path / "out"

    with pytest.raises(FetchError) as raised:
        fetch_url(f"{server}/missing.tar.gz", str(out))

    assert str(raised.value) == (
        f"cannot fetch '{server}/missing.tar.gz': the server answered 404 File not found"
    )
    assert not out.exists()


def test_wrong_hash_is_rejected_naming_both_hashes(
    source: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    fetch_url(source.as_uri(), str(out))
    wrong = "sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s"

    with pytest.raises(HashMismatchError) as raised:
        verify_fixed_output(str(out), "sha256", digest(wrong), False, drv_path=DRV)

    error = raised.value
    assert str(error).splitlines() == [
        f"hash mismatch in fixed-output derivation '{DRV}':",
        f"  specified: {wrong}",
        f"  got:       {HELLO_FLAT}",
    ]
    assert error.specified == Hash.from_string(wrong)
    assert error.got == Hash.from_string(HELLO_FLAT)
    assert error.drv_path == DRV and error.hint


def test_wrong_recursive_hash_without_derivation(source: Path) -> None:
    with pytest.raises(HashMismatchError) as raised:
        verify_fixed_output(str(source), "sha256", digest(HELLO_FLAT), True)

    assert str(raised.value).startswith(f"hash mismatch in '{source}':")
    assert HELLO_NAR in str(raised.value)


def test_missing_file_url_is_readable(tmp_path: Path) -> None:
    url = (tmp_path / "nowhere.tar.gz").as_uri()

    with pytest.raises(FetchError) as raised:
        run_builtin_fetchurl({"url": url}, str(tmp_path / "out"))

    assert str(raised.value) == (
        f"cannot fetch '{url}': there is no file '{tmp_path / 'nowhere.tar.gz'}'"
    )
    assert not (tmp_path / "out").exists()


def test_missing_url_variable_is_readable(tmp_path: Path) -> None:
    with pytest.raises(FetchError) as raised:
        run_builtin_fetchurl({"outputHash": HELLO_FLAT}, str(tmp_path / "out"))

    assert "has no 'url' for 'builtin:fetchurl'" in str(raised.value)
    assert raised.value.hint and "'url'" in raised.value.hint


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.org/x", "the URL scheme 'ftp' is not supported"),
        ("just-a-name", "the URL scheme '(none)' is not supported"),
        ("file://otherhost/etc/hosts", "not files on host 'otherhost'"),
    ],
    ids=["ftp", "no-scheme", "remote-file-host"],
)
def test_unsupported_urls(url: str, reason: str, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match=re.escape(reason)):
        fetch_url(url, str(tmp_path / "out"))


def test_existing_destination_is_left_alone(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.write_text("keep me")

    with pytest.raises(FetchError, match="already exists"):
        fetch_url(source.as_uri(), str(out))

    assert out.read_text() == "keep me"


def test_silent_server_times_out(tmp_path: Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/slow"
    start = time.monotonic()

    with listener, pytest.raises(FetchError, match="timed out"):
        fetch_url(url, str(tmp_path / "out"), timeout=0.5)

    assert time.monotonic() - start < 5
    assert not (tmp_path / "out").exists()


def test_refused_connection(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    with pytest.raises(FetchError, match="cannot connect"):
        fetch_url(f"http://127.0.0.1:{port}/x", str(tmp_path / "out"), timeout=2)


@pytest.mark.parametrize("compressed", [False, True], ids=["nar", "nar.xz"])
def test_unpack_restores_a_nar(compressed: bool, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "bin").mkdir(parents=True)
    (tree / "bin" / "run").write_text("#!/bin/sh\n")
    (tree / "bin" / "run").chmod(0o755)
    os.symlink("bin/run", tree / "link")
    archive = dump_bytes(tree)
    served = tmp_path / ("tree.nar.xz" if compressed else "tree.nar")
    served.write_bytes(lzma.compress(archive) if compressed else archive)
    out = tmp_path / "out"

    run_builtin_fetchurl({"url": served.as_uri(), "unpack": "1"}, str(out))

    assert os.readlink(out / "link") == "bin/run"
    expected, _ = hash_path(tree)
    verify_fixed_output(str(out), "sha256", expected.digest, True)


def test_unpack_rejects_what_is_not_a_nar(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"

    with pytest.raises(FetchError, match="not a valid NAR"):
        run_builtin_fetchurl({"url": source.as_uri(), "unpack": "1"}, str(out))

    assert not out.exists()


def test_flat_hash_of_a_tree_or_nothing_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FixedOutputError, match="is not a regular file"):
        verify_fixed_output(str(tmp_path), "sha256", digest(HELLO_FLAT), False)
    with pytest.raises(FixedOutputError, match="was not created"):
        verify_fixed_output(str(tmp_path / "none"), "sha256", digest(HELLO_FLAT), False)


def test_fixed_output_from_nix_environment() -> None:
    base16 = Hash.from_string(HELLO_FLAT).to_base16()
    env = {"outputHash": base16, "outputHashAlgo": "sha256", "outputHashMode": "flat"}
    sri = {
        "outputHash": Hash.from_string(HELLO_NAR).to_sri(),
        "outputHashMode": "recursive",
    }

    assert fixed_output_from_env(env) == (Hash.from_string(HELLO_FLAT), False)
    assert fixed_output_from_env(sri) == (Hash.from_string(HELLO_NAR), True)
    assert fixed_output_from_env({"url": "file:///x"}) is None
