"""Hold a cryptographic hash and print or parse it in Nix's forms.

A :class:`Hash` is an algorithm name (``md5``, ``sha1``, ``sha256``,
``sha512``) and a digest.  Nix prints hashes in base16, Nix base32 or
base64, optionally prefixed with ``ALGO:``, or as SRI (``ALGO-BASE64``); the
parser (Nix's ``Hash`` constructor in ``libutil/hash.cc``) tells the
encoding from the length of the text.  :func:`compress_hash` is Nix's
``compressHash``, the XOR fold that makes a 20-byte store path hash.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Literal

from store import base32
from store.errors import PyguixError

__all__ = [
    "ALGORITHMS",
    "Hash",
    "HashError",
    "compress_hash",
    "hash_bytes",
]

ALGORITHMS = {"md5": 16, "sha1": 20, "sha256": 32, "sha512": 64}
"""Digest size in bytes of each algorithm Nix knows."""

Base = Literal["base16", "base32", "base64"]


class HashError(PyguixError):
    """Report text that is not a hash in any form Nix accepts."""

    def __init__(self, text: str, reason: str) -> None:
        super().__init__(
            f"'{text}' is not a valid hash: {reason}",
            "give ALGO:HASH in base16, Nix base32 or base64, or an SRI hash",
        )
        self.text = text


@dataclass(frozen=True, slots=True)
class Hash:
    """A digest and the algorithm that made it."""

    algorithm: str
    """One of :data:`ALGORITHMS`."""

    digest: bytes
    """The raw digest, of the algorithm's size."""

    def __post_init__(self) -> None:
        assert ALGORITHMS.get(self.algorithm) == len(self.digest), self

    def to_base16(self) -> str:
        """Return the digest in lowercase hexadecimal."""
        return self.digest.hex()

    def to_base32(self) -> str:
        """Return the digest in Nix base32."""
        return base32.encode(self.digest)

    def to_base64(self) -> str:
        """Return the digest in standard, padded base64."""
        return base64.b64encode(self.digest).decode("ascii")

    def to_string(self, base: Base = "base32", prefixed: bool = True) -> str:
        """Return the hash as ``ALGO:DIGEST`` (or the bare digest) in ``base``."""
        text = {
            "base16": self.to_base16,
            "base32": self.to_base32,
            "base64": self.to_base64,
        }[base]()
        return f"{self.algorithm}:{text}" if prefixed else text

    def to_sri(self) -> str:
        """Return the hash in Subresource Integrity form, ``ALGO-BASE64``."""
        return f"{self.algorithm}-{self.to_base64()}"

    @classmethod
    def from_string(cls, text: str, algorithm: str | None = None) -> Hash:
        """Parse ``text`` as Nix does: ``ALGO:DIGEST``, ``ALGO-BASE64`` or a
        bare digest whose algorithm is ``algorithm``.

        :raises HashError: on an unknown algorithm, a conflicting one, or a
            digest that is not base16, base32 or base64 of the right size.
        """
        rest, named, is_sri = _split_algorithm(text)
        if named and algorithm and named != algorithm:
            raise HashError(text, f"expected a {algorithm} hash, not {named}")
        algorithm = named or algorithm
        if algorithm is None:
            raise HashError(text, "the hash algorithm is not given")
        if algorithm not in ALGORITHMS:
            raise HashError(text, f"unknown hash algorithm '{algorithm}'")
        return cls(algorithm, _decode_digest(text, rest, ALGORITHMS[algorithm], is_sri))


def _split_algorithm(text: str) -> tuple[str, str | None, bool]:
    """Split ``ALGO:REST`` or ``ALGO-REST`` into its parts."""
    if ":" in text:
        named, _, rest = text.partition(":")
        return rest, named, False
    named, dash, rest = text.partition("-")
    if dash and named in ALGORITHMS:
        return rest, named, True
    return text, None, False


def _decode_digest(text: str, rest: str, size: int, is_sri: bool) -> bytes:
    """Decode ``rest`` as the encoding its length implies."""
    base64_length = 4 * ((size + 2) // 3)
    try:
        if not is_sri and len(rest) == 2 * size:
            return bytes.fromhex(rest)
        if not is_sri and len(rest) == base32.encoded_length(size):
            return base32.decode(rest, size)
        if len(rest) == base64_length:
            digest = base64.b64decode(rest, validate=True)
            if len(digest) == size:
                return digest
    except (ValueError, binascii.Error, base32.Base32Error) as error:
        raise HashError(text, str(error)) from None
    raise HashError(text, f"a digest of {size} bytes has the wrong length")


def hash_bytes(algorithm: str, data: bytes) -> Hash:
    """Return the ``algorithm`` hash of ``data``."""
    return Hash(algorithm, hashlib.new(algorithm, data).digest())


def compress_hash(digest: bytes, size: int) -> bytes:
    """Fold ``digest`` to ``size`` bytes by XOR, as Nix's ``compressHash``."""
    folded = bytearray(size)
    for index, byte in enumerate(digest):
        folded[index % size] ^= byte
    return bytes(folded)
