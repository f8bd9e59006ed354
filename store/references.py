"""Find which store paths an item refers to, by scanning its bytes.

A store item refers to another when the other's 32-character hash part
occurs anywhere in the item's NAR serialisation: in file contents, symlink
targets or file names.  This is Nix's ``RefScanSink`` (``libstore/references.cc``)
and Guix's ``scan-for-references``: the scan is over the NAR stream, read in
chunks, and a hash part split across two chunks is still found because the
last 31 bytes of each chunk are kept and scanned again with the next one.

Within a chunk, runs of 32 or more Nix base32 characters are found with one
regular expression; each 32-character window of a run is then looked up in
the candidate set, so the cost is one pass over the bytes plus work
proportional to the base32-looking text.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from store import nar
from store.paths import HASH_PART_LENGTH

__all__ = ["RefScanner", "scan_references"]

_RUN = re.compile(rb"[0-9a-df-np-sv-z]{%d,}" % HASH_PART_LENGTH)


def _hash_part(candidate: str) -> str:
    """Return the hash part of a store path, or the candidate if it is one."""
    if "/" in candidate:
        candidate = candidate.rstrip("/").rsplit("/", 1)[1]
    return candidate[:HASH_PART_LENGTH]


class RefScanner:
    """Scan a stream of bytes, fed in pieces, for candidate hash parts.

    :param candidates: hash parts or full store paths; :attr:`found` holds
        the candidates (as given) whose hash part occurred.
    """

    def __init__(self, candidates: Iterable[str]) -> None:
        self._by_hash: dict[bytes, list[str]] = {}
        for candidate in candidates:
            key = _hash_part(candidate).encode("ascii")
            self._by_hash.setdefault(key, []).append(candidate)
        self._seen: set[bytes] = set()
        self._tail = b""

    def feed(self, data: bytes) -> None:
        """Scan the next piece of the stream."""
        if not self._by_hash or len(self._seen) == len(self._by_hash):
            return
        window = self._tail + data
        for match in _RUN.finditer(window):
            self._check_run(match.group())
        self._tail = window[-(HASH_PART_LENGTH - 1) :]

    def _check_run(self, run: bytes) -> None:
        for start in range(len(run) - HASH_PART_LENGTH + 1):
            piece = run[start : start + HASH_PART_LENGTH]
            if piece in self._by_hash:
                self._seen.add(piece)

    @property
    def found(self) -> set[str]:
        """Return the candidates whose hash part has occurred so far."""
        return {c for key in self._seen for c in self._by_hash[key]}


def scan_references(
    path: str | os.PathLike[str], candidates: Iterable[str]
) -> set[str]:
    """Return those ``candidates`` whose hash part occurs in the tree at ``path``.

    :param path: a physical path (a file, directory or symlink).
    :param candidates: hash parts or store paths; they are returned as given.
    :raises store.nar.NarError: when the tree cannot be read.
    """
    scanner = RefScanner(candidates)
    nar.dump(path, scanner.feed)
    return scanner.found
