"""Build one derivation: lock its outputs, run its builder, register the results.

Spec: issue 5, items 2, 3 and 5; Nix's ``LocalDerivationGoal`` and the Guix
daemon's ``DerivationGoal`` (``nix/libstore/build.cc``).

**Protocol.** :func:`build_derivation` takes the lock of every output path
(``<path>.lock``) and looks again at their validity: a process that held the
locks before may have built them, and then nothing is done.  Otherwise it
reads the input closure (the input sources and the used outputs of the
input derivations, with everything they refer to), runs the builder, and
registers every output in one transaction, with the derivation as deriver.
A derivation for another ``system`` is refused; ``builtin:fetchurl`` runs
in this process (:mod:`builders.fetchurl`), every other builder in the
sandbox (:mod:`builders.sandbox`) with the environment of
:mod:`builders.environment`, after the files ``exportReferencesGraph`` and
``passAsFile`` ask for are written into the build directory; a derivation
with structured attributes (``__json``) gets ``.attrs.json`` and
``.attrs.sh`` there instead (:mod:`builders.structured_attrs`).  As root, the
builder runs as a build user taken from the pool of
:mod:`builders.build_users` (trying :attr:`BuildOptions.slot` first), held
until the outputs are registered; other pyguix processes then use other
users, or wait.

**Where outputs are written.** Each build gets a fresh directory in the
store (a temporary entry recorded in ``adding/``, so a crashed build's is
removed when the store is next opened).  The sandbox binds it writable at
the logical store directory, and binds each path of the input closure
read-only on top, at its logical path; the builder thus sees the store as
Nix's chroot shows it: its inputs, read-only, and room to create its
outputs.  An output the builder writes lands in that directory; once
checked it is renamed into place, so a half-built output is never at its
final path.  This works the same for a chroot store (``--root``), whose
items are bound from their physical paths.

**Checks after the build**, each failing the build as Nix does: every
declared output exists; it is canonicalised (read-only, mtime 1, owned by
us); its references are the hash parts of the input closure and of the
outputs found in it; a fixed output has the declared hash; and the output
checks of Nix's ``checkOutputs`` hold.  Those are four space-separated
lists of store paths or output names (an output name stands for that
output's path; anything else fails the build): ``allowedReferences`` and
``disallowedReferences`` constrain each output's references, where an
output referring to itself counts; ``allowedRequisites`` and
``disallowedRequisites`` constrain its closure (followed through the other
outputs just built and through the database), where, as in Nix, the output
itself does not count.  With structured attributes those variables are
ignored: ``outputChecks`` gives each output its own four lists (JSON lists),
where, as in Nix, the output itself does count in its closure, and
``maxSize`` and ``maxClosureSize``, limits on the NAR bytes of the output
and of its closure, itself included.  A failure names the output, each
forbidden path or size and the rule it breaks, all at once.

**Failure.** Nothing is registered, the temporary outputs are removed (or,
with ``keep_failed``, moved next to the kept build directory), and
:class:`BuildError` carries the builder's exit status, the last lines of
its log and the log's path.

**Check.** :func:`check_derivation` builds a derivation whose outputs are
valid again, in the same way, and compares the NAR hashes; a differing
result is kept at ``<output>-check`` (outside the database, as Nix does).
Fixed-output derivations are not rebuilt: their hash already says whether
they are what was declared.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from builders.bootstrap import CACHE_FILE, interpreter_paths
from builders.build_users import BuildUserPool, pool_directory
from builders.check import compare_outputs, format_check_report
from builders.environment import builder_environment, files_to_pass
from builders.fetchurl import (
    FixedOutputError,
    HashMismatchError,
    run_builtin_fetchurl,
    verify_fixed_output,
)
from builders.logs import BuildLog, open_build_log
from builders.sandbox import (
    BindMount,
    SandboxResult,
    SandboxSpec,
    run_sandboxed,
)
from builders.sandbox_paths import SandboxPath, sandbox_path_mounts
from builders.structured_attrs import (
    OutputChecks,
    attrs_files,
    exported_graphs,
    graph_objects,
    output_checks,
    parse_structured_attrs,
    prepare_structured_attrs,
    rewrite_placeholders,
)
from builders.system_features import (
    KVM_DEVICE,
    machine_features,
    missing_features,
    required_features,
)
from derivations.create import current_system, read_derivation
from derivations.derivation import Derivation
from store import nar
from store.canonical import UnsupportedFileError, canonicalise, remove_tree
from store.database import PathInfo
from store.errors import PyguixError
from store.hash import Hash
from store.local import LocalStore
from store.paths import CHECK_SUFFIX, StorePath
from store.references import RefScanner

__all__ = [
    "BuildError",
    "BuildFailure",
    "BuildOptions",
    "BuildResult",
    "CheckOutcome",
    "build_derivation",
    "check_derivation",
    "input_paths",
]

logger = logging.getLogger(__name__)

OnLine = Callable[[str], None]


@dataclass(frozen=True)
class BuildOptions:
    """How builds run; the command line's options."""

    cores: int = 0
    """``NIX_BUILD_CORES`` given to builders; 0 means every CPU."""
    timeout: float | None = None
    """Seconds after which a build is killed."""
    max_silent_time: float | None = None
    """Seconds without output after which a build is killed."""
    keep_failed: bool = False
    """Keep the build directory and partial outputs of a failed build."""
    slot: int = 0
    """The build user tried first when pyguix runs as root (a scheduler
    gives each concurrent build its own); a taken one is passed over."""
    sandbox_paths: tuple[SandboxPath, ...] = ()
    """Host paths bound read-only into every sandbox (Nix's
    ``sandbox-paths``)."""


