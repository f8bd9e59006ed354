"""Realise derivations: build what is missing, in parallel, in worker processes.

Spec: issue 5, item 1; Nix's ``Worker`` (``libstore/build/worker.cc``) and
``nix-store --realise``, Guix's ``build-things``.

**The cache hit first.** :func:`realise` finds the targets' outputs (in the
database for derivations built before, else in their ``.drv`` files) and
asks the database once whether every wanted output is valid.  When they
are, it returns: no graph is loaded and networkx is not even imported, so a
no-op realise costs two queries.

**Otherwise** it loads the graph of derivations (:mod:`derivations.graph`),
keeps the part whose outputs are missing, and runs up to ``jobs`` builds at
once, each as soon as the builds of its inputs are done.  By default the
first failure stops new builds, but running ones finish; with
``keep_going`` everything that does not depend on a failure is built.
Derivations that depend on a failed one are reported as "dependency failed".

**Processes, not threads.** Builds run in up to ``jobs`` worker processes
forked from this one when first needed; each opens its own database
connection, runs one job at a time (forking the sandbox in turn) and lives
until the realise ends, so a build costs no fork of this process.  The
first worker is forked before the graph is loaded: it finds the bootstrap
interpreter's paths (an ``ldd`` run) while this process reads the graph.
``unshare(CLONE_NEWUSER)`` fails in a multithreaded process, and a fork
from one is fragile, so the scheduler starts no thread: it waits on the
workers' pipes with :mod:`selectors`, and calls a reporter's optional
``refresh()`` from there, so a live display needs no thread of its own.
Jobs and replies travel as frames of pickled messages (a ``job``; then
``line`` messages, and ``ok`` or ``failed``)::

    frame = length:u32be pickle((kind, payload))

A worker that dies fails its job; the next job of its slot forks a new one.

**Concurrency between processes.** A worker takes the output locks before
building and looks at validity again once it holds them, so two processes
realising the same graph build each derivation once: the second waits, then
finds the outputs valid.  As root, each build also takes a build user from
the pool locked across processes (:mod:`builders.build_users`); the worker's
slot is only the user it tries first, so two processes' builds never share
a uid, and a build waits when every user is taken.

**Checks.** With ``check``, the targets are rebuilt and compared (see
:func:`builders.build.check_derivation`) once their inputs are realised;
``rounds`` > 1 builds each target that many times in all, comparing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import selectors
import signal
import struct
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, NoReturn

from derivations.derivation import Derivation, DerivationError
from store.errors import PyguixError

# Building needs the sandbox, logs and checks, and reading .drv files the
# ATerm parser; they are imported only when needed, so that the cache hit
# stays cheap.
if TYPE_CHECKING:
    import networkx as nx

    from builders.build import BuildFailure, BuildOptions, CheckOutcome
    from builders.progress import BuildReporter
    from builders.sandbox_paths import SandboxPath
    from store.local import LocalStore

__all__ = ["RealiseError", "RealiseResult", "Target", "parse_target", "realise"]

logger = logging.getLogger(__name__)

REFRESH_INTERVAL = 0.25
"""Seconds between calls of a reporter's ``refresh`` while builds run."""

Target = str | tuple[str, Iterable[str] | None]
"""A derivation path, or a path with the output names wanted (all if
``None`` or empty)."""


@dataclass(frozen=True)
class RealiseResult:
    """What a realise did."""

    outputs: Mapping[str, Mapping[str, str]]
    """For each target derivation, the wanted outputs' paths by name."""
    built: tuple[str, ...] = ()
    """Derivations built by this process, in the order they finished."""
    checked: tuple[CheckOutcome, ...] = ()
    """The checks done, with ``check`` or ``rounds``."""
    failed: Mapping[str, BuildFailure] = field(default_factory=dict)
    """Derivations that failed, or whose dependency did, and why."""
    not_started: tuple[str, ...] = ()
    """Derivations left unbuilt after a failure stopped the realise."""

    @property
    def ok(self) -> bool:
        """Tell whether everything asked for is realised (and checked)."""
        return not self.failed and not self.not_started

    def output_paths(self) -> list[str]:
        """Return every wanted output path, targets in order."""
        return [path for outs in self.outputs.values() for path in outs.values()]


