"""The builtin fetcher: ``builtin:fetchurl`` derivations, and fixed-output checks.

A derivation whose builder is ``builtin:fetchurl`` is not run in a sandbox:
the builder itself downloads its one output, as Nix's ``builtinFetchurl``
(``libstore/builtins/fetchurl.cc``) does.  It must be a fixed-output
derivation, since only a declared hash makes a download reproducible.  Its
environment says what to fetch:

``url``
    the URL to fetch: ``file://`` (local files, host empty or
    ``localhost``), ``http://`` or ``https://`` (proxies from the usual
    environment variables, TLS checked against the system's certificates);
``executable``
    ``"1"`` to make the downloaded file executable (mode 0755);
``unpack``
    ``"1"`` when the download is a NAR to unpack into the output (xz
    decompressed first when ``url`` ends in ``.xz``), for recursive hashes
    of trees; otherwise the bytes are the output file itself.

Nix's derivations also carry ``outputHash``, ``outputHashAlgo`` and
``outputHashMode`` in the environment; :func:`fixed_output_from_env` reads
them, but the hash that counts is the one the derivation's output declares,
which the caller checks after the fetch with :func:`verify_fixed_output` (as
for every fixed-output derivation): a flat hash of the file's bytes, or a
recursive one of its NAR.  A mismatch reads, in Nix's shape::

    hash mismatch in fixed-output derivation '/pyguix/store/…-src.tar.gz.drv':
      specified: sha256:0abc…
      got:       sha256:1xyz…

TODO: Nix first tries its ``hashed-mirrors`` for flat hashes; there are none yet.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import BinaryIO

from pyguix import __version__
from store.errors import PyguixError
from store.hash import ALGORITHMS, Hash
from store.nar import NarError, hash_path, restore

__all__ = [
    "BUILDER",
    "DEFAULT_TIMEOUT",
    "FetchError",
    "FixedOutputError",
    "HashMismatchError",
    "fetch_url",
    "fixed_output_from_env",
    "hash_file",
    "run_builtin_fetchurl",
    "verify_fixed_output",
]

BUILDER = "builtin:fetchurl"
"""The builder of derivations this module builds."""

DEFAULT_TIMEOUT = 60.0
"""Seconds to wait for a connection or for the next bytes of a download."""

_CHUNK = 1 << 16


class FetchError(PyguixError):
    """Report a download that failed.

    :param url: the URL (``""`` if the derivation gave none).
    :param reason: what went wrong, as one phrase.
    """

    def __init__(self, url: str, reason: str, hint: str | None = None) -> None:
        super().__init__(f"cannot fetch '{url}': {reason}", hint)
        self.url = url
        self.reason = reason


class FixedOutputError(PyguixError):
    """Report a fixed output that cannot be checked against its hash.

    :param path: the output's physical path.
    """

    def __init__(self, path: str, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.path = path


class HashMismatchError(FixedOutputError):
    """Report a fixed output whose hash is not the declared one.

    :param path: the output's physical path.
    :param specified: the hash the derivation declares.
    :param got: the hash of what was built or fetched.
    :param drv_path: the derivation, named in the message when given.
    """

    def __init__(
        self, path: str, specified: Hash, got: Hash, drv_path: str | None = None
    ) -> None:
        what = f"fixed-output derivation '{drv_path}'" if drv_path else f"'{path}'"
        super().__init__(
            path,
            f"hash mismatch in {what}:\n"
            f"  specified: {specified.to_string()}\n"
            f"  got:       {got.to_string()}",
            "if the new content is the one you want, declare the hash it got",
        )
        self.specified = specified
        self.got = got
        self.drv_path = drv_path


# -- Opening URLs -------------------------------------------------------------


def _file_path(url: str, parsed: urllib.parse.ParseResult) -> str:
    """Return the local path a ``file://`` URL names."""
    if parsed.netloc not in ("", "localhost"):
        raise FetchError(
            url,
            f"file URLs name local files, not files on host '{parsed.netloc}'",
            "write file:///PATH (three slashes) for a local file",
        )
    return urllib.request.url2pathname(parsed.path)


@contextmanager
def _open_file(url: str, path: str) -> Iterator[BinaryIO]:
    try:
        stream = open(path, "rb")  # noqa: SIM115 (closed below)
    except FileNotFoundError:
        raise FetchError(url, f"there is no file '{path}'") from None
    except OSError as error:
        raise FetchError(url, f"cannot open '{path}': {error.strerror}") from None
    with stream:
        if not os.path.isfile(path):
            raise FetchError(url, f"'{path}' is not a regular file")
        yield stream