@dataclass(frozen=True)
class BuildResult:
    """What became of one derivation."""

    drv_path: str
    """The derivation."""
    outputs: Mapping[str, str]
    """Its output paths, by output name."""
    built: bool
    """False when the outputs were already valid (maybe built by another
    process while this one waited on the locks)."""
    duration: float = 0.0
    """Seconds the build took."""
    log_path: str | None = None
    """The physical path of the build's log."""


@dataclass(frozen=True)
class BuildFailure:
    """Why a build failed, as plain data (it crosses process boundaries)."""

    drv_path: str
    """The derivation that failed."""
    kind: str
    """``builder``, ``timeout``, ``silent``, ``output``, ``references``,
    ``hash``, ``input``, ``check``, ``setup`` or ``dependency``."""
    reason: str
    """One sentence, the thing named in quotes."""
    builder_status: int | None = None
    """The builder's exit code, if it exited."""
    signal: int | None = None
    """The signal that killed the builder, if any."""
    log_tail: tuple[str, ...] = ()
    """The last lines of the build's log."""
    log_path: str | None = None
    """Where the whole log is."""
    kept: str | None = None
    """Where the build directory was kept (``keep_failed``)."""
    details: tuple[str, ...] = ()
    """More lines: the files a check found different, the bad references."""
    hint: str | None = None
    """How to fix it, when known."""


_EXIT_STATUS = {"timeout": 101, "silent": 101, "hash": 102, "check": 104}


class BuildError(PyguixError):
    """Report that a derivation could not be built; carries a :class:`BuildFailure`.

    :attr:`exit_status` is the command's exit status, as Nix's: 100 for a
    failed build, 101 when it timed out, 102 for a hash mismatch, 104 for a
    check that found a difference.
    """

    def __init__(self, failure: BuildFailure) -> None:
        super().__init__(_message(failure), _hint(failure))
        self.failure = failure
        self.drv_path = failure.drv_path
        self.exit_status = _EXIT_STATUS.get(failure.kind, 100)

    def __reduce__(self) -> tuple[type[BuildError], tuple[BuildFailure]]:
        return BuildError, (self.failure,)


def _message(failure: BuildFailure) -> str:
    lines = [f"build of '{failure.drv_path}' failed: {failure.reason}"]
    lines += [f"  {line}" for line in failure.details]
    if failure.log_tail:
        lines.append(f"last {len(failure.log_tail)} log lines:")
        lines += [f"> {line}" for line in failure.log_tail]
    return "\n".join(lines)


def _hint(failure: BuildFailure) -> str | None:
    hints = [failure.hint] if failure.hint else []
    if failure.kept:
        hints.append(f"the build directory was kept at '{failure.kept}'")
    if failure.log_path:
        hints.append(f"the full log is '{failure.log_path}' (see 'pyguix log')")
    return "; ".join(hints) or None


@dataclass(frozen=True)
class CheckOutcome:
    """The outcome of checking one derivation."""

    drv_path: str
    """The derivation."""
    rounds: int
    """How many rebuilds agreed with the valid outputs."""
    skipped: str | None = None
    """Why the derivation was not rebuilt, if it was not."""


@dataclass(frozen=True)
class _Output:
    """One output as built, checked and hashed, still in the scratch directory."""

    name: str
    path: str
    temp: str
    nar_hash: Hash
    nar_size: int
    references: frozenset[str]
    ca: str | None


@dataclass
class _Build:
    """One run of a builder: where it wrote, and what came out."""

    drv: Derivation
    scratch: str
    build_dir: str
    uid: int | None = None
    """The build user's uid and gid as root; ``None`` runs the builder as us."""
    log: BuildLog | None = None
    outputs: dict[str, _Output] = field(default_factory=dict)