class RealiseError(PyguixError):
    """Report that some derivations could not be built; carries the result.

    Its exit status is Nix's: 100, plus 1 if a build timed out, 2 for a hash
    mismatch, 4 for a check that found a difference.
    """

    def __init__(self, result: RealiseResult) -> None:
        from builders.build import BuildError

        own = [BuildError(f) for f in result.failed.values() if f.kind != "dependency"]
        if len(own) == 1:
            message, hint = own[0].message, own[0].hint
        else:
            message = f"{len(own)} builds failed:\n" + "\n".join(e.message for e in own)
            hint = "see each log with 'pyguix log DRV'; --keep-going builds what it can"
        super().__init__(message + _consequences(result), hint)
        self.result = result
        self.exit_status = 100 + _status_bits(e.failure for e in own)


def _status_bits(failures: Iterable[BuildFailure]) -> int:
    bits = 0
    for failure in failures:
        bits |= {"timeout": 1, "silent": 1, "hash": 2, "check": 4}.get(failure.kind, 0)
    return bits


def _consequences(result: RealiseResult) -> str:
    """List what was not built because of the failures, one per line."""
    lines = [
        f"\n  {drv_path}: {failure.reason}"
        for drv_path, failure in sorted(result.failed.items())
        if failure.kind == "dependency"
    ]
    lines += [
        f"\n  {p}: not built (stopped after a failure)" for p in result.not_started
    ]
    if not lines:
        return ""
    return f"\nnot built because of that ({len(lines)}):" + "".join(lines)


def parse_target(text: str) -> tuple[str, tuple[str, ...] | None]:
    """Split ``DRV``, ``DRV^out,lib`` or ``DRV!out`` into a path and outputs.

    ``^*`` (or no suffix) means every output.
    """
    for separator in ("^", "!"):
        if separator in text:
            path, names = text.split(separator, 1)
            if names == "*":
                return path, None
            return path, tuple(name for name in names.split(",") if name)
    return text, None


# ---------------------------------------------------------------------------
# Entry point


def realise(
    store: LocalStore,
    targets: Sequence[Target],
    *,
    jobs: int = 1,
    keep_going: bool = False,
    cores: int = 0,
    check: bool = False,
    rounds: int = 1,
    keep_failed: bool = False,
    timeout: float | None = None,
    max_silent_time: float | None = None,
    sandbox_paths: tuple[SandboxPath, ...] = (),
    reporter: BuildReporter | None = None,
) -> RealiseResult:
    """Make the wanted outputs of ``targets`` valid, building what is missing.

    :param jobs: how many builds may run at once.
    :param keep_going: build everything that does not depend on a failure.
    :param cores: ``NIX_BUILD_CORES`` for each build (0: every CPU).
    :param check: rebuild the targets whose outputs are valid and compare.
    :param rounds: how many times in all to build each target, comparing.
    :param keep_failed: keep the build directories of failed builds.
    :param timeout: seconds after which a build is killed.
    :param max_silent_time: seconds of silence after which a build is killed.
    :param sandbox_paths: host paths bound into every build's sandbox.
    :param reporter: told what is built, what each build prints, what ends.
    :raises RealiseError: when a build failed (the result is attached).
    :raises DerivationError: when a target is not a derivation in the store.
    """
    outputs = _wanted_outputs(store, targets)
    all_paths = {p for outs in outputs.values() for p in outs.values()}

    # The cache hit: one batched query, no graph.
    if (
        not check
        and rounds <= 1
        and len(store.query_valid(all_paths)) == len(all_paths)
    ):
        return RealiseResult(outputs)

    from builders.build import BuildOptions

    options = BuildOptions(
        cores=cores,
        timeout=timeout,
        max_silent_time=max_silent_time,
        keep_failed=keep_failed,
        sandbox_paths=sandbox_paths,
    )
    run = _Run(store, options, jobs, keep_going, reporter)
    try:
        run.start_first_worker()
        graph = _missing_graph(store, list(outputs))
        # Checked: every target with --check, those built now with --rounds.
        checked = [p for p in outputs if check or (rounds > 1 and p in graph)]
        if reporter is not None:
            reporter.plan(sorted(set(graph.nodes) | set(checked)))
        run.build_graph(graph)
        if run.ok() and checked:
            run.check_targets(checked, rounds if check else rounds - 1)
    finally:
        run.stop_children()
        if reporter is not None:
            reporter.done()

    result = RealiseResult(
        outputs,
        tuple(run.built),
        tuple(run.checked),
        dict(run.failed),
        tuple(sorted(run.not_started)),
    )
    if not result.ok:
        raise RealiseError(result)
    return result


