"""``pyguix container``: enter, list, inspect and stop running containers.

``exec PID COMMAND...``
    runs COMMAND in the namespaces of process PID (Guix's ``guix container
    exec``, through :func:`builders.container.container_excursion`): the
    user namespace is joined first and the mount namespace last, and the
    command runs in a second fork, inside the PID namespace.  Its
    environment is the one PID started with, plus ``TERM`` from here, so a
    bare command name is found on the container's ``PATH``.  A non-zero
    status is reported as "process exited with status N" and makes the
    command exit with 1.  A process whose user, mount and PID namespaces
    are all ours is not in a container and is refused, as ``stop``
    refuses what is not a container's init; any other may be entered.

The others go beyond Guix.  A running pyguix system container is found from
the host as a process that is PID 1 of a PID namespace other than ours and
whose root holds the init's status file, ``/run/pyguix/init.status`` (see
:mod:`system.init`), read through ``/proc/PID/root``.  Nothing is
registered anywhere, so nothing can go stale.

Files of a container are read with
:func:`builders.container.read_file_in_root` and its kin, which resolve
every component inside the container's root: a symlink the container made
to a host path never leads a host administrator's command out of it.

``list``
    prints PID (on the host), host name, system directory and uptime of
    each running container.
``logs PID [SERVICE]``
    prints ``/var/log/SERVICE.log`` of the container, or its ``init.log``;
    SERVICE is a plain name (no ``/``, not ``.`` or ``..``).
``stop PID [--timeout S]``
    sends SIGTERM to the container's init, which stops its services; sends
    SIGKILL if it still runs after S seconds (default 10).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass

import click

from builders import linux
from builders.container import (
    ContainerError,
    container_excursion,
    in_our_namespace,
    list_directory_in_root,
    read_file_in_root,
    read_link_in_root,
)
from store.errors import PyguixError

__all__ = [
    "ContainerInfo",
    "STATUS_FILE",
    "command",
    "container_host_name",
    "find_containers",
    "is_container_init",
]

STATUS_FILE = "run/pyguix/init.status"
"""The init's status file, relative to a container's root."""


@dataclass(frozen=True)
class ContainerInfo:
    """A running system container, as seen from the host."""

    pid: int
    """The host PID of its init (PID 1 inside)."""
    host_name: str | None
    system: str | None
    """The system directory ``/run/current-system`` points to."""
    uptime: float
    """Seconds since its init process started."""
    state: str | None
    """The init's state: ``starting``, ``running``, ``stopping``..."""


def _namespace_pids(pid: int) -> list[int]:
    """Return the ``NSpid`` line of ``pid``: its PID in each PID namespace."""
    with open(f"/proc/{pid}/status", encoding="ascii") as stream:
        for line in stream:
            if line.startswith("NSpid:"):
                return [int(number) for number in line.split()[1:]]
    return []


def is_container_init(pid: int) -> bool:
    """Tell whether ``pid`` is PID 1 of a nested PID namespace and has a
    pyguix init status file in its root."""
    try:
        numbers = _namespace_pids(pid)
    except (OSError, ValueError):
        return False
    if len(numbers) < 2 or numbers[-1] != 1:
        return False
    try:
        read_file_in_root(_root(pid), STATUS_FILE)
    except OSError:
        return False
    return True


def _root(pid: int) -> str:
    """Return the host path of the root of ``pid``; files under it are
    read with :func:`builders.container.read_file_in_root` and its kin,
    which keep symlinks inside that root."""
    return f"/proc/{pid}/root"


def _read_status(pid: int) -> dict[str, object]:
    try:
        document = json.loads(read_file_in_root(_root(pid), STATUS_FILE))
    except (OSError, ValueError):
        return {}
    return document if isinstance(document, dict) else {}