# ---------------------------------------------------------------------------
# Entry points


def input_paths(store: LocalStore, drv: Derivation) -> set[str]:
    """Return the store paths ``drv`` uses directly: its input sources and the
    outputs it uses of its input derivations."""
    paths = set(drv.input_sources)
    for input_path, names in drv.input_derivations.items():
        input_drv = read_derivation(store, input_path)
        paths.update(input_drv.output_path(name) for name in names)
    return paths


def build_derivation(
    store: LocalStore,
    drv: Derivation,
    options: BuildOptions | None = None,
    on_line: OnLine | None = None,
) -> BuildResult:
    """Make every output of ``drv`` valid, building it unless it already is.

    The caller guarantees that the inputs of ``drv`` are valid (the
    scheduler builds them first).

    :param on_line: given each line of the build's log as it comes.
    :raises BuildError: when the build fails; nothing is registered then.
    """
    options = options or BuildOptions()
    outputs = drv.output_paths()
    store.add_temp_roots(sorted(outputs.values()))

    with store.lock_paths(outputs.values()):
        valid = store.query_valid(outputs.values())
        if len(valid) == len(set(outputs.values())):
            return BuildResult(drv.path, outputs, built=False)
        closure = _input_closure(store, drv)
        wanted = {n: p for n, p in outputs.items() if p not in valid}
        start = time.monotonic()
        with _run(store, drv, closure, wanted, options, on_line) as build:
            _move_into_place(store, build)
            _register(store, drv, build)
            log_path = build.log.path if build.log else None
        logger.info("built %s", drv.path)
        return BuildResult(drv.path, outputs, True, time.monotonic() - start, log_path)


def check_derivation(
    store: LocalStore,
    drv: Derivation,
    options: BuildOptions | None = None,
    rounds: int = 1,
    on_line: OnLine | None = None,
) -> CheckOutcome:
    """Build the valid outputs of ``drv`` again ``rounds`` times and compare.

    On a difference, the rebuilt output is kept at ``<output>-check`` next to
    the original (not registered) and :class:`BuildError` (kind ``check``)
    names the files that differ.  Fixed-output derivations are skipped: their
    declared hash is their check.

    :raises BuildError: on a difference, a failed rebuild, or outputs that are
        not valid.
    """
    options = options or BuildOptions()
    outputs = drv.output_paths()
    if drv.is_fixed_output():
        return CheckOutcome(drv.path, 0, "fixed-output derivation, checked by its hash")
    invalid = set(outputs.values()) - store.query_valid(outputs.values())
    if invalid:
        raise BuildError(
            BuildFailure(
                drv.path,
                "input",
                f"cannot check it: output '{min(invalid)}' is not valid",
                hint="build it first, then check it",
            )
        )

    closure = _input_closure(store, drv)
    for _ in range(rounds):
        with (
            store.lock_paths(outputs.values()),
            _run(store, drv, closure, outputs, options, on_line) as build,
        ):
            _compare(store, build)
    return CheckOutcome(drv.path, rounds)


# ---------------------------------------------------------------------------
# Running the builder


def _input_closure(store: LocalStore, drv: Derivation) -> set[str]:
    """Return the closure of the inputs of ``drv``, failing if one is invalid."""
    inputs = input_paths(store, drv)
    # Rooted before the validity check, so a collection cannot take them after.
    store.add_temp_roots(sorted(inputs))
    missing = inputs - store.query_valid(inputs)
    if missing:
        raise BuildError(
            BuildFailure(
                drv.path,
                "input",
                f"its input '{min(missing)}' is not valid",
                hint="build its input derivations first",
            )
        )
    return store.query_requisites(inputs)


@contextmanager
def _run(
    store: LocalStore,
    drv: Derivation,
    closure: set[str],
    wanted: Mapping[str, str],
    options: BuildOptions,
    on_line: OnLine | None,
) -> Iterator[_Build]:
    """Run the builder of ``drv``; yield its checked outputs, still in scratch.

    The scratch directory and the build directory are removed when the block
    ends, unless the build failed and ``keep_failed`` is set.
    """
    with _build_user(store, drv, options) as uid, store.adding(None) as entry:
        os.mkdir(entry.temp)
        os.chmod(entry.temp, 0o1777)
        build_dir = tempfile.mkdtemp(prefix=f"pyguix-build-{drv.name}.drv-")
        build = _Build(drv, entry.temp, build_dir, uid)
        try:
            _execute(store, build, closure, options, on_line)
            _finish_outputs(store, build, closure, wanted)
        except BuildError as error:
            raise _failed(build, error.failure, options) from None
        except PyguixError as error:
            failure = BuildFailure(drv.path, "setup", error.message, hint=error.hint)
            raise _failed(build, failure, options) from None
        except BaseException:
            remove_tree(build_dir)
            raise
        else:
            remove_tree(build_dir)
        yield build