def _wanted_outputs(
    store: LocalStore, targets: Sequence[Target]
) -> dict[str, dict[str, str]]:
    """Return each target's wanted outputs' paths, by output name.

    Derivations built before have their outputs recorded in the database:
    one query finds them, and only the others' ``.drv`` files are read.
    """
    parsed = [(t, None) if isinstance(t, str) else (t[0], t[1]) for t in targets]
    for path, _ in parsed:
        if not path.endswith(".drv"):
            raise DerivationError(
                path,
                f"'{path}' is not a derivation path",
                "give STORE/HASH-NAME.drv, optionally with ^OUTPUT,...",
            )
    recorded = store.db.derivation_outputs({path for path, _ in parsed})

    wanted: dict[str, dict[str, str]] = {}
    for path, names in parsed:
        known = recorded.get(path, {})
        chosen = list(names) if names else sorted(known)
        if not known or not set(chosen) <= set(known):
            known = _read_target(store, path).output_paths()
            chosen = list(names) if names else sorted(known)
        outs = {name: _output_named(path, known, name) for name in chosen}
        wanted[path] = {**wanted.get(path, {}), **outs}
    return wanted


def _read_target(store: LocalStore, path: str) -> Derivation:
    try:
        from derivations.create import read_derivation

        return read_derivation(store, path)
    except FileNotFoundError:
        raise DerivationError(
            path, f"derivation '{path}' is not in the store"
        ) from None


def _output_named(drv_path: str, outputs: Mapping[str, str], name: str) -> str:
    if name not in outputs:
        raise DerivationError(
            drv_path,
            f"derivation '{drv_path}' has no output '{name}'",
            f"its outputs are: {', '.join(sorted(outputs))}",
        )
    return outputs[name]


def _missing_graph(store: LocalStore, roots: list[str]) -> nx.DiGraph:
    """Return the graph of the derivations that must be built for ``roots``."""
    from derivations.graph import store_derivation_graph, to_build

    # XXX: a target is built when any of its outputs is missing, even one
    # not asked for, as a derivation builds all its outputs at once.
    graph = store_derivation_graph(store, roots)
    return to_build(store, graph, roots)


# ---------------------------------------------------------------------------
# Running builds in child processes


@dataclass
class _Job:
    """One build or check given to a worker, and how it ended."""

    drv_path: str
    slot: int
    start: float
    outcome: tuple[str, Any] | None = None


@dataclass
class _Worker:
    """A forked worker process: it runs one job at a time, sent over a pipe."""

    pid: int
    requests: int
    """The write end of the pipe the worker reads its jobs from."""
    replies: int
    """The read end of the pipe the worker writes lines and outcomes to."""
    slot: int
    buffer: bytearray = field(default_factory=bytearray)
    job: _Job | None = None


