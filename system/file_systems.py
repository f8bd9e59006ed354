"""File systems, file-system mappings, and their plain-data specs.

Mirrors Guix's ``gnu/system/file-systems.scm``.  A :class:`FileSystem` says
what to mount where; a :class:`FileSystemMapping` says which host file to
bind into a container, and where, read-only unless ``writable``.  The
``--share``/``--expose`` syntax is ``SRC`` or ``SRC=DST``, split at the
first ``=``.

:func:`check_mappings` refuses mappings a container cannot honour: a
relative source or target, a target of ``/``, the store or
:data:`RESERVED_MAPPING_TARGETS` (or below), two onto one target.

A *spec* is a file system as plain data, so that a script can embed it
(Guix's ``file-system->spec``)::

    [device, mount_point, type, [flag, ...], options, mount_may_fail,
     check, needed_for_boot, create_mount_point]

``options`` is a string or ``None``; flags are the names of
:data:`FILE_SYSTEM_FLAGS`.  Devices are strings (a path, or a name such as
``tmpfs``); labels and UUIDs are not modelled.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from store.errors import PyguixError
from store.paths import is_within

__all__ = [
    "CONTAINER_FILE_SYSTEMS",
    "FILE_SYSTEM_FLAGS",
    "NETWORK_CONFIGURATION_FILES",
    "FileSystem",
    "FileSystemError",
    "FileSystemMapping",
    "RESERVED_MAPPING_TARGETS",
    "check_mappings",
    "file_system_mapping_to_bind_mount",
    "file_system_needed_for_boot",
    "file_system_to_spec",
    "is_bind_mount",
    "network_file_mappings",
    "spec_to_file_system",
    "specification_to_file_system_mapping",
    "store_mapping",
]

FILE_SYSTEM_FLAGS = (
    "read-only",
    "bind-mount",
    "no-suid",
    "no-dev",
    "no-exec",
    "no-atime",
    "no-diratime",
    "strict-atime",
    "lazy-time",
    "remount",
    "shared",
)
"""The flags a file system may carry (Guix's names)."""


class FileSystemError(PyguixError):
    """Report a malformed file system, mapping or spec.

    :param thing: the file system, mapping spec or flag at fault.
    """

    def __init__(self, thing: object, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.thing = thing


@dataclass(frozen=True)
class FileSystem:
    """A file system to mount (Guix's ``<file-system>``)."""

    device: str
    """What to mount: a device file, a source directory for bind mounts, or
    a name such as ``tmpfs``."""

    mount_point: str
    """Where to mount it, an absolute path."""

    type: str
    """Its type, such as ``ext4``, ``tmpfs`` or ``none`` for bind mounts."""

    flags: tuple[str, ...] = ()
    """Names among :data:`FILE_SYSTEM_FLAGS`."""

    options: str | None = None
    """Options passed to the file system, such as ``mode=1777``."""

    mount: bool = True
    """Whether to mount it at all."""

    mount_may_fail: bool = False
    """Whether a failure to mount it is tolerated."""

    needed_for_boot: bool = False
    """Whether it must be mounted before the system boots."""

    check: bool = True
    """Whether to check it before mounting."""

    create_mount_point: bool = False
    """Whether to create the mount point if it does not exist."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "flags", tuple(self.flags))
        for flag in self.flags:
            if flag not in FILE_SYSTEM_FLAGS:
                raise FileSystemError(
                    flag,
                    f"invalid file system flag '{flag}' for '{self.mount_point}'",
                    f"use one of {', '.join(FILE_SYSTEM_FLAGS)}",
                )
        if not self.mount_point.startswith("/"):
            raise FileSystemError(
                self,
                f"file system mount point '{self.mount_point}' is not absolute",
            )


@dataclass(frozen=True)
class FileSystemMapping:
    """A host file to bind into a container (Guix's
    ``<file-system-mapping>``)."""

    source: str
    """The host file or directory."""

    target: str
    """Where it appears in the container."""

    writable: bool = False
    """Whether the container may write to it."""


def is_bind_mount(fs: FileSystem) -> bool:
    """Tell whether ``fs`` is a bind mount."""
    return "bind-mount" in fs.flags


def file_system_needed_for_boot(fs: FileSystem, store_dir: str) -> bool:
    """Tell whether ``fs`` must be mounted before boot: it says so, or it is
    a non-bind file system under the store directory (Guix's
    ``file-system-needed-for-boot?``)."""
    prefix = store_dir.rstrip("/")
    under_store = fs.mount_point == prefix or fs.mount_point.startswith(prefix + "/")
    return fs.needed_for_boot or (under_store and not is_bind_mount(fs))


def specification_to_file_system_mapping(
    spec: str, writable: bool
) -> FileSystemMapping:
    """Return the mapping of ``spec``: ``SRC`` maps a file to the same path,
    ``SRC=DST`` to ``DST``; the first ``=`` splits (Guix's
    ``specification->file-system-mapping``).

    :raises FileSystemError: when the source or target is empty.
    """
    source, equal, target = spec.partition("=")
    if not equal:
        target = source
    if not source or not target:
        raise FileSystemError(
            spec,
            f"invalid file system mapping '{spec}'",
            "write SOURCE or SOURCE=TARGET",
        )
    return FileSystemMapping(source, target, writable)


RESERVED_MAPPING_TARGETS = ("/proc", "/sys", "/dev")
"""Directories the container runtime mounts itself: a mapping may not
target them or anything below them (nor ``/`` or the store)."""


def check_mappings(mappings: Iterable[FileSystemMapping], store_dir: str) -> None:
    """Refuse mappings a container cannot honour as asked: a source or
    target that is not absolute (the command line resolves a relative
    source first), a target that is ``/``, the store directory or below
    it, or one of :data:`RESERVED_MAPPING_TARGETS` or below, and two
    mappings onto one target.

    :raises FileSystemError: naming the first mapping at fault.
    """
    taken: dict[str, FileSystemMapping] = {}
    for mapping in mappings:
        _check_mapping_paths(mapping)
        target = _normal_path(mapping.target)
        reason = _reserved_target_reason(target, store_dir)
        if reason is not None:
            raise FileSystemError(
                mapping,
                f"cannot map '{mapping.source}' onto '{mapping.target}': {reason}",
                f"map it elsewhere, as '{mapping.source}=/exchange'",
            )
        if target in taken:
            raise FileSystemError(
                mapping,
                f"'{mapping.source}' and '{taken[target].source}' are both mapped "
                f"onto '{target}'",
                "give each mapping its own target",
            )
        taken[target] = mapping


def _check_mapping_paths(mapping: FileSystemMapping) -> None:
    """Refuse a mapping whose source or target is not absolute."""
    for what, path in (("source", mapping.source), ("target", mapping.target)):
        if not path.startswith("/"):
            raise FileSystemError(
                mapping,
                f"mapping {what} '{path}' is not absolute",
                "give an absolute path; the command line resolves a relative "
                "source against the current directory",
            )


def _normal_path(path: str) -> str:
    """Return the absolute ``path`` without ``.``, ``..``, or repeated or
    trailing slashes."""
    return "/" + posixpath.normpath(path).lstrip("/")


def _reserved_target_reason(target: str, store_dir: str) -> str | None:
    """Return why the normal path ``target`` cannot be mapped onto, or
    ``None``.  The ``run-container`` script repeats this rule for the
    mappings given when it runs (it carries only the container runtime's
    modules)."""
    if target == "/":
        return "the container's root is a fresh tmpfs"
    if is_within(target, _normal_path(store_dir)):
        return f"the store '{store_dir}' is mapped read-only by the container itself"
    for reserved in RESERVED_MAPPING_TARGETS:
        if is_within(target, reserved):
            return f"the container runtime mounts '{reserved}' itself"
    return None


def file_system_mapping_to_bind_mount(mapping: FileSystemMapping) -> FileSystem:
    """Return the bind mount realising ``mapping``, read-only unless
    writable (Guix's ``file-system-mapping->bind-mount``)."""
    flags = ("bind-mount",) if mapping.writable else ("bind-mount", "read-only")
    return FileSystem(
        device=mapping.source,
        mount_point=mapping.target,
        type="none",
        flags=flags,
        check=False,
        create_mount_point=True,
    )


def store_mapping(store_dir: str) -> FileSystemMapping:
    """Return the read-only mapping of the store onto itself (Guix's
    ``%store-mapping``)."""
    return FileSystemMapping(store_dir, store_dir, writable=False)


NETWORK_CONFIGURATION_FILES = (
    "/etc/resolv.conf",
    "/etc/nsswitch.conf",
    "/etc/services",
    "/etc/hosts",
)
"""Host files a container sharing the network sees (Guix's
``%network-configuration-files``)."""


def network_file_mappings() -> tuple[FileSystemMapping, ...]:
    """Return the mappings of :data:`NETWORK_CONFIGURATION_FILES` onto
    themselves; ``resolv.conf`` is writable, since it may be a symlink into a
    tmpfs that refuses a read-only bind (Guix's ``%network-file-mappings``)."""
    return tuple(
        FileSystemMapping(path, path, writable=path == "/etc/resolv.conf")
        for path in NETWORK_CONFIGURATION_FILES
    )


CONTAINER_FILE_SYSTEMS = (
    FileSystem(
        device="none",
        mount_point="/dev/pts",
        type="devpts",
        flags=("no-exec", "no-suid"),
        options="newinstance,ptmxmode=0666,mode=620",
        needed_for_boot=True,
        check=False,
        create_mount_point=True,
    ),
    FileSystem(
        device="none",
        mount_point="/dev/shm",
        type="tmpfs",
        flags=("no-exec", "no-suid", "no-dev"),
        options="mode=1777,size=65536k",
        needed_for_boot=True,
        check=False,
        create_mount_point=True,
    ),
    FileSystem(
        device="mqueue",
        mount_point="/dev/mqueue",
        type="mqueue",
        flags=("no-exec", "no-suid", "no-dev"),
        needed_for_boot=True,
        check=False,
        create_mount_point=True,
    ),
)
"""What a container mounts besides the OS's file systems (Guix's
``%container-file-systems``)."""


def file_system_to_spec(fs: FileSystem) -> list[Any]:
    """Return ``fs`` as plain data (see the module grammar)."""
    return [
        fs.device,
        fs.mount_point,
        fs.type,
        list(fs.flags),
        fs.options,
        fs.mount_may_fail,
        fs.check,
        fs.needed_for_boot,
        fs.create_mount_point,
    ]


def spec_to_file_system(spec: Sequence[Any]) -> FileSystem:
    """Return the file system of ``spec`` (Guix's ``spec->file-system``).

    :raises FileSystemError: when ``spec`` does not follow the grammar.
    """
    if not isinstance(spec, list | tuple) or len(spec) != 9:
        raise FileSystemError(
            spec,
            f"file system spec {spec!r} does not have 9 fields",
            "make specs with file_system_to_spec",
        )
    device, mount_point, kind, flags, options, may_fail, check, boot, create = spec
    return FileSystem(
        device=device,
        mount_point=mount_point,
        type=kind,
        flags=tuple(_strings(flags, spec)),
        options=options,
        mount_may_fail=bool(may_fail),
        check=bool(check),
        needed_for_boot=bool(boot),
        create_mount_point=bool(create),
    )


def _strings(items: Iterable[Any], spec: object) -> list[str]:
    """Return ``items`` if they are all strings."""
    result = list(items)
    if not all(isinstance(item, str) for item in result):
        raise FileSystemError(spec, f"file system spec {spec!r} has a non-string flag")
    return result
