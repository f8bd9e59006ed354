"""NAR, the Nix ARchive: the canonical serialisation of a file tree.

The grammar and the error live in :mod:`store.nar.grammar`; writing (and
hashing) in :mod:`store.nar.writer`; strict, streaming reading in
:mod:`store.nar.reader`; creating a tree from an archive in
:mod:`store.nar.restore`.  This package re-exports their public surface.
"""

from store.nar.grammar import MAGIC, NarError
from store.nar.reader import (
    Directory,
    DirectoryEnd,
    Event,
    FileChunk,
    NarReader,
    RegularFile,
    Symlink,
    copy_nar,
    read_events,
)
from store.nar.restore import restore
from store.nar.writer import copy_path, dump, dump_bytes, hash_path

__all__ = [
    "MAGIC",
    "Directory",
    "DirectoryEnd",
    "Event",
    "FileChunk",
    "NarError",
    "NarReader",
    "RegularFile",
    "Symlink",
    "copy_nar",
    "copy_path",
    "dump",
    "dump_bytes",
    "hash_path",
    "read_events",
    "restore",
]