class _Run:
    """The state of one realise: what is running, done, failed."""

    def __init__(
        self,
        store: LocalStore,
        options: BuildOptions,
        jobs: int,
        keep_going: bool,
        reporter: BuildReporter | None,
    ) -> None:
        self.store = store
        self.options = options
        self.jobs = max(1, jobs)
        self.keep_going = keep_going
        self.reporter = reporter
        self.built: list[str] = []
        self.checked: list[CheckOutcome] = []
        self.failed: dict[str, BuildFailure] = {}
        self.not_started: set[str] = set()
        self.selector = selectors.DefaultSelector()
        self.workers: dict[int, _Worker] = {}
        """Workers by slot, started when first needed."""
        self.children: dict[int, _Job] = {}
        """Running jobs by slot."""

    def ok(self) -> bool:
        return not self.failed and not self.not_started

    def start_first_worker(self) -> None:
        """Fork the first worker now, before the graph is loaded.

        It finds the bootstrap interpreter's paths (an ``ldd`` run) and
        imports the builders while this process loads the graph, and it is
        forked from a smaller process, so each fork of its own costs less.
        With more than one job, the paths are found here too, once, for the
        workers forked later.
        """
        self._spawn(0)
        if self.jobs > 1:
            from builders.bootstrap import CACHE_FILE, interpreter_paths

            interpreter_paths(self.store.state_file(*CACHE_FILE))

    def build_graph(self, graph: nx.DiGraph) -> None:
        """Build every node of ``graph``, inputs first, ``jobs`` at a time."""
        waiting = {node: set(graph.successors(node)) for node in graph.nodes}
        ready = sorted(node for node, deps in waiting.items() if not deps)
        for node in ready:
            del waiting[node]
        stopping = False

        while ready or self.children:
            while ready and not stopping and len(self.children) < self.jobs:
                drv_path = ready.pop(0)
                self._start(drv_path, graph.nodes[drv_path]["drv"], rounds=0)
            if not self.children:
                break
            for child in self._wait():
                if child.outcome is not None and child.outcome[0] == "ok":
                    self._succeeded(child)
                    for dependent in graph.predecessors(child.drv_path):
                        deps = waiting.get(dependent)
                        if deps is not None:
                            deps.discard(child.drv_path)
                            if not deps:
                                del waiting[dependent]
                                ready.append(dependent)
                else:
                    self._failed(child)
                    self._fail_with_dependents(graph, child, waiting, ready)
                    stopping = stopping or not self.keep_going
            ready.sort()
        self.not_started.update(ready)
        self.not_started.update(waiting)

    def check_targets(self, drv_paths: list[str], rounds: int) -> None:
        """Check each of ``drv_paths`` ``rounds`` times, ``jobs`` at a time."""
        pending = sorted(drv_paths)
        while pending or self.children:
            while pending and len(self.children) < self.jobs:
                drv_path = pending.pop(0)
                self._start(drv_path, _read_target(self.store, drv_path), rounds)
            for child in self._wait():
                if child.outcome is not None and child.outcome[0] == "ok":
                    self._succeeded(child)
                else:
                    self._failed(child)
                    if not self.keep_going:
                        self.not_started.update(pending)
                        pending = []

    def _succeeded(self, child: _Job) -> None:
        from builders.build import BuildResult, CheckOutcome

        assert child.outcome is not None
        result = child.outcome[1]
        if isinstance(result, BuildResult):
            if result.built:
                self.built.append(child.drv_path)
            elif self.reporter is not None:
                self.reporter.message(
                    f"'{child.drv_path}' was built meanwhile by another process"
                )
            for path in result.outputs.values():
                self.store.add_temp_root(path)
        else:
            assert isinstance(result, CheckOutcome)
            self.checked.append(result)
            if result.skipped and self.reporter is not None:
                self.reporter.message(
                    f"not checking '{child.drv_path}': {result.skipped}"
                )
        if self.reporter is not None:
            self.reporter.build_finished(
                child.drv_path, True, time.monotonic() - child.start
            )

    def _failed(self, child: _Job) -> None:
        failure = self.failed[child.drv_path] = _failure_of(child)
        if self.reporter is not None:
            if failure.kept:
                self.reporter.message(f"note: keeping build directory '{failure.kept}'")
            duration = time.monotonic() - child.start
            self.reporter.build_finished(child.drv_path, False, duration)

    def _fail_with_dependents(
        self,
        graph: nx.DiGraph,
        child: _Job,
        waiting: dict[str, set[str]],
        ready: list[str],
    ) -> None:
        from builders.build import BuildFailure
        from derivations.graph import dependents

        for dependent in sorted(dependents(graph, child.drv_path)):
            if dependent in waiting or dependent in ready:
                waiting.pop(dependent, None)
                if dependent in ready:
                    ready.remove(dependent)
                self.failed[dependent] = BuildFailure(
                    dependent,
                    "dependency",
                    f"dependency failed: '{child.drv_path}'",
                )

    # -- Workers ----------------------------------------------------------------

    def _start(self, drv_path: str, drv: Derivation, rounds: int) -> None:
        """Give an idle worker ``drv`` to build (``rounds`` = 0) or check."""
        slot = min(set(range(self.jobs)) - set(self.children))
        worker = self.workers.get(slot) or self._spawn(slot)
        options = replace(self.options, slot=slot)
        if self.reporter is not None:
            self.reporter.build_started(drv_path, drv.name)
        worker.job = self.children[slot] = _Job(drv_path, slot, time.monotonic())
        # A worker that died is reaped at the end of its replies, failing the job.
        with contextlib.suppress(BrokenPipeError):
            _send(worker.requests, "job", (drv, options, rounds))

    def _spawn(self, slot: int) -> _Worker:
        """Fork the worker of ``slot``; this process must have no thread."""
        requests_read, requests_write = os.pipe2(os.O_CLOEXEC)
        replies_read, replies_write = os.pipe2(os.O_CLOEXEC)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            for worker in self.workers.values():
                os.close(worker.requests)
                os.close(worker.replies)
            os.close(requests_write)
            os.close(replies_read)
            _worker_main(
                self.store, requests_read, replies_write, self.reporter is not None
            )
        os.close(requests_read)
        os.close(replies_write)
        os.set_blocking(replies_read, False)
        worker = self.workers[slot] = _Worker(pid, requests_write, replies_read, slot)
        self.selector.register(replies_read, selectors.EVENT_READ, worker)
        return worker

    def _wait(self) -> list[_Job]:
        """Wait for messages from the workers; return the jobs that ended.

        A reporter with a ``refresh`` method has it called at least every
        :data:`REFRESH_INTERVAL` seconds, so a live display can redraw from
        this thread instead of starting its own.
        """
        refresh = getattr(self.reporter, "refresh", None)
        ended: list[_Job] = []
        events = self.selector.select(REFRESH_INTERVAL if refresh else None)
        if refresh is not None:
            refresh()
        for key, _ in events:
            worker: _Worker = key.data
            if not self._read(worker, ended):
                self._reap(worker, ended)
        return ended

    def _read(self, worker: _Worker, ended: list[_Job]) -> bool:
        """Read what ``worker`` sent; return False at end of file."""
        try:
            data = os.read(worker.replies, 1 << 16)
        except BlockingIOError:
            return True
        if not data:
            return False
        worker.buffer += data
        while len(worker.buffer) >= 4:
            (size,) = struct.unpack(">I", worker.buffer[:4])
            if len(worker.buffer) < 4 + size:
                break
            kind, payload = pickle.loads(bytes(worker.buffer[4 : 4 + size]))
            del worker.buffer[: 4 + size]
            job = worker.job
            assert job is not None, (kind, payload)
            if kind == "line":
                if self.reporter is not None:
                    self.reporter.build_log_line(job.drv_path, payload)
                continue
            job.outcome = (kind, payload)
            worker.job = None
            del self.children[job.slot]
            ended.append(job)
        return True

    def _reap(self, worker: _Worker, ended: list[_Job]) -> None:
        """Forget a worker that exited; its job, if any, failed."""
        self.selector.unregister(worker.replies)
        os.close(worker.replies)
        os.close(worker.requests)
        del self.workers[worker.slot]
        _, status = os.waitpid(worker.pid, 0)
        if worker.job is not None:
            worker.job.outcome = ("died", status)
            del self.children[worker.slot]
            ended.append(worker.job)

    def stop_children(self) -> None:
        """Stop the workers: interrupt the builds still running (after an
        exception), then close every worker's pipe and reap it.

        A worker interrupted by SIGINT kills its sandbox and removes its
        temporary outputs before it exits.
        """
        for worker in self.workers.values():
            if worker.job is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGINT)
        for worker in list(self.workers.values()):
            os.close(worker.requests)
            os.close(worker.replies)
            os.waitpid(worker.pid, 0)
        self.workers.clear()
        self.children.clear()
        self.selector.close()


