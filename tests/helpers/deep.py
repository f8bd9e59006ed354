"""Trees nested deeper than Python's default recursion limit."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DEPTH", "make_deep_tree"]

DEPTH = 1100
"""Deeper than Python's default recursion limit of 1000."""


def make_deep_tree(top: Path, depth: int = DEPTH) -> None:
    """Create ``top/d/d/.../d/leaf``, ``depth`` directories below ``top``,
    the file ``leaf`` holding ``deep\\n``."""
    os.mkdir(top)
    path = str(top)
    for _ in range(depth):
        path += "/d"
        os.mkdir(path)
    Path(path, "leaf").write_text("deep\n")