@contextmanager
def _build_user(
    store: LocalStore, drv: Derivation, options: BuildOptions
) -> Iterator[int | None]:
    """Hold a build user's uid for the block when we are root, else ``None``.

    ``builtin:fetchurl`` runs in this process and needs none.
    """
    if os.getuid() != 0 or drv.builder == "builtin:fetchurl":
        yield None
        return

    def waiting() -> None:
        logger.info("waiting for a free build user to build %s", drv.path)

    pool = BuildUserPool(pool_directory(store.real_state_dir))
    with pool.acquire(options.slot, on_wait=waiting) as user:
        logger.debug("building %s as uid %d", drv.path, user.uid)
        yield user.uid


def _execute(
    store: LocalStore,
    build: _Build,
    closure: set[str],
    options: BuildOptions,
    on_line: OnLine | None,
) -> None:
    """Run the builder, logging its output; raise if it did not succeed."""
    drv = build.drv
    log = build.log = open_build_log(store.real_state_dir, drv.path, on_line=on_line)
    try:
        attrs = parse_structured_attrs(drv)
        features = required_features(drv, attrs)
        _check_features(drv, features)
        if drv.builder == "builtin:fetchurl":
            _fetch(store, build)
            return
        _check_system(drv)
        if attrs is None:
            _export_references_graphs(store, build, closure)
            _write_passed_files(build)
        else:
            _write_structured_attrs(store, build, attrs, closure)
        spec = _sandbox_spec(store, build, closure, options, features)
        result = run_sandboxed(spec, log.write)
    finally:
        log.close()
    if not result.succeeded:
        raise BuildError(_builder_failure(drv, result, log))


def _check_system(drv: Derivation) -> None:
    """Refuse a derivation for another system, as Nix does."""
    if drv.system != current_system():
        raise BuildError(
            BuildFailure(
                drv.path,
                "setup",
                f"it needs a '{drv.system}' machine, but this one is "
                f"'{current_system()}'",
                hint="build it on a machine of that system",
            )
        )


def _check_features(drv: Derivation, required: set[str]) -> None:
    """Refuse ``drv``, which requires ``required`` features, if this machine
    lacks one, as Nix does."""
    refusal = missing_features(drv, required, machine_features())
    if refusal is not None:
        raise BuildError(
            BuildFailure(
                drv.path,
                "setup",
                refusal,
                hint="build it on a machine with those features, or list this "
                "machine's features in PYGUIX_SYSTEM_FEATURES",
            )
        )


def _feature_mounts(required: set[str]) -> list[BindMount]:
    """Return the devices the ``required`` features bring: ``/dev/kvm``."""
    if "kvm" in required:
        return [BindMount(KVM_DEVICE, KVM_DEVICE, writable=True)]
    return []


def _export_references_graphs(
    store: LocalStore, build: _Build, closure: set[str]
) -> None:
    """Write the files ``exportReferencesGraph`` asks for into the build directory.

    The variable holds ``FILE PATH`` pairs; FILE gets the closure of PATH,
    which must be an input, in Nix's registration format (Guix's
    ``read-reference-graph`` reads it): per item, its path, an empty deriver
    line, its number of references, then the references, sorted.
    """
    words = build.drv.env.get("exportReferencesGraph", "").split()
    for file, path in zip(words[::2], words[1::2], strict=False):
        if path not in closure or "/" in file or file in ("", ".", ".."):
            raise BuildError(
                BuildFailure(
                    build.drv.path,
                    "setup",
                    f"exportReferencesGraph names '{path}' for '{file}', "
                    "which is not an input or not a plain file name",
                )
            )
        lines: list[str] = []
        for item in sorted(store.query_requisites([path])):
            references = sorted(store.query_references(item))
            lines += [item, "", str(len(references)), *references]
        with open(os.path.join(build.build_dir, file), "w") as graph:
            graph.write("".join(line + "\n" for line in lines))


def _write_passed_files(build: _Build) -> None:
    """Write the variables ``passAsFile`` names into the build directory."""
    for name, value in files_to_pass(build.drv).items():
        _write_build_file(build, name, value.encode())


def _write_build_file(build: _Build, name: str, data: bytes) -> None:
    """Write file ``name`` of the build directory, owned by the build user as
    in Nix."""
    path = os.path.join(build.build_dir, name)
    with open(path, "wb") as file:
        file.write(data)
    if build.uid is not None:
        os.chown(path, build.uid, build.uid)


