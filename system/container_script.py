"""The ``run-container`` script of an operating system.

Mirrors Guix's ``container-script`` (``gnu/system/linux-container.scm``):
:func:`container_script` containerizes the system, with the store mapping
first (read-only), then the given mappings and the container file systems
(:data:`~system.file_systems.CONTAINER_FILE_SYSTEMS`), and returns the
derivation of a script (``gexp_to_script``) that boots it in a new
container through :func:`builders.container.call_with_container`.

The script embeds, as data, the system directory, the specs of the file
systems needed at boot (``/`` excepted), the host name, the store directory
and whether the network is shared.  It carries the module
closure of the container runtime (:mod:`builders.container` and what it
imports, :mod:`builders.bootstrap` to find the interpreter) in the store,
nothing of ``system``.

Usage of the script::

    run-container [--share SPEC]... [--expose SPEC]... [--network]
                  [--pid-file FILE]... [-h]

``SPEC`` is ``SRC`` or ``SRC=DST``: ``--share`` binds it writable,
``--expose`` read-only; run-time mappings come before the baked ones.  Bind
sources missing on the host are dropped, with a note on standard error.  The
network is decided when the script is built (``pyguix system container
--network``); ``--network`` at run time is accepted and only warns when the
script was built without it.  Each ``--pid-file`` receives the container's
PID (the bare number) once it runs.  A writable mapping onto ``/tmp``,
``/run`` or ``/var/run``, or below, is refused: the boot empties them, and
would empty the host directory with them.  So is a run-time mapping onto
``/``, the store, ``/proc``, ``/sys`` or ``/dev`` (or below), or onto the
target of another mapping, as :func:`~system.file_systems.check_mappings`
refuses them when the script is built.

Unlike Guix's script, this one exits with the container's status: the
init's exit code, 128 plus a signal when it was killed, 1 when the
container could not be set up, 1 for a bad option.

A chroot store (``pyguix --root DIR``) keeps the store physically under
``DIR`` while its items name the logical store directory.  The script takes
``DIR`` from its own real path (what precedes the store directory there),
finds its modules and binds the store from there, and mounts the store at
its logical directory in the container, where the system's programs expect
it.  The root is not baked in: the same system built in stores under two
roots gives the same script, bit for bit.  Setting ``PYGUIX_ROOT`` when
running the script overrides the root found (an empty value means the store
is where its items say).

The interpreter running the script, found with
:func:`builders.bootstrap.interpreter_paths` (its answer kept in the
caller's ``~/.cache/pyguix``), is bound read-only at its own paths, since
the system's programs are scripts of that interpreter.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from derivations.gexp import gexp, with_imported_modules
from derivations.lowering import gexp_to_script
from derivations.monad import current_store, monadic
from system.file_systems import (
    CONTAINER_FILE_SYSTEMS,
    FileSystemMapping,
    check_mappings,
)
from system.linux_container import containerized_operating_system, with_store_mapping
from system.operating_system import (
    OperatingSystem,
    operating_system_boot_file_system_specs,
)

__all__ = ["RUNTIME_MODULES", "SCRIPT_NAME", "container_script"]

SCRIPT_NAME = "run-container"

RUNTIME_MODULES = ("builders.container", "builders.bootstrap")
"""The modules the script imports; their closure goes into the store."""

_BODY = """
ROOT_VARIABLE = "PYGUIX_ROOT"
STORE_DIR = $store_dir


def physical_store_root():
    # Where the store's items physically are: PYGUIX_ROOT if set (empty:
    # no root), else what precedes the store directory in this script's
    # real path (a chroot store's root), else no root.
    if ROOT_VARIABLE in os.environ:
        return os.environ[ROOT_VARIABLE]
    here = os.path.dirname(os.path.realpath(__file__))
    if here.endswith(STORE_DIR) and here != STORE_DIR:
        return here[: -len(STORE_DIR)]
    return ""