def _failure_of(child: _Job) -> BuildFailure:
    from builders.build import BuildFailure

    assert child.outcome is not None
    kind, payload = child.outcome
    if kind == "failed":
        assert isinstance(payload, BuildFailure)
        return payload
    return BuildFailure(
        child.drv_path,
        "setup",
        f"its build process died unexpectedly (wait status {payload})",
        hint="this is a bug in pyguix; please report it",
    )


def _worker_main(
    parent_store: LocalStore, requests: int, replies: int, stream_lines: bool
) -> NoReturn:
    """Run the jobs read from ``requests`` one by one, in this forked worker;
    report each one's log lines and outcome on ``replies``; exit at end of file.
    """
    from store.local import LocalStore

    status = 0
    try:
        # The parent's SQLite connection must not be used across the fork.
        store = LocalStore(
            parent_store.store_dir, parent_store.state_dir, parent_store.root
        )
        _prepare_worker(store)
        reader = _FrameReader(requests)
        while (frame := reader.next()) is not None:
            _, (drv, options, rounds) = frame
            _run_job(store, drv, options, rounds, replies, stream_lines)
    except BaseException:  # noqa: BLE001 - interrupted or broken: just exit
        status = 1
    finally:
        os._exit(status)


def _prepare_worker(store: LocalStore) -> None:
    """Do in a new worker what every build needs, before its first job comes:
    import the builders and find the interpreter's paths (cached)."""
    import builders.build  # noqa: F401 - imported for the jobs to come
    from builders.bootstrap import CACHE_FILE, interpreter_paths

    interpreter_paths(store.state_file(*CACHE_FILE))