def _write_structured_attrs(
    store: LocalStore, build: _Build, attrs: Mapping[str, Any], closure: set[str]
) -> None:
    """Write ``.attrs.json`` and ``.attrs.sh`` into the build directory (Nix's
    ``writeStructuredAttrs``)."""
    drv = build.drv
    graphs = {
        name: _path_info_objects(store, drv, name, paths, closure)
        for name, paths in exported_graphs(drv, attrs).items()
    }
    outputs = drv.output_paths()
    prepared = prepare_structured_attrs(attrs, outputs, graphs)
    for name, data in attrs_files(prepared, outputs).items():
        _write_build_file(build, name, data)


def _path_info_objects(
    store: LocalStore, drv: Derivation, name: str, paths: list[str], closure: set[str]
) -> list[dict[str, Any]]:
    """Return the path-info objects of the closure of ``paths``, which must be
    inputs (Nix's ``exportReferences``)."""
    outside = [path for path in paths if path not in closure]
    if outside:
        raise BuildError(
            BuildFailure(
                drv.path,
                "setup",
                f"exportReferencesGraph.{name} names '{outside[0]}', which is "
                "not in its input closure",
                hint="list only store paths the derivation has as inputs",
            )
        )
    return graph_objects(store, paths)


def _sandbox_spec(
    store: LocalStore,
    build: _Build,
    closure: set[str],
    options: BuildOptions,
    features: set[str],
) -> SandboxSpec:
    """Return how to run the builder of ``build``, which requires ``features``."""
    drv = build.drv
    inside = f"/tmp/pyguix-build-{drv.name}.drv-0"
    if not drv.builder.startswith("/"):
        raise BuildError(
            BuildFailure(
                drv.path,
                "setup",
                f"its builder '{drv.builder}' is not an absolute path",
                hint="builders are store paths or the bootstrap interpreter",
            )
        )

    # The scratch directory is the store inside; inputs go read-only on top.
    mounts = [BindMount(build.scratch, store.store_dir, writable=True)]
    mounts += _input_mounts(store, build.scratch, closure)
    mounts += sandbox_path_mounts(options.sandbox_paths)
    mounts += _feature_mounts(features)
    interpreter = interpreter_paths(store.state_file(*CACHE_FILE))
    mounts += [BindMount(path, path) for path in interpreter]
    return SandboxSpec(
        command=(drv.builder, *_arguments(drv)),
        build_dir=build.build_dir,
        build_dir_target=inside,
        env=builder_environment(drv, store.store_dir, inside, options.cores),
        mounts=tuple(mounts),
        network=drv.is_fixed_output(),
        host_uid=build.uid,
        host_gid=build.uid,
        timeout=options.timeout,
        max_silent_time=options.max_silent_time,
    )


def _arguments(drv: Derivation) -> list[str]:
    """Return the builder's arguments, each output's placeholder replaced by
    its path (``builtins.placeholder``), as Nix does."""
    outputs = drv.output_paths()
    return [rewrite_placeholders(arg, outputs) for arg in drv.args]


def _input_mounts(
    store: LocalStore, scratch: str, closure: set[str]
) -> list[BindMount]:
    """Return the bind mounts of the input closure, read-only at their paths.

    As root, inputs that are files or symlinks are hard-linked into the
    scratch directory instead, as Nix does: a link costs no mount.  It is
    safe because store files belong to root, who is not mapped in the
    sandbox, and are read-only, and the scratch directory is sticky, so the
    build user can neither change nor replace them.  (Anyone else's store
    files belong to the build's own uid, so they are bound read-only.)
    """
    mounts = []
    for path in sorted(closure):
        physical = store.physical(path)
        if os.getuid() == 0 and _linked(physical, scratch):
            continue
        mounts.append(BindMount(physical, path))
    return mounts


def _linked(physical: str, scratch: str) -> bool:
    """Hard-link the file or symlink ``physical`` into ``scratch``, if it is one."""
    try:
        if stat.S_ISDIR(os.lstat(physical).st_mode):
            return False
        target = os.path.join(scratch, os.path.basename(physical))
        os.link(physical, target, follow_symlinks=False)
    except OSError:
        return False
    return True


def _fetch(store: LocalStore, build: _Build) -> None:
    """Run ``builtin:fetchurl`` in this process, as Nix's builtin builder."""
    drv = build.drv
    target = os.path.join(build.scratch, os.path.basename(drv.output_path("out")))
    env = builder_environment(drv, store.store_dir, build.build_dir, 1)
    try:
        run_builtin_fetchurl(env, target)
    except PyguixError as error:
        assert build.log is not None
        build.log.write(f"{error.message}\n".encode())
        raise BuildError(
            BuildFailure(drv.path, "builder", error.message, hint=error.hint)
        ) from None