def _uptime(pid: int) -> float:
    """Return the seconds since ``pid`` started (``/proc/PID/stat`` field 22)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stream:
        fields = stream.read().rsplit(")", 1)[1].split()
    started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
    with open("/proc/uptime", encoding="ascii") as stream:
        now = float(stream.read().split()[0])
    return max(0.0, now - started)


def container_host_name(pid: int) -> str | None:
    """Return the host name in the UTS namespace of ``pid``, or ``None``.

    Forks a child that joins the container's user namespace (when it is
    another) and UTS namespace, and reports the name through a pipe.
    """
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read_end)
        code = 1
        try:
            for name in ("user", "uts"):
                path = f"/proc/{pid}/ns/{name}"
                if os.readlink(path) != os.readlink(f"/proc/self/ns/{name}"):
                    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                    linux.setns(fd, linux.NAMESPACE_FLAGS[name])
            os.write(write_end, socket.gethostname().encode())
            code = 0
        except BaseException:  # noqa: BLE001 - no name, then
            pass
        os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as stream:
        answer = stream.read().decode(errors="replace")
    _, status = os.waitpid(child, 0)
    return answer if status == 0 and answer else None


def find_containers() -> list[ContainerInfo]:
    """Return the running pyguix system containers, by host PID."""
    found = []
    for entry in sorted(os.listdir("/proc"), key=lambda e: (len(e), e)):
        if not entry.isdigit() or not is_container_init(int(entry)):
            continue
        pid = int(entry)
        try:
            system: str | None = read_link_in_root(_root(pid), "run/current-system")
        except OSError:
            system = None
        try:
            uptime = _uptime(pid)
        except (OSError, ValueError, IndexError):
            continue
        state = _read_status(pid).get("state")
        found.append(
            ContainerInfo(
                pid,
                container_host_name(pid),
                system,
                uptime,
                state if isinstance(state, str) else None,
            )
        )
    return found


def _format_uptime(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d{hours:02d}h{minutes:02d}m"
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _check_container(pid: int) -> None:
    if not os.path.isdir(f"/proc/{pid}"):
        raise ContainerError(
            f"no process '{pid}'",
            "see the running containers with 'pyguix container list'",
        )
    if not is_container_init(pid):
        raise ContainerError(
            f"process '{pid}' is not the init of a pyguix system container",
            "give the PID that 'pyguix container list' shows",
        )


def _check_in_container(pid: int) -> None:
    """Refuse ``pid`` if it is not in a container: its user, mount and PID
    namespaces are all ours.  Processes of any other namespaces may be
    entered, as Guix's ``container exec`` allows.

    :raises ContainerError: no such process, its namespaces cannot be read,
        or they are ours.
    """
    if not os.path.isdir(f"/proc/{pid}"):
        _check_container(pid)
    try:
        own = [in_our_namespace(pid, name) for name in ("user", "mnt", "pid")]
    except OSError as error:
        raise ContainerError(
            f"cannot read the namespaces of process '{pid}': {error.strerror}",
            "run as root, or as the user who started the container; "
            "'pyguix container list' shows the containers",
        ) from None
    if all(own):
        raise ContainerError(
            f"process '{pid}' is not in a container: its user, mount and PID "
            "namespaces are this command's own",
            "give the PID that 'pyguix container list' shows",
        )


@click.group("container")
def command() -> None:
    """Enter, list, inspect and stop running containers."""


@command.command(
    "exec",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.argument("pid", type=int)
@click.argument("argv", nargs=-1, type=click.UNPROCESSED, required=True)
def exec_command(pid: int, argv: tuple[str, ...]) -> None:
    """Run COMMAND in the container of process PID, with the container's
    environment; a bare name is looked up in the container's PATH."""
    _check_in_container(pid)
    status = container_excursion(pid, argv, _container_environment(pid))
    if status != 0:
        raise _Exit(f"process exited with status {status}")