def find_modules():
    # With a chroot store, the module tree is under the root on the host;
    # never fall back to modules found elsewhere on the host.
    root = physical_store_root()
    for index, entry in enumerate(sys.path):
        if entry.startswith(STORE_DIR + "/"):
            if not os.path.isdir(root + entry):
                print(f"run-container: error: cannot find the container runtime "
                      f"'{root + entry}'", file=sys.stderr)
                print(f"hint: is the store under '{root or '/'}'? "
                      f"set {ROOT_VARIABLE} to the store's root", file=sys.stderr)
                sys.exit(1)
            sys.path[index] = root + entry


find_modules()

import argparse

from builders import bootstrap, container, linux

SYSTEM = $system
HOST_NAME = $host_name
SHARED_NETWORK = $shared_network
SPECS = $specs
EMPTIED_AT_BOOT = ("/tmp", "/run", "/var/run")
FLAGS = {
    "no-suid": linux.MS_NOSUID,
    "no-dev": linux.MS_NODEV,
    "no-exec": linux.MS_NOEXEC,
    "no-atime": linux.MS_NOATIME,
    "no-diratime": linux.MS_NODIRATIME,
    "strict-atime": linux.MS_STRICTATIME,
}


def say(text):
    print(text, file=sys.stderr, flush=True)


class Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        say(f"run-container: error: {message}")
        sys.exit(1)


def parse(argv):
    parser = Parser(
        prog="run-container",
        description=f"Boot the system {SYSTEM} in a new container.",
        epilog="SPEC is SRC or SRC=DST.  Exit status: the container's.",
    )
    parser.add_argument("--share", action="append", default=[], metavar="SPEC",
                        help="bind SRC at DST, writable")
    parser.add_argument("--expose", action="append", default=[], metavar="SPEC",
                        help="bind SRC at DST, read-only")
    parser.add_argument("-N", "--network", action="store_true",
                        help="share the host's network (decided at build time)")
    parser.add_argument("--pid-file", action="append", default=[], metavar="FILE",
                        help="write the container's PID to FILE")
    return parser.parse_args(argv)


def mapping(spec, writable):
    source, equal, target = spec.partition("=")
    if not equal:
        target = source
    if not source or not target or not target.startswith("/"):
        say(f"run-container: error: invalid mapping '{spec}'; write SRC or SRC=DST")
        sys.exit(1)
    return container.BindMount(os.path.abspath(source), target, writable)


def from_spec(spec):
    device, target, kind, flags, options = spec[:5]
    writable = "read-only" not in flags
    if "bind-mount" in flags:
        if device == STORE_DIR or device.startswith(STORE_DIR + "/"):
            device = physical_store_root() + device
        return container.BindMount(device, target, writable)
    bits = 0
    for flag in flags:
        bits |= FLAGS.get(flag, 0)
    return container.FileSystemSpec(device, target, writable, kind, options, bits)


def present(fs):
    if fs.is_bind and not os.path.exists(fs.source):
        say(f"run-container: note: not mounting '{fs.target}': "
            f"'{fs.source}' does not exist on this host")
        return False
    return True


def check_not_emptied(fs):
    # The boot empties these directories: a writable host directory bound
    # below one of them would lose its contents.
    for directory in EMPTIED_AT_BOOT:
        if fs.writable and (fs.target + "/").startswith(directory + "/"):
            say(f"run-container: error: '{fs.source}' would be mounted writable "
                f"at '{fs.target}', which the boot empties")
            say(f"hint: map it elsewhere, as '{fs.source}=/exchange'")
            sys.exit(1)


def check_run_time_target(fs, taken):
    # As 'pyguix system container' refuses them when it builds the script.
    target = "/" + os.path.normpath(fs.target).lstrip("/")
    below = [d for d in (STORE_DIR, "/proc", "/sys", "/dev")
             if target == d or target.startswith(d + "/")]
    if target == "/" or below:
        say(f"run-container: error: cannot map '{fs.source}' onto '{fs.target}', "
            "which the container runtime mounts itself")
        say(f"hint: map it elsewhere, as '{fs.source}=/exchange'")
        sys.exit(1)
    if target in taken:
        say(f"run-container: error: two mappings onto '{target}'")
        say("hint: give each mapping its own target")
        sys.exit(1)
    taken.add(target)