def _builder_failure(
    drv: Derivation, result: SandboxResult, log: BuildLog
) -> BuildFailure:
    if result.timed_out:
        kind, reason = "timeout", f"timed out after {result.duration:.1f} s"
    elif result.silent_too_long:
        kind, reason = "silent", "killed after producing no output for too long"
    elif result.exit_status is not None:
        kind, reason = "builder", f"builder exited with status {result.exit_status}"
    else:
        kind, reason = "builder", f"builder was killed by signal {result.signal}"
    return BuildFailure(
        drv.path,
        kind,
        reason,
        builder_status=result.exit_status,
        signal=result.signal,
        log_tail=tuple(log.tail(10)),
        log_path=log.path,
    )


def _failed(build: _Build, failure: BuildFailure, options: BuildOptions) -> BuildError:
    """Clean up after a failed build (or keep it); return the error to raise."""
    if build.log is not None and failure.log_path is None:
        failure = _with(failure, log_path=build.log.path, log_tail=build.log.tail(10))
    if options.keep_failed:
        kept = _keep(build)
        failure = _with(failure, kept=kept)
        logger.info("keeping build directory '%s'", kept)
    else:
        remove_tree(build.build_dir)
    # The scheduler's reporter and the command's error line show the failure.
    logger.info("build of %s failed: %s", build.drv.path, failure.reason)
    return BuildError(failure)


def _with(failure: BuildFailure, **changes: object) -> BuildFailure:
    fields = dict(failure.__dict__)
    fields.update(changes)
    return BuildFailure(**fields)


def _keep(build: _Build) -> str:
    """Move what the failed build left in the store next to its build directory.

    The build directory stays where it is; each partial output goes to
    ``<build dir>.<output name>``.
    """
    for name, path in build.drv.output_paths().items():
        temp = os.path.join(build.scratch, os.path.basename(path))
        if os.path.lexists(temp) and not os.path.ismount(temp):
            shutil.move(temp, f"{build.build_dir}.{name}")
    return build.build_dir


# ---------------------------------------------------------------------------
# After the build: outputs, references, hashes


def _finish_outputs(
    store: LocalStore, build: _Build, closure: set[str], wanted: Mapping[str, str]
) -> None:
    """Check, canonicalise, scan and hash each wanted output in scratch."""
    drv = build.drv
    temps = {
        n: os.path.join(build.scratch, os.path.basename(p)) for n, p in wanted.items()
    }
    missing = sorted(n for n, t in temps.items() if not os.path.lexists(t))
    if missing:
        raise BuildError(
            BuildFailure(
                drv.path,
                "output",
                f"the builder did not produce output(s) "
                f"{', '.join(repr(n) for n in missing)}",
                hint="a builder must create a file or directory at each output's path",
            )
        )

    candidates = closure | set(drv.output_paths().values())
    for name, path in wanted.items():
        build.outputs[name] = _finish_one(drv, name, path, temps[name], candidates)
    _check_outputs(store, drv, build.outputs)


def _finish_one(
    drv: Derivation, name: str, path: str, temp: str, candidates: set[str]
) -> _Output:
    if os.getuid() == 0:
        _chown_tree(temp)
    try:
        canonicalise(temp)
    except UnsupportedFileError as error:
        raise BuildError(
            BuildFailure(drv.path, "output", f"output '{name}': {error.message}")
        ) from None
    references, nar_hash, nar_size = _scan_and_hash(temp, candidates)
    ca = _check_fixed_output(drv, name, temp)
    return _Output(name, path, temp, nar_hash, nar_size, references, ca)


def _scan_and_hash(temp: str, candidates: set[str]) -> tuple[frozenset[str], Hash, int]:
    """Return the references, NAR hash and NAR size of ``temp``, in one NAR pass."""
    scanner = RefScanner(candidates)
    hasher = hashlib.sha256()
    size = 0

    def feed(data: bytes) -> None:
        nonlocal size
        scanner.feed(data)
        hasher.update(data)
        size += len(data)

    nar.dump(temp, feed)
    return frozenset(scanner.found), Hash("sha256", hasher.digest()), size


def _chown_tree(path: str) -> None:
    """Give the tree at ``path``, written by a build user, back to us."""
    uid, gid = os.getuid(), os.getgid()
    os.lchown(path, uid, gid)
    if os.path.isdir(path) and not os.path.islink(path):
        for directory, dirs, files in os.walk(path):
            for entry in dirs + files:
                os.lchown(os.path.join(directory, entry), uid, gid)