@contextmanager
def _open_http(url: str, timeout: float) -> Iterator[BinaryIO]:
    request = urllib.request.Request(
        url, headers={"User-Agent": f"pyguix/{__version__}"}
    )
    opener = urllib.request.build_opener()
    try:
        response = opener.open(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        error.close()
        raise FetchError(
            url, f"the server answered {error.code} {error.reason}"
        ) from None
    except urllib.error.URLError as error:
        raise FetchError(url, f"cannot connect: {error.reason}") from None
    except (OSError, ValueError) as error:
        raise FetchError(url, str(error) or type(error).__name__) from None
    with response:
        yield response


@contextmanager
def _open_url(url: str, timeout: float) -> Iterator[BinaryIO]:
    """Open ``url`` for reading its bytes.

    :raises FetchError: if it cannot be opened.
    """
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        with _open_file(url, _file_path(url, parsed)) as stream:
            yield stream
    elif parsed.scheme in ("http", "https"):
        with _open_http(url, timeout) as stream:
            yield stream
    else:
        scheme = parsed.scheme or "(none)"
        raise FetchError(
            url,
            f"the URL scheme '{scheme}' is not supported",
            "use a file://, http:// or https:// URL",
        )


# -- Fetching -----------------------------------------------------------------


def _copy(url: str, source: BinaryIO, dest: BinaryIO) -> int:
    """Copy ``source`` to ``dest``; return the byte count."""
    size = 0
    while True:
        try:
            chunk = source.read(_CHUNK)
        except (OSError, ValueError) as error:
            raise FetchError(url, f"the download broke off: {error}") from None
        if not chunk:
            return size
        dest.write(chunk)
        size += len(chunk)


def fetch_url(
    url: str,
    dest_path: str,
    *,
    executable: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
) -> int:
    """Download ``url`` into the new file ``dest_path``, streaming to disk.

    :param dest_path: must not exist; its directory must.
    :param executable: make the file executable (mode 0755).
    :param timeout: seconds to wait to connect, and for each read.
    :return: the number of bytes written.
    :raises FetchError: if the URL cannot be fetched; nothing is then left
        at ``dest_path``.
    """
    with _open_url(url, timeout) as source:
        try:
            dest = open(dest_path, "xb")  # noqa: SIM115 (closed below)
        except FileExistsError:
            raise FetchError(
                url, f"its destination '{dest_path}' already exists"
            ) from None
        try:
            with dest:
                size = _copy(url, source, dest)
        except BaseException:
            os.unlink(dest_path)
            raise
    if executable:
        os.chmod(dest_path, 0o755)
    return size


def _unpack_url(url: str, dest_path: str, timeout: float) -> None:
    """Restore the NAR at ``url`` (xz-compressed if it ends in ``.xz``)."""
    with _open_url(url, timeout) as source:
        try:
            if url.endswith(".xz"):
                with lzma.open(source, "rb") as plain:
                    restore(plain, dest_path)  # type: ignore[arg-type]
            else:
                restore(source, dest_path)
        except (NarError, lzma.LZMAError) as error:
            raise FetchError(url, f"it is not a valid NAR: {error}") from None
        except OSError as error:
            raise FetchError(url, f"the download broke off: {error}") from None


def run_builtin_fetchurl(
    env: Mapping[str, str],
    out_path_physical: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> None:
    """Build a ``builtin:fetchurl`` derivation: fetch its ``url`` into its
    output, as Nix's ``builtinFetchurl``.

    The caller then checks the output against the derivation's declared
    hash with :func:`verify_fixed_output`, and canonicalises it.

    :param env: the derivation's environment (see the module's docstring).
    :param out_path_physical: where the ``out`` output goes; must not exist.
    :raises FetchError: if ``url`` is missing or cannot be fetched;
        nothing is then left at ``out_path_physical``.
    """
    url = env.get("url")
    if not url:
        raise FetchError(
            "",
            f"the derivation's environment has no 'url' for '{BUILDER}'",
            "give the URL to fetch in the environment variable 'url'",
        )
    if env.get("unpack") == "1":
        _unpack_url(url, out_path_physical, timeout)
    else:
        fetch_url(
            url,
            out_path_physical,
            executable=env.get("executable") == "1",
            timeout=timeout,
        )


# -- Checking fixed outputs ---------------------------------------------------


def fixed_output_from_env(env: Mapping[str, str]) -> tuple[Hash, bool] | None:
    """Return the hash and recursiveness Nix's ``outputHash``,
    ``outputHashAlgo`` and ``outputHashMode`` variables declare, if any.

    :raises HashError: if ``outputHash`` is not a valid hash.
    """
    text = env.get("outputHash")
    if not text:
        return None
    algorithm = env.get("outputHashAlgo") or None
    digest = Hash.from_string(text, algorithm)
    return digest, env.get("outputHashMode") == "recursive"


def hash_file(path: str, algorithm: str) -> Hash:
    """Return the hash of the bytes of the regular file ``path`` (a flat
    hash, ``nix-hash --flat``), reading it in chunks."""
    with open(path, "rb") as file:
        return Hash(algorithm, hashlib.file_digest(file, algorithm).digest())


def verify_fixed_output(
    path: str,
    algo: str,
    expected_digest: bytes,
    recursive: bool,
    *,
    drv_path: str | None = None,
) -> None:
    """Check that the output at ``path`` has the declared hash.

    :param path: the output's physical path.
    :param algo: the hash algorithm, one of :data:`store.hash.ALGORITHMS`.
    :param expected_digest: the declared digest (a derivation output's
        ``hash``).
    :param recursive: hash the NAR of ``path``; else the bytes of the
        regular file ``path``.
    :param drv_path: the derivation, named in the error.
    :raises HashMismatchError: if the hashes differ, naming both.
    :raises FixedOutputError: if there is nothing to hash, or a flat output
        is not a regular file.
    """
    assert algo in ALGORITHMS, algo
    specified = Hash(algo, expected_digest)
    if not os.path.lexists(path):
        raise FixedOutputError(path, f"the fixed output '{path}' was not created")

    if recursive:
        got, _ = hash_path(path, algo)
    elif os.path.isfile(path) and not os.path.islink(path):
        got = hash_file(path, algo)
    else:
        raise FixedOutputError(
            path,
            f"the fixed output '{path}' has a flat hash but is not a regular file",
            "declare a recursive hash (outputHashMode 'recursive') for a tree",
        )

    if got != specified:
        raise HashMismatchError(path, specified, got, drv_path)