def interpreter_mounts(taken):
    return [
        container.BindMount(path, path)
        for path in bootstrap.interpreter_paths(bootstrap.user_cache_file())
        if path not in taken
    ]


def spawned(pid):
    say(f"system container is running as PID {pid}")
    say(f"enter it with 'pyguix container exec {pid} "
        f"/run/current-system/profile/bin/COMMAND' or 'nsenter -a -t {pid}'")


def boot():
    # Runs inside, as PID 1, with an empty environment.
    os.environ.update({
        "HOME": "/root",
        "TMPDIR": "/tmp",
        "PYGUIX_NEW_SYSTEM": SYSTEM,
        "PATH": "/run/current-system/profile/bin:" + SYSTEM + "/profile/bin",
    })
    for directory in ("/run", "/bin", "/etc", "/home", "/var"):
        os.makedirs(directory, exist_ok=True)
    program = SYSTEM + "/boot"
    os.execve(program, [program], dict(os.environ))


def main(argv):
    options = parse(argv)
    if options.network and not SHARED_NETWORK:
        say("run-container: warning: --network is decided when the script is "
            "built; rebuild with 'pyguix system container --network'")
    mounts = [mapping(spec, True) for spec in options.share]
    mounts += [mapping(spec, False) for spec in options.expose]
    taken = {"/" + os.path.normpath(spec[1]).lstrip("/") for spec in SPECS}
    for fs in mounts:
        check_run_time_target(fs, taken)
    mounts += [from_spec(spec) for spec in SPECS]
    mounts = [fs for fs in mounts if present(fs)]
    for fs in mounts:
        if fs.is_bind:
            check_not_emptied(fs)
    mounts = interpreter_mounts({fs.target for fs in mounts}) + mounts
    namespaces = set(container.ALL_NAMESPACES)
    if SHARED_NETWORK:
        namespaces.discard("net")
    try:
        return container.call_with_container(
            mounts,
            boot,
            namespaces=namespaces,
            host_uids=65536,
            hostname=HOST_NAME,
            pid_files=options.pid_file,
            writable_root=True,
            # Off, as Guix's container-script has it for system containers.
            lock_mounts=False,
            process_spawned_hook=spawned,
        )
    except container.PyguixError as error:
        say(f"run-container: error: {error.message}")
        if error.hint:
            say(f"hint: {error.hint}")
        return 1


sys.exit(main(sys.argv[1:]))
"""


@monadic
def container_script(
    os_: OperatingSystem,
    mappings: Iterable[FileSystemMapping] = (),
    shared_network: bool = False,
) -> Any:
    """Return, monadically, the derivation of the ``run-container`` script
    of ``os_`` (Guix's ``container-script``; see the module docstring).

    :param mappings: host files the container always gets, after the store.
    :param shared_network: whether the container uses the host's network.
    :raises FileSystemError: a mapping is refused by
        :func:`~system.file_systems.check_mappings`.
    """
    store = yield current_store()
    mappings = list(mappings)
    check_mappings(mappings, store.store_dir)
    container = containerized_operating_system(
        os_,
        with_store_mapping(mappings, store.store_dir),
        shared_network=shared_network,
        extra_file_systems=CONTAINER_FILE_SYSTEMS,
        store_dir=store.store_dir,
    )
    body = gexp(
        _BODY,
        system=container,
        host_name=os_.host_name,
        shared_network=shared_network,
        specs=_boot_specs(container, store.store_dir),
        store_dir=store.store_dir,
    )
    script = with_imported_modules(RUNTIME_MODULES, body)
    drv = yield gexp_to_script(SCRIPT_NAME, script)
    return drv


def _boot_specs(os_: OperatingSystem, store_dir: str) -> list[list[Any]]:
    """Return the specs the script mounts, as plain data."""
    return [
        _plain(spec) for spec in operating_system_boot_file_system_specs(os_, store_dir)
    ]


def _plain(spec: Sequence[Any]) -> list[Any]:
    """Return ``spec`` with tuples as lists, so that it prints as data."""
    return [list(item) if isinstance(item, tuple) else item for item in spec]