def _check_fixed_output(drv: Derivation, name: str, temp: str) -> str | None:
    """Check a fixed output's hash; return its content address, or ``None``."""
    output = drv.outputs[name]
    declared = output.content_hash
    if declared is None:
        return None
    try:
        verify_fixed_output(
            temp,
            declared.algorithm,
            declared.digest,
            output.recursive,
            drv_path=drv.path,
        )
    except HashMismatchError as error:
        raise BuildError(
            BuildFailure(
                drv.path,
                "hash",
                f"hash mismatch in fixed-output derivation output '{name}'",
                details=(
                    f"specified: {error.specified.to_string('base32')}",
                    f"got:       {error.got.to_string('base32')}",
                ),
                hint=error.hint,
            )
        ) from None
    except FixedOutputError as error:
        raise BuildError(
            BuildFailure(drv.path, "hash", error.message, hint=error.hint)
        ) from None
    method = "r:" if output.recursive else ""
    return f"fixed:{method}{declared.algorithm}:{declared.to_base32()}"


_OUTPUT_CHECKS = (
    ("allowedReferences", True, False),
    ("allowedRequisites", True, True),
    ("disallowedReferences", False, False),
    ("disallowedRequisites", False, True),
)
"""Each check's variable, whether it lists what is allowed (else what is
forbidden), and whether it applies to the closure (else the references);
in Nix's order."""


def _check_outputs(
    store: LocalStore, drv: Derivation, outputs: Mapping[str, _Output]
) -> None:
    """Enforce the output checks of ``drv`` on each output, as Nix's
    ``checkOutputs`` does: the reference and requisite lists of its
    environment, or with structured attributes each output's
    ``outputChecks``; report every broken rule at once."""
    attrs = parse_structured_attrs(drv)
    problems: list[tuple[str, str, str]] = []
    for output in outputs.values():
        if attrs is None:
            checks: OutputChecks | None = _environment_checks(drv)
        else:
            checks = output_checks(drv, attrs, output.name)
        if checks is not None:
            problems += _output_problems(
                store, drv, output, outputs, checks, attrs is not None
            )
    if problems:
        raise _forbidden_paths_error(drv, problems)


def _environment_checks(drv: Derivation) -> OutputChecks:
    """Return the checks of a derivation without structured attributes: its
    variables, each a space-separated list, for every output alike."""
    names = [variable for variable, _, _ in _OUTPUT_CHECKS if variable in drv.env]
    return OutputChecks({name: drv.env[name].split() for name in names})


def _output_problems(
    store: LocalStore,
    drv: Derivation,
    output: _Output,
    outputs: Mapping[str, _Output],
    checks: OutputChecks,
    structured: bool,
) -> list[tuple[str, str, str]]:
    """Return how ``output`` breaks ``checks``: (output name, rule, detail) each.

    As in Nix, the output itself is in its closure for structured checks,
    and left out of it for those of the environment.
    """
    prefix = f"outputChecks.{output.name}." if structured else ""
    problems = _size_problems(store, output, outputs, checks, prefix)
    lists = [check for check in _OUTPUT_CHECKS if check[0] in checks.lists]

    closure = set()
    if any(recursive for *_, recursive in lists):
        closure = _output_closure(store, output, outputs)
        if structured:
            closure.add(output.path)

    for variable, allowed, recursive in lists:
        rule = prefix + variable
        spec = _reference_spec(store, drv, rule, checks.lists[variable])
        relation = "have in its closure" if recursive else "refer to"
        problems += [
            (
                output.name,
                rule,
                f"output '{output.name}' may not {relation} '{path}' ({rule})",
            )
            for path in sorted(closure if recursive else output.references)
            if (path in spec) != allowed
        ]
    return problems


def _size_problems(
    store: LocalStore,
    output: _Output,
    outputs: Mapping[str, _Output],
    checks: OutputChecks,
    prefix: str,
) -> list[tuple[str, str, str]]:
    """Return how ``output`` breaks ``maxSize`` and ``maxClosureSize``, which
    count NAR bytes, of the output and of its closure (itself included)."""
    problems = []
    name, limit = output.name, checks.max_size
    if limit is not None and output.nar_size > limit:
        rule = prefix + "maxSize"
        problems.append(
            (
                name,
                rule,
                f"output '{name}' is {output.nar_size} bytes, over the "
                f"limit of {limit} bytes ({rule})",
            )
        )

    limit = checks.max_closure_size
    if limit is not None:
        size = _closure_size(store, output, outputs)
        if size > limit:
            rule = prefix + "maxClosureSize"
            problems.append(
                (
                    name,
                    rule,
                    f"the closure of output '{name}' is {size} bytes, "
                    f"over the limit of {limit} bytes ({rule})",
                )
            )
    return problems