def _run_job(
    store: LocalStore,
    drv: Derivation,
    options: BuildOptions,
    rounds: int,
    replies: int,
    stream_lines: bool,
) -> None:
    """Build or check ``drv``; send its outcome on ``replies``.

    :raises KeyboardInterrupt: after reporting it, so the worker exits.
    """
    from builders.build import (
        BuildError,
        BuildFailure,
        BuildResult,
        build_derivation,
        check_derivation,
    )

    on_line = (lambda line: _send(replies, "line", line)) if stream_lines else None
    try:
        result: BuildResult | CheckOutcome
        if rounds:
            result = check_derivation(store, drv, options, rounds, on_line)
        else:
            result = build_derivation(store, drv, options, on_line)
        _send(replies, "ok", result)
    except BuildError as error:
        _send(replies, "failed", error.failure)
    except PyguixError as error:
        failure = BuildFailure(drv.path, "setup", error.message, hint=error.hint)
        _send(replies, "failed", failure)
    except Exception as error:  # noqa: BLE001 - reported to the parent
        reason = f"internal error: {type(error).__name__}: {error}"
        _send(replies, "failed", BuildFailure(drv.path, "setup", reason))
    except KeyboardInterrupt:
        _send(replies, "failed", BuildFailure(drv.path, "setup", "interrupted"))
        raise


class _FrameReader:
    """Read whole frames (see the module's documentation) from a blocking fd."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = bytearray()

    def next(self) -> tuple[str, Any] | None:
        """Return the next frame, or ``None`` at end of file."""
        while True:
            if len(self.buffer) >= 4:
                (size,) = struct.unpack(">I", self.buffer[:4])
                if len(self.buffer) >= 4 + size:
                    frame = pickle.loads(bytes(self.buffer[4 : 4 + size]))
                    del self.buffer[: 4 + size]
                    result: tuple[str, Any] = frame
                    return result
            data = os.read(self.fd, 1 << 16)
            if not data:
                return None
            self.buffer += data


def _send(fd: int, kind: str, payload: object) -> None:
    data = pickle.dumps((kind, payload), protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(struct.pack(">I", len(data)) + data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
