"""Mount the file systems not needed at boot, from init services.

As Guix's ``file-system-service-type`` (``gnu/services/base.scm``) makes a
Shepherd service ``file-system-MOUNT-POINT`` per file system, this type
gives one one-shot init service per file system, named
``file-system-MOUNT-POINT`` (slashes as dashes) and running the ``mount-file-system`` program
with the file system's spec (see :mod:`system.file_systems`) as JSON in its
argument.  The program calls mount(2) directly: it creates the mount point
if asked, turns the flags into ``MS_*`` bits, and exits 0 on failure when
the file system may fail to mount.  File systems needed at boot (``/``,
the store, a container's binds) are mounted before the init starts, by the
initrd or the container runtime, and get no service.

TODO: ``check`` is not honoured: there is no fsck to run yet.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from derivations.file_like import program_file
from derivations.gexp import gexp
from system.file_systems import FileSystem, file_system_to_spec, is_bind_mount
from system.init_services import InitService, init_service_type
from system.services import concatenate, service_extension, service_type

__all__ = [
    "file_system_service_name",
    "file_system_service_type",
    "file_systems_to_mount",
    "mount_program",
]


_MOUNT = """
import ctypes
import json

FLAGS = {
    "read-only": 1, "no-suid": 2, "no-dev": 4, "no-exec": 8, "remount": 32,
    "no-atime": 1024, "no-diratime": 2048, "bind-mount": 4096 | 16384,
    "shared": 1 << 20, "strict-atime": 1 << 24, "lazy-time": 1 << 25,
}
device, target, kind, flags, options, may_fail, _check, _boot, create = json.loads(sys.argv[1])
bits = 0
for flag in flags:
    bits |= FLAGS[flag]
if create:
    os.makedirs(target, exist_ok=True)
libc = ctypes.CDLL(None, use_errno=True)
encoded = None if options is None else options.encode()
status = libc.mount(device.encode(), target.encode(), kind.encode(), bits, encoded)
if status != 0:
    error = ctypes.get_errno()
    message = f"cannot mount '{device}' on '{target}' ({kind}): {os.strerror(error)}"
    print(("warning: " if may_fail else "error: ") + message, file=sys.stderr, flush=True)
    raise SystemExit(0 if may_fail else 1)
print(f"mounted '{device}' on '{target}' ({kind})", flush=True)
"""


def mount_program() -> Any:
    """Return the ``mount-file-system SPEC-JSON`` program."""
    return program_file("mount-file-system", gexp(_MOUNT))


def file_system_service_name(fs: FileSystem) -> str:
    """Return the init service name of ``fs``: ``file-system-`` and its
    mount point with ``-`` for ``/`` (a service name is also a file name),
    such as ``file-system-var-cache``."""
    return "file-system-" + _dashed(fs.mount_point)


def _dashed(mount_point: str) -> str:
    """Return ``mount_point`` without the leading ``/``, ``-`` for ``/``."""
    return mount_point.strip("/").replace("/", "-")


def file_systems_to_mount(file_systems: Iterable[FileSystem]) -> tuple[FileSystem, ...]:
    """Return the file systems of ``file_systems`` the init mounts: those to
    mount at all, neither needed at boot nor mounted on ``/``."""
    return tuple(
        fs
        for fs in file_systems
        if fs.mount and not fs.needed_for_boot and fs.mount_point != "/"
    )


def _mount_services(file_systems: Sequence[FileSystem]) -> list[InitService]:
    """Return one one-shot service per file system; each requires the
    services of the file systems its mount point is under."""
    points = {fs.mount_point for fs in file_systems}
    services = []
    for fs in file_systems:
        parents = sorted(
            point
            for point in points
            if point != fs.mount_point
            and fs.mount_point.startswith(point.rstrip("/") + "/")
        )
        spec = json.dumps(file_system_to_spec(fs), separators=(",", ":"))
        services.append(
            InitService(
                provision=(file_system_service_name(fs),),
                requirement=tuple("file-system-" + _dashed(point) for point in parents),
                command=(mount_program(), spec),
                one_shot=True,
                documentation=f"Mount '{fs.mount_point}'"
                + (" (a bind mount)" if is_bind_mount(fs) else ""),
            )
        )
    return services


file_system_service_type = service_type(
    "file-systems",
    [service_extension(init_service_type, _mount_services)],
    compose=concatenate,
    extend=lambda value, more: (*value, *more),
    default_value=(),
    description="Mount the file systems the system does not need at boot, "
    "each from a one-shot init service.",
)
