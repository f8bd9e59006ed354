"""Look at the host from a test: its processes and its mounts."""

from __future__ import annotations

import os

__all__ = ["host_processes_with", "mount_points"]


def host_processes_with(token: str) -> list[int]:
    """Return the host PIDs whose command line contains ``token``."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as port:
                    if token.encode() in port.read():
                        found.append(int(name))
            except OSError:
                pass
    return found


def mount_points() -> list[str]:
    """Return this process's mount points, sorted."""
    with open("/proc/self/mountinfo") as port:
        return sorted(line.split()[4] for line in port)