def _container_environment(pid: int) -> dict[str, str]:
    """Return the environment the container's init started with (its
    ``PATH``, ``HOME`` and ``TMPDIR``) and the caller's ``TERM``.

    Guix's ``container exec`` passes ``TERM`` alone and finds a bare
    command name on the host's ``PATH``; the init's environment names the
    container's own programs instead.
    """
    env: dict[str, str] = {}
    with contextlib.suppress(OSError), open(f"/proc/{pid}/environ", "rb") as file:
        for entry in file.read().split(b"\0"):
            name, equals, value = entry.partition(b"=")
            if equals:
                env[os.fsdecode(name)] = os.fsdecode(value)
    if "TERM" in os.environ:
        env["TERM"] = os.environ["TERM"]
    return env


class _Exit(PyguixError):
    """A command run by ``exec`` failed (exit status 1)."""


@command.command("list")
def list_command() -> None:
    """List the running system containers: PID, host name, system, uptime."""
    rows = [("PID", "HOST NAME", "UPTIME", "STATE", "SYSTEM")]
    for info in find_containers():
        rows.append(
            (
                str(info.pid),
                info.host_name or "-",
                _format_uptime(info.uptime),
                info.state or "-",
                info.system or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        click.echo("  ".join([*cells, row[4]]).rstrip())


@command.command("logs")
@click.argument("pid", type=int)
@click.argument("service", required=False)
def logs_command(pid: int, service: str | None) -> None:
    """Print the log of SERVICE in the container of PID (default: the init's)."""
    if not os.path.isdir(f"/proc/{pid}"):
        _check_container(pid)
    name = "init.log" if service is None else f"{_service_name(service)}.log"

    # Resolved inside the container's root: a symlink there may not lead out.
    try:
        data = read_file_in_root(_root(pid), f"{LOG_DIRECTORY}/{name}")
    except FileNotFoundError:
        raise ContainerError(
            f"container '{pid}' has no log '{LOG_DIRECTORY}/{name}'",
            "logs there: " + (", ".join(_logs_in(pid)) or "none"),
        ) from None
    except OSError as error:
        raise ContainerError(
            f"cannot read '{LOG_DIRECTORY}/{name}' of container '{pid}': "
            f"{error.strerror}",
            "a log is a regular file of the container, symlinks resolved inside it",
        ) from None
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


LOG_DIRECTORY = "/var/log"
"""Where a container's init and services write their logs."""


def _service_name(service: str) -> str:
    """Return ``service`` if it is a plain name, which names a log file of
    :data:`LOG_DIRECTORY`.

    :raises ContainerError: it holds a ``/``, or is empty, ``.`` or ``..``.
    """
    if service in ("", ".", "..") or "/" in service or "\0" in service:
        raise ContainerError(
            f"invalid service name '{service}': a name has no '/' and is not "
            "'.' or '..'",
            "give a service name, as in 'pyguix container logs PID httpd'",
        )
    return service


def _logs_in(pid: int) -> list[str]:
    with contextlib.suppress(OSError):
        names = list_directory_in_root(_root(pid), LOG_DIRECTORY)
        return sorted(n[:-4] for n in names if n.endswith(".log"))
    return []


@command.command("stop")
@click.argument("pid", type=int)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="Seconds to wait before SIGKILL.",
)
def stop_command(pid: int, timeout: float) -> None:
    """Stop the container whose init is PID: SIGTERM, then SIGKILL."""
    _check_container(pid)
    start = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    if _wait_gone(pid, timeout):
        elapsed = time.monotonic() - start
        click.echo(f"container {pid} stopped in {elapsed:.1f}s", err=True)
        return
    os.kill(pid, signal.SIGKILL)
    if not _wait_gone(pid, 5.0):
        raise ContainerError(f"container '{pid}' survived SIGKILL")
    click.echo(f"container {pid} did not stop within {timeout:g}s; killed it", err=True)


def _wait_gone(pid: int, timeout: float) -> bool:
    """Wait until ``pid`` is gone or a zombie; tell whether it is."""
    deadline = time.monotonic() + timeout
    while True:
        if not _alive(pid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stream:
            return stream.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False
