"""The persistent lowering cache: what objects lowered to, across processes.

Lowering is memoised per store connection (Guix's ``mcached``); this cache
makes a second evaluation of an unchanged configuration, in a new process,
almost free.  It maps a *stable key* of an object to the derivation path or
store path the object lowered to.  The key is the sha256 of a canonical
msgpack serialisation of the object's content and options (its
*fingerprint*, see ``derivations.gexp.Compiler``), the system, the store
directory, the pyguix version, the bootstrap interpreter's identity and a
digest of the lowering code itself; never of the object's identity.

File: ``<state dir>/cache/lowering.msgpack``, one msgpack map::

    {"schema": "pyguix-lowering-cache", "version": 1,
     "store_dir": STR,
     "entries": {KEY (32 bytes): [KIND ("drv" | "path"), PATH (str)], ...}}

Trust rules:

- an entry is used only if what it names is valid in the store; the paths
  of all entries are checked in one ``query_valid`` when the file is first
  read, and invalid ones are dropped (and counted as *stale* when asked for);
- a file that is not msgpack, not of this schema, version or store
  directory, or holds a malformed entry, is ignored as a whole and
  rewritten on the next save;
- saving merges the entries on disk with ours under an exclusive lock on
  ``lowering.msgpack.lock``, then writes a temporary file and renames it
  over the old one, so readers never see a partial file and concurrent
  writers lose no entries.

Counters (:class:`CacheStats`): *hits* (lowerings answered from the file),
*misses* (objects lowered), *stale* (entries found but no longer valid).

**The evaluation cache** (:class:`EvaluationCache`) sits one level above:
it maps what a command evaluates (an OS file or a ``build -f`` file, with
the command's options) straight to the store paths it gave, so that an
unchanged evaluation neither runs the file nor imports the modules it
needs.  Its key (:func:`evaluation_key`) is the sha256 of the command, its
options, the file's real path and content, the store directory, the host
(``uname``), the interpreter (real path and ``sys.version``), ``sys.path``
and the ``PYGUIX_*`` variables.  Each entry also lists the files the
evaluation depended on, each with its *signature*: the files the process
opened for reading or listed while it evaluated (seen by an audit hook,
:func:`sys.addaudithook`: modules, files run or read by the evaluated
file, local files), the files of every module loaded before, the project
modules copied into the store and the local files
(:func:`note_dependency`), and the interpreter binary.  Items under the
store and state directories are left out, being immutable or the store's
own, and so are bytecode caches.

A signature is ``lstat`` data (size, modification and change times in
ns, inode, mode), with the link target of a symlink, and for a directory
the digest of its entry names; a missing file has the signature
``absent``.  The signature of a noted file is *deep* (it starts with
``deep``): for a directory, it digests its entries' deep signatures too,
so that a local directory is checked whole.  The listings of ``sys.path``
directories by the import system and ``importlib.metadata`` are not
recorded (a listed ``/tmp`` would never match).  An entry is used only if
every signature still matches and every path it gives is valid in the
store.

File: ``<state dir>/cache/evaluations/<hex key>``, one msgpack map,
written to a temporary file renamed into place::

    {"schema": "pyguix-evaluation-cache", "version": 1, "key": KEY (32 bytes),
     "result": [[KIND ("drv" | "path"), PATH], ...],
     "depends": [[FILE, SIGNATURE (bytes)], ...]}

A damaged or foreign file is a miss, overwritten by the next evaluation.

XXX: an evaluated file is taken not to depend on what the key and the
audit hook cannot see: environment variables other than ``PYGUIX_*``, the
clock, the network, files read by other processes or through directory
descriptors, a module added where it would shadow another one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import stat
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

__all__ = [
    "CACHE_FILE",
    "EVALUATION_DIR",
    "EVALUATION_SCHEMA",
    "SCHEMA",
    "VERSION",
    "CacheStats",
    "EvaluationCache",
    "cached_evaluation",
    "cached_expression_evaluation",
    "evaluation_dependencies",
    "evaluation_key",
    "expression_key",
    "file_signature",
    "note_dependency",
]

SCHEMA = "pyguix-lowering-cache"
VERSION = 1
CACHE_FILE = ("cache", "lowering.msgpack")
"""The cache file, relative to the state directory."""

KINDS = ("drv", "path")


@dataclass
class CacheStats:
    """How the persistent cache answered, since the store was opened."""

    hits: int = 0
    """Objects whose lowering came from the cache file."""

    misses: int = 0
    """Objects lowered for real."""

    stale: int = 0
    """Entries found whose item is no longer valid, so not used."""

    damaged: bool = False
    """Whether the file read was damaged and ignored."""


class LoweringCache:
    """The persistent lowering cache of one store.

    :param store: a store with ``state_file``, ``store_dir`` and
        ``query_valid`` (see ``store.local.LocalStore``).
    """

    def __init__(self, store: Any) -> None:
        self.store = store
        self.path = store.state_file(*CACHE_FILE)
        self.stats = CacheStats()
        self._entries: dict[bytes, tuple[str, str]] | None = None
        self._invalid: dict[bytes, tuple[str, str]] = {}
        self._new: dict[bytes, tuple[str, str]] = {}
        self._rewrite = False

    # -- Reading --------------------------------------------------------------

    def lookup(self, key: bytes) -> tuple[str, str] | None:
        """Return ``(kind, path)`` for ``key`` if known and still valid."""
        entries = self._load()
        found = self._new.get(key) or entries.get(key)
        if found is None:
            if key in self._invalid:
                self.stats.stale += 1
            return None
        self.stats.hits += 1
        return found

    def _load(self) -> dict[bytes, tuple[str, str]]:
        """Read the file once, keeping only entries whose item is valid."""
        if self._entries is None:
            read = self._read_file()
            valid = self.store.query_valid({path for _, path in read.values()})
            self._entries = {
                key: entry for key, entry in read.items() if entry[1] in valid
            }
            self._invalid = {k: e for k, e in read.items() if k not in self._entries}
        return self._entries

    def _read_file(self) -> dict[bytes, tuple[str, str]]:
        """Return the entries of the cache file, or none if it is absent or
        damaged."""
        try:
            with open(self.path, "rb") as file:
                data = file.read()
        except FileNotFoundError:
            return {}
        entries = _decode(data, self.store.store_dir)
        if entries is None:
            self.stats.damaged = self._rewrite = True
            return {}
        return entries

    # -- Writing --------------------------------------------------------------

    def record(self, key: bytes, kind: str, path: str) -> None:
        """Remember that the object of ``key`` lowered to ``path``."""
        assert kind in KINDS, kind
        self.stats.misses += 1
        self._new[key] = (kind, path)

    @property
    def dirty(self) -> bool:
        """Tell whether entries were recorded since the last save."""
        return bool(self._new) or self._rewrite

    def save(self) -> None:
        """Merge the recorded entries into the file, atomically."""
        if not self.dirty:
            return
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with self._locked():
            on_disk = self._read_file_quietly()
            for key, entry in self._invalid.items():
                if on_disk.get(key) == entry:
                    del on_disk[key]
            on_disk.update(self._new)
            self._write(on_disk)
        self._load().update(self._new)
        self._new.clear()
        self._rewrite = False

    def _read_file_quietly(self) -> dict[bytes, tuple[str, str]]:
        """Read the file for merging; a damaged one contributes nothing."""
        try:
            with open(self.path, "rb") as file:
                return _decode(file.read(), self.store.store_dir) or {}
        except FileNotFoundError:
            return {}

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the cache's lock file exclusively."""
        fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _write(self, entries: dict[bytes, tuple[str, str]]) -> None:
        """Write ``entries`` to a temporary file, then rename it into place."""
        data = msgpack.packb(
            {
                "schema": SCHEMA,
                "version": VERSION,
                "store_dir": self.store.store_dir,
                "entries": {key: list(entry) for key, entry in sorted(entries.items())},
            },
            use_bin_type=True,
        )
        import tempfile  # only writers need it: a cache hit starts faster

        directory = os.path.dirname(self.path)
        fd, temp = tempfile.mkstemp(prefix=".lowering-", dir=directory)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
            os.chmod(temp, 0o644)
            os.replace(temp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise


def _decode(data: bytes, store_dir: str) -> dict[bytes, tuple[str, str]] | None:
    """Return the entries of a cache file's bytes, or ``None`` if the file
    is damaged or not for this store directory."""
    try:
        top = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception:  # msgpack raises many kinds on garbage
        return None
    if not isinstance(top, dict) or top.get("schema") != SCHEMA:
        return None
    if top.get("version") != VERSION or top.get("store_dir") != store_dir:
        return None
    entries = top.get("entries")
    if not isinstance(entries, dict):
        return None
    decoded: dict[bytes, tuple[str, str]] = {}
    for key, entry in entries.items():
        if not _is_entry(key, entry, store_dir):
            return None
        decoded[key] = (entry[0], entry[1])
    return decoded


def _is_entry(key: object, entry: object, store_dir: str) -> bool:
    """Tell whether one key and entry have the expected shape."""
    return (
        isinstance(key, bytes)
        and len(key) == 32
        and isinstance(entry, list)
        and len(entry) == 2
        and entry[0] in KINDS
        and isinstance(entry[1], str)
        and entry[1].startswith(store_dir.rstrip("/") + "/")
    )


# ---------------------------------------------------------------------------
# The evaluation cache

EVALUATION_SCHEMA = "pyguix-evaluation-cache"
EVALUATION_DIR = ("cache", "evaluations")
"""The directory of evaluation entries, relative to the state directory."""

Result = list[tuple[str, str]]
"""What an evaluation gave: ``(kind, path)`` pairs, kind ``drv`` or ``path``."""

_NOTED: set[str] = set()
"""Files noted by :func:`note_dependency` in this process."""


def note_dependency(path: str | os.PathLike[str]) -> None:
    """Record that what this process evaluates depends on the file or
    directory ``path`` (a local file, a module copied into the store)."""
    _NOTED.add(os.path.abspath(os.fspath(path)))


def file_signature(path: str, deep: bool = False) -> bytes:
    """Return the signature of ``path`` (see the module docstring); a
    ``deep`` one covers a directory's whole tree and starts with ``deep``."""
    try:
        info = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return b"deep absent" if deep else b"absent"
    fields = [
        info.st_size,
        info.st_mtime_ns,
        info.st_ctime_ns,
        info.st_ino,
        info.st_mode,
    ]
    text = (b"deep " if deep else b"") + " ".join(map(str, fields)).encode()
    if stat.S_ISLNK(info.st_mode):
        return text + b" -> " + os.fsencode(os.readlink(path))
    if stat.S_ISDIR(info.st_mode):
        return text + b" " + _directory_digest(path, deep)
    return text


def _directory_digest(path: str, deep: bool) -> bytes:
    """Return the digest of a directory's entry names, and of their deep
    signatures if ``deep``."""
    try:
        names = sorted(os.listdir(path))
    except OSError:
        return b"unreadable"
    digest = hashlib.sha256()
    for name in names:
        digest.update(os.fsencode(name) + b"\0")
        if deep:
            digest.update(file_signature(os.path.join(path, name), True) + b"\0")
    return digest.hexdigest().encode()


def _matches(path: str, signature: bytes) -> bool:
    """Tell whether ``path`` still has ``signature``."""
    return file_signature(path, signature.startswith(b"deep ")) == signature


_READ_EVENTS = ("open", "os.listdir", "os.scandir")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT
_recording: set[str] | None = None
_hooked = False


def _audit(event: str, arguments: tuple[Any, ...]) -> None:
    """Note the files the process reads or lists while recording."""
    if _recording is None or event not in _READ_EVENTS or not arguments:
        return
    path = arguments[0]
    if event != "open" and _listed_by_importer():
        return
    if event == "open":
        mode, flags = arguments[1], arguments[2]
        if isinstance(mode, str) and mode.strip("rbt"):
            return
        if isinstance(flags, int) and flags & _WRITE_FLAGS:
            return
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if isinstance(path, str):
        _recording.add(os.path.abspath(path))


def _listed_by_importer() -> bool:
    """Tell whether the directory listing being audited is a search of
    ``sys.path`` by the import system or ``importlib.metadata`` (whose
    result the files opened already record)."""
    name = sys._getframe(2).f_code.co_filename
    return name.startswith("<frozen importlib") or "/importlib/metadata/" in name


@contextlib.contextmanager
def _recording_reads() -> Iterator[set[str]]:
    """Collect the files read or listed inside the ``with`` block."""
    global _recording, _hooked
    if not _hooked:
        sys.addaudithook(_audit)
        _hooked = True
    outer, _recording = _recording, set()
    try:
        yield _recording
    finally:
        reads, _recording = _recording, outer
        if outer is not None:
            outer.update(reads)


def evaluation_dependencies(
    reads: Iterable[str] = (), excluded: Iterable[str] = ()
) -> list[tuple[str, bool]]:
    """Return the files what this process evaluated depends on: ``reads``,
    the source or binary of every module loaded, the noted files (whose
    signatures are deep) and the interpreter, but those under the
    directories ``excluded`` and bytecode caches; each with whether its
    signature is deep."""
    files = {os.path.realpath(sys.executable), *reads}
    for module in list(sys.modules.values()):
        origin = getattr(module, "__file__", None)
        if isinstance(origin, str) and os.path.isabs(origin):
            files.add(origin)
    prefixes = tuple(directory.rstrip("/") + "/" for directory in excluded)
    kept = {
        (f, f in _NOTED)
        for f in files | _NOTED
        if not f.startswith(prefixes) and "/__pycache__/" not in f
    }
    return sorted(kept)


def evaluation_key(
    command: str, file: str, options: Sequence[str], store_dir: str
) -> bytes | None:
    """Return the evaluation cache key of ``command`` run on ``file`` with
    ``options``, or ``None`` when ``file`` cannot be read (the evaluation
    then reports why)."""
    content = _file_digest(file)
    if content is None:
        return None
    return _evaluation_key(
        command, [os.path.realpath(file), content], options, store_dir
    )


def expression_key(
    command: str, expression: str, options: Sequence[str], store_dir: str
) -> bytes:
    """Return the evaluation cache key of ``command`` run on the Python
    expression ``expression`` with ``options``, in the current directory."""
    subject = ["expression", expression, os.getcwd()]
    return _evaluation_key(command, subject, options, store_dir)


def _evaluation_key(
    command: str, subject: list[Any], options: Sequence[str], store_dir: str
) -> bytes:
    """Hash what is evaluated, ``subject``, with what else may change the
    result: ``command``, ``options``, the store, the host, the interpreter,
    its module path and the ``PYGUIX_*`` variables."""
    host = os.uname()
    variables = sorted(
        (name, value)
        for name, value in os.environ.items()
        if name.startswith("PYGUIX_")
    )
    material = [
        EVALUATION_SCHEMA,
        VERSION,
        command,
        list(options),
        *subject,
        store_dir,
        [host.sysname, host.machine],
        os.path.realpath(sys.executable),
        sys.version,
        list(sys.path),
        [list(item) for item in variables],
    ]
    return hashlib.sha256(msgpack.packb(material, use_bin_type=True)).digest()


def _file_digest(file: str) -> bytes | None:
    """Return the sha256 of ``file``'s bytes, or ``None`` if unreadable."""
    try:
        with open(file, "rb") as handle:
            return hashlib.sha256(handle.read()).digest()
    except OSError:
        return None


class EvaluationCache:
    """The evaluation cache of one store.

    :param store: a store with ``state_file`` and ``query_valid``.
    """

    def __init__(self, store: Any) -> None:
        self.store = store
        self.directory = store.state_file(*EVALUATION_DIR)

    def entry_path(self, key: bytes) -> str:
        """Return the file holding the entry of ``key``."""
        return os.path.join(self.directory, key.hex())

    def lookup(self, key: bytes) -> Result | None:
        """Return what the evaluation of ``key`` gave, if its dependencies
        are unchanged and its paths still valid."""
        try:
            with open(self.entry_path(key), "rb") as file:
                data = file.read()
        except OSError:
            return None
        entry = _decode_evaluation(data, key)
        if entry is None:
            return None
        result, depends = entry
        if not all(_matches(path, signature) for path, signature in depends):
            return None
        paths = {path for _, path in result}
        if len(self.store.query_valid(paths)) != len(paths):
            return None
        return result

    def save(
        self, key: bytes, result: Result, depends: Iterable[tuple[str, bool]]
    ) -> None:
        """Record that the evaluation of ``key`` gave ``result``, depending
        on the files ``depends`` (each with whether its signature is deep),
        atomically."""
        data = msgpack.packb(
            {
                "schema": EVALUATION_SCHEMA,
                "version": VERSION,
                "key": key,
                "result": [list(item) for item in result],
                "depends": [[p, file_signature(p, deep)] for p, deep in depends],
            },
            use_bin_type=True,
        )
        import tempfile

        os.makedirs(self.directory, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=".evaluation-", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
            os.chmod(temp, 0o644)
            os.replace(temp, self.entry_path(key))
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise


def _decode_evaluation(
    data: bytes, key: bytes
) -> tuple[Result, list[tuple[str, bytes]]] | None:
    """Return the result and dependencies of an entry's bytes, or ``None``
    if the entry is damaged or not the one of ``key``."""
    try:
        top = msgpack.unpackb(data, raw=False)
    except Exception:  # msgpack raises many kinds on garbage
        return None
    if not isinstance(top, dict) or top.get("schema") != EVALUATION_SCHEMA:
        return None
    if top.get("version") != VERSION or top.get("key") != key:
        return None
    result, depends = top.get("result"), top.get("depends")
    if not isinstance(result, list) or not isinstance(depends, list):
        return None
    if not all(_is_pair(item, str) and item[0] in KINDS for item in result):
        return None
    if not all(_is_pair(item, bytes) for item in depends):
        return None
    return [(k, p) for k, p in result], [(p, s) for p, s in depends]


def _is_pair(item: object, second: type) -> bool:
    """Tell whether ``item`` is ``[str, second]``."""
    return (
        isinstance(item, list)
        and len(item) == 2
        and isinstance(item[0], str)
        and isinstance(item[1], second)
    )


def cached_evaluation(
    store: Any,
    command: str,
    file: str,
    options: Sequence[str],
    evaluate: Callable[[], Result],
) -> tuple[Result, bool]:
    """Return what ``evaluate`` gives for ``command`` on ``file`` with
    ``options``, from the evaluation cache of ``store`` if it knows it, and
    whether it did.  A fresh result is recorded only if ``file`` did not
    change while it was evaluated."""
    key = evaluation_key(command, file, options, store.store_dir)
    content = _file_digest(file)
    return _cached(store, key, evaluate, lambda: content == _file_digest(file))


def cached_expression_evaluation(
    store: Any,
    command: str,
    expression: str,
    options: Sequence[str],
    evaluate: Callable[[], Result],
) -> tuple[Result, bool]:
    """Return what ``evaluate`` gives for ``command`` on the Python
    expression ``expression`` with ``options``, as :func:`cached_evaluation`
    does for a file: the modules it loads are among the files the result
    depends on."""
    key = expression_key(command, expression, options, store.store_dir)
    return _cached(store, key, evaluate, lambda: True)


def _cached(
    store: Any,
    key: bytes | None,
    evaluate: Callable[[], Result],
    unchanged: Callable[[], bool],
) -> tuple[Result, bool]:
    """Look ``key`` up in the evaluation cache of ``store``; on a miss,
    run ``evaluate`` and record its result and what it read, if
    ``unchanged()`` still holds once it is done."""
    cache = EvaluationCache(store)
    if key is not None:
        found = cache.lookup(key)
        if found is not None:
            return found, True

    with _recording_reads() as reads:
        result = evaluate()
    if key is not None and unchanged():
        excluded = (store.real_store_dir, store.real_state_dir)
        with contextlib.suppress(OSError):
            cache.save(key, result, evaluation_dependencies(reads, excluded))
    return result, False