def _closure_size(
    store: LocalStore, output: _Output, outputs: Mapping[str, _Output]
) -> int:
    """Return the NAR bytes of the closure of ``output``, itself included."""
    built = {o.path: o.nar_size for o in outputs.values()}
    closure = _output_closure(store, output, outputs) | {output.path}
    return sum(
        built[path] if path in built else _nar_size(store, path) for path in closure
    )


def _nar_size(store: LocalStore, path: str) -> int:
    info = store.query_path_info(path)
    assert info is not None, path
    return info.nar_size


def _forbidden_paths_error(
    drv: Derivation, problems: list[tuple[str, str, str]]
) -> BuildError:
    """Return the error for ``problems``: (output name, rule, detail) each."""
    outputs = sorted({name for name, _, _ in problems})
    rules = sorted({rule for _, rule, _ in problems})
    names = ", ".join(f"'{name}'" for name in outputs)
    subject = (
        f"output {names} breaks" if len(outputs) == 1 else f"outputs {names} break"
    )
    hints = []
    if any(not rule.endswith("Size") for rule in rules):
        hints.append("remove those references, or change what the lists allow")
    if any(rule.endswith("Size") for rule in rules):
        hints.append("make the output smaller, or raise the limit")
    return BuildError(
        BuildFailure(
            drv.path,
            "references",
            f"{subject} its derivation's {' and '.join(rules)}",
            details=tuple(detail for _, _, detail in problems),
            hint="; ".join(hints),
        )
    )


def _reference_spec(
    store: LocalStore, drv: Derivation, rule: str, items: list[str]
) -> set[str]:
    """Return the store paths ``items`` of list ``rule`` name, each output
    name replaced by its output's path.

    :raises BuildError: for an item that is neither, as Nix refuses it.
    """
    outputs = drv.output_paths()
    paths = set()
    for item in items:
        if item in outputs:
            paths.add(outputs[item])
            continue
        try:
            paths.add(str(StorePath.from_string(item, store.store_dir)))
        except PyguixError:
            raise BuildError(
                BuildFailure(
                    drv.path,
                    "references",
                    f"its {rule} names '{item}', which is neither a store "
                    "path nor one of its outputs",
                    hint="list store paths or output names such as 'out'",
                )
            ) from None
    return paths


def _output_closure(
    store: LocalStore, output: _Output, outputs: Mapping[str, _Output]
) -> set[str]:
    """Return the closure of ``output`` without ``output`` itself, as Nix's
    requisite checks see it.

    The outputs just built are not valid yet: they are followed through the
    references found in them, and everything else through the database.
    """
    built = {o.path: o for o in outputs.values()}
    reached, todo, elsewhere = {output.path}, [output], set()
    while todo:
        for reference in todo.pop().references:
            if reference not in built:
                elsewhere.add(reference)
            elif reference not in reached:
                reached.add(reference)
                todo.append(built[reference])
    if elsewhere:
        reached |= store.query_requisites(elsewhere)
    return reached - {output.path}


def _move_into_place(store: LocalStore, build: _Build) -> None:
    """Rename each output from scratch to its path; the locks are held."""
    for output in build.outputs.values():
        physical = store.physical(output.path)
        if os.path.lexists(physical):
            remove_tree(physical)
        os.rename(output.temp, physical)


def _register(store: LocalStore, drv: Derivation, build: _Build) -> None:
    """Make the outputs valid and record them as the derivation's, together."""
    infos = [
        PathInfo(o.path, o.nar_hash, o.nar_size, o.references, drv.path, 0, o.ca)
        for o in build.outputs.values()
    ]
    recorded = {drv.path: drv.output_paths()} if store.is_valid(drv.path) else None
    store.register_valid_paths(infos, recorded)


# ---------------------------------------------------------------------------
# Checks


def _compare(store: LocalStore, build: _Build) -> None:
    """Compare each rebuilt output with the valid one; keep and report a difference."""
    drv = build.drv
    different: list[str] = []
    for output in build.outputs.values():
        info = store.query_path_info(output.path)
        assert info is not None, output.path
        if info.nar_hash.digest == output.nar_hash.digest:
            continue
        original = store.physical(output.path)
        kept = original + CHECK_SUFFIX
        remove_tree(kept)
        os.rename(output.temp, kept)
        report = format_check_report(
            compare_outputs(original, kept),
            original_name=output.path,
            rebuilt_name=output.path + CHECK_SUFFIX,
        )
        different += report.rsplit("\nhint: ", 1)[0].splitlines()
    if different:
        raise BuildError(
            BuildFailure(
                drv.path,
                "check",
                "it is not deterministic: a rebuild gave a different output",
                details=tuple(different),
                log_path=build.log.path if build.log else None,
                hint="compare ORIGINAL and ORIGINAL-check in full with diffoscope",
            )
        )
