"""Encode and decode Nix's base32, the alphabet of store path hash parts.

Nix's base32 (``printHash32`` in Nix's ``libutil/hash.cc``, Guix's
``guix/base32.scm``) is not RFC 4648.  It reads the bytes as one
little-endian integer and prints its 5-bit groups from the most significant
down, with the alphabet ``0123456789abcdfghijklmnpqrsvwxyz`` (no ``e``,
``o``, ``t``, ``u``).  The last character therefore holds the low five bits
of byte 0, and ``n`` bytes take ``(8 * n - 1) // 5 + 1`` characters: 32 for
a 20-byte store path hash, 52 for a sha256 digest.
"""

from __future__ import annotations

from store.errors import PyguixError

__all__ = ["ALPHABET", "Base32Error", "decode", "encode", "encoded_length"]

ALPHABET = "0123456789abcdfghijklmnpqrsvwxyz"

_DIGITS = {char: value for value, char in enumerate(ALPHABET)}


class Base32Error(PyguixError):
    """Report text that is not Nix base32 of the expected size.

    :param text: the text given.
    :param offset: the offset of the first bad character, or ``None`` when
        the text as a whole is wrong (its length, its leading bits).
    """

    def __init__(self, text: str, reason: str, offset: int | None = None) -> None:
        where = "" if offset is None else f" at offset {offset}"
        super().__init__(f"'{text}' is not valid Nix base32{where}: {reason}")
        self.text = text
        self.offset = offset


def encoded_length(size: int) -> int:
    """Return the number of base32 characters that encode ``size`` bytes."""
    return 0 if size == 0 else (size * 8 - 1) // 5 + 1


def encode(data: bytes) -> str:
    """Return ``data`` in Nix base32.

    >>> encode(bytes(20))
    '00000000000000000000000000000000'
    """
    number = int.from_bytes(data, "little")
    length = encoded_length(len(data))
    return "".join(
        ALPHABET[(number >> (5 * group)) & 31] for group in range(length - 1, -1, -1)
    )


def decode(text: str, size: int | None = None) -> bytes:
    """Return the bytes that ``text``, in Nix base32, encodes.

    :param size: the expected number of bytes; by default the largest size
        whose encoding has the length of ``text``.
    :raises Base32Error: on a character outside the alphabet, a length that
        does not match ``size``, or leading bits that overflow it (Nix
        rejects those too).
    """
    if size is None:
        size = len(text) * 5 // 8
    if len(text) != encoded_length(size):
        raise Base32Error(
            text, f"expected {encoded_length(size)} characters for {size} bytes"
        )

    number = 0
    for offset, char in enumerate(text):
        digit = _DIGITS.get(char)
        if digit is None:
            raise Base32Error(text, f"unexpected character {char!r}", offset)
        number = (number << 5) | digit

    if number >> (8 * size):
        raise Base32Error(text, f"the value does not fit in {size} bytes", 0)
    return number.to_bytes(size, "little")
