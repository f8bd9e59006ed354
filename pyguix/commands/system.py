"""``pyguix system``: build operating systems and run them in containers.

As ``guix system`` (``guix/scripts/system.scm``), for an operating system
given by exactly one of (see :mod:`system.operating_system`):

``FILE``
    an OS file: a Python file defining ``operating_system`` and optionally
    ``mappings``;
``-e EXPRESSION``
    an OS expression, as ``guix system -e '(@ (gnu system examples) os)'``:
    ``MODULE:EXPR`` evaluates the Python expression EXPR in the names of
    the importable MODULE (``-e fixtures.os:operating_system``), and a bare
    EXPR is evaluated with the public names of the system modules
    (``-e 'OperatingSystem(host_name="tiny")'``).  An expression gives no
    mappings: host files come from ``--share`` and ``--expose``.

``-L DIR`` (repeatable) puts DIR first in the module search path for both;
the module of an expression is also searched in the current directory,
last (so that a stray file there cannot hide an installed module).

``pyguix system build FILE``
    builds the system directory and prints its path.

``pyguix system container FILE``
    builds the ``run-container`` script of the containerized system
    (:func:`system.container_script.container_script`) and prints its store
    path, one line on standard output, as ``guix system container``.
    ``--share``/``--expose`` are baked into the script, as Guix does, a
    relative source made absolute first; mappings onto ``/``, the store,
    ``/proc``, ``/sys`` or ``/dev``, or two onto one target, are refused
    (:func:`system.file_systems.check_mappings`), and
    ``-N``/``--network`` makes it share the host's network.  ``--run`` then
    boots it in the foreground: the mappings of the command line are then
    given to the script at run time instead of being baked in, so the same
    script serves every run; the exit status is the container's.

``pyguix system extension-graph FILE``
    writes the service extension graph (an edge from each service to each
    service it extends, down to the ``system`` service), as
    ``guix system extension-graph``.

``pyguix system init-graph FILE`` (or ``shepherd-graph``, Guix's name)
    writes the graph of the init services (an edge from each to those
    providing its requirements), as ``guix system shepherd-graph``.

Both write Graphviz's DOT language on standard output, or with
``--format json`` ``{"name", "nodes": [{"id", "label"}], "edges":
[{"from", "to"}]}``, sorted (see :mod:`system.graphs`); they build nothing,
open no store and need no root file system.

``sys.exit()`` in an OS file or expression is reported as any other
failure of it (``SystemExit: CODE``, exit status 1).

With ``--check``, every derivation of the closure (not only the system's
or the script's) is rebuilt and compared with its valid outputs, as
``pyguix build --check`` does for the derivations it is given; the command
fails with status 104 if one differs.

An unchanged OS file, or the same expression run from the same directory
with the same ``-L``, is not evaluated again while the options and every
file the evaluation read are the same: the evaluation cache
(``derivations.lowering_cache.EvaluationCache``) gives the derivation it
lowered to, and ``-v`` says so.

Progress goes to standard error; with a chroot store (global ``--root``)
the script knows where the store physically is (see
:mod:`system.container_script`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import click

from derivations.lowering_cache import (
    cached_evaluation,
    cached_expression_evaluation,
)
from pyguix.cli import open_store
from store.errors import PyguixError

if TYPE_CHECKING:
    from system.file_systems import FileSystemMapping
    from system.operating_system import OperatingSystem

__all__ = ["command", "load_os_expression", "load_os_file"]

logger = logging.getLogger(__name__)


def load_os_file(file: str) -> tuple[OperatingSystem, tuple[FileSystemMapping, ...]]:
    """Load the OS file ``file``, turning any failure into one clear error.

    :raises OperatingSystemFileError: the file is missing, defines no
        ``operating_system``, or raised while it ran (the error names its
        type, message and the line of ``file`` where it happened).
    """
    from pyguix.user_code import describe_failure
    from system.operating_system import OperatingSystemFileError, load_operating_system

    try:
        return load_operating_system(file)
    except PyguixError:
        raise
    except SyntaxError as error:
        raise OperatingSystemFileError(
            file,
            f"operating system file '{file}' is not valid Python: "
            f"{error.msg} (line {error.lineno})",
            "fix the syntax error",
        ) from None
    except (Exception, SystemExit) as error:  # noqa: BLE001 - the user's code failed
        # SystemExit too: sys.exit() in the file must not end pyguix quietly.
        raise OperatingSystemFileError(
            file,
            f"loading operating system file '{file}' failed"
            f"{describe_failure(file, error)}",
            "fix the file; run with PYGUIX_DEBUG=1 to see the whole trace",
        ) from None


def load_os_expression(expression: str) -> OperatingSystem:
    """Evaluate the OS expression ``expression``, searching its module in
    :data:`sys.path`, then in the current directory.

    :raises OperatingSystemExpressionError: see
        :func:`system.operating_system.evaluate_operating_system`.
    """
    from system.operating_system import evaluate_operating_system

    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    return evaluate_operating_system(expression)


EMPTIED_AT_BOOT = ("/tmp", "/run", "/var/run")
"""Directories a system's boot empties (see :func:`system.activation.cleanup`)."""


def _mappings(shares: Sequence[str], exposes: Sequence[str]) -> list[FileSystemMapping]:
    """Return the mappings of ``--share`` (writable) and ``--expose`` options.

    :raises PyguixError: a spec is malformed, or a writable mapping targets
        a directory the boot empties, which would empty the host directory
        too.
    """
    from system.file_systems import specification_to_file_system_mapping

    mappings = [
        *(specification_to_file_system_mapping(spec, True) for spec in shares),
        *(specification_to_file_system_mapping(spec, False) for spec in exposes),
    ]
    for mapping in mappings:
        target = mapping.target.rstrip("/") + "/"
        if mapping.writable and any(
            target.startswith(d + "/") for d in EMPTIED_AT_BOOT
        ):
            raise PyguixError(
                f"'{mapping.source}' would be mounted writable at "
                f"'{mapping.target}', which the boot empties",
                f"map it elsewhere, as '{mapping.source}=/exchange'",
            )
    return mappings


def _resolved_spec(spec: str) -> str:
    """Return the ``SRC[=DST]`` ``spec`` with a relative ``SRC`` made
    absolute against the current directory, so that the script, which may
    run elsewhere, binds what was meant (``SRC`` alone keeps its target)."""
    source, equal, target = spec.partition("=")
    if not source or os.path.isabs(source):
        return spec
    return f"{os.path.abspath(source)}={target if equal else source}"


def _source(
    ctx: click.Context,
    file: str | None,
    expression: str | None,
    load_path: Sequence[str],
) -> tuple[str | None, str | None]:
    """Check that exactly one of ``file`` and ``expression`` is given, put
    the ``-L`` directories first in :data:`sys.path`, and return both.

    :raises click.UsageError: both or neither are given.
    """
    if file is not None and expression is not None:
        raise click.UsageError(
            f"both FILE '{file}' and -e '{expression}' given: give only one", ctx
        )
    if file is None and expression is None:
        raise click.UsageError(
            "no operating system given: give an OS FILE or -e EXPR", ctx
        )
    sys.path[:0] = [os.path.abspath(directory) for directory in load_path]
    return file, expression


def _load(
    source: tuple[str | None, str | None],
) -> tuple[OperatingSystem, tuple[FileSystemMapping, ...]]:
    """Return the OS of ``source`` (see :func:`_source`) and the mappings
    of its file (none for an expression)."""
    file, expression = source
    if expression is not None:
        return load_os_expression(expression), ()
    assert file is not None
    return load_os_file(file)


def _evaluate(
    ctx: click.Context,
    source: tuple[str | None, str | None],
    options: Sequence[str],
    lower: Callable[..., Any],
) -> tuple[Any, str]:
    """Open the store and return it with the derivation path of ``lower``
    applied to the OS of ``source`` (an OS file or an OS expression, see
    :func:`_source`).  For a file, the evaluation cache may know it (keyed
    on the file, ``options`` and what the evaluation read); otherwise the
    OS is loaded and lowered."""
    store = open_store(ctx)
    file, expression = source

    def evaluate() -> list[tuple[str, str]]:
        from derivations.monad import run_with_store

        os_, file_mappings = _load(source)
        drv = run_with_store(store, lower(os_, file_mappings))
        return [("drv", drv.path)]

    if file is None:
        assert expression is not None
        result, cached = cached_expression_evaluation(
            store, "system", expression, options, evaluate
        )
    else:
        result, cached = cached_evaluation(store, "system", file, options, evaluate)
    _report_lowering(store, file or expression, cached)
    return store, result[0][1]


def _report_lowering(store: Any, source: str | None, cached: bool) -> None:
    """Log how many objects were lowered and how many the caches knew."""
    if cached:
        logger.info("0 objects lowered, evaluation of '%s' from cache", source)
        return

    from derivations.lowering import lowering_stats

    stats = lowering_stats(store)
    logger.info("%d objects lowered, %d from cache", stats.misses, stats.hits)


def _build(
    store: Any, drv_path: str, *, jobs: int, check: bool, dry_run: bool
) -> str | None:
    """Build ``drv_path`` (or show what would be built); return its output."""
    if dry_run:
        _show_plan(store, drv_path)
        return None
    if not check:
        valid = _valid_output(store, drv_path)
        if valid is not None:
            click.echo("nothing to build", err=True)
            return valid

    from builders.progress import make_reporter
    from builders.scheduler import realise

    targets = _closure_derivations(store, drv_path) if check else [drv_path]
    result = realise(
        store, targets, jobs=jobs, check=check, reporter=make_reporter(sys.stderr)
    )
    if check:
        _report_checks(result.checked)
    if not result.built and not check:
        click.echo("nothing to build", err=True)
    return str(result.outputs[drv_path]["out"])


def _valid_output(store: Any, drv_path: str) -> str | None:
    """Return the ``out`` output of ``drv_path`` if the database knows its
    outputs and all are valid (the no-op case, in two queries)."""
    outputs = store.query_derivation_outputs(drv_path)
    if "out" not in outputs:
        return None
    if len(store.query_valid(outputs.values())) != len(outputs):
        return None
    out: str = outputs["out"]
    return out


def _closure_derivations(store: Any, drv_path: str) -> list[str]:
    """Return every derivation ``drv_path`` needs, itself included, sorted:
    ``--check`` rebuilds the whole closure, not only the top one."""
    from derivations.graph import store_derivation_graph

    return sorted(store_derivation_graph(store, [drv_path]).nodes)


def _report_checks(checked: Sequence[Any]) -> None:
    """Say how many derivations were rebuilt bit-identical (fixed-output
    ones are not rebuilt: their hash is their check)."""
    rebuilt = [c for c in checked if c.skipped is None]
    click.echo(
        f"checked {len(rebuilt)} derivations: every rebuild is bit-identical",
        err=True,
    )


def _show_plan(store: Any, drv_path: str) -> None:
    from derivations.graph import store_derivation_graph, to_build

    graph = to_build(store, store_derivation_graph(store, [drv_path]), [drv_path])
    nodes = sorted(graph.nodes)
    if not nodes:
        click.echo("nothing to build", err=True)
        return
    click.echo(f"these {len(nodes)} derivations would be built:", err=True)
    for node in nodes:
        click.echo(f"  {node}", err=True)


_jobs_option = click.option(
    "-j",
    "--max-jobs",
    "jobs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Builds to run at once.",
)


_source_options = [
    click.argument("file", required=False),
    click.option(
        "-e",
        "--expression",
        metavar="EXPR",
        help="Use the OS that EXPR (MODULE:EXPR or a bare EXPR) evaluates to.",
    ),
    click.option(
        "-L",
        "--load-path",
        "load_path",
        multiple=True,
        metavar="DIR",
        type=click.Path(file_okay=False),
        help="Search DIR first for modules (repeatable).",
    ),
]


def _source_arguments(function: Callable[..., Any]) -> Callable[..., Any]:
    """Add FILE, ``-e`` and ``-L``, which give the operating system."""
    for decorator in reversed(_source_options):
        function = decorator(function)
    return function


@click.group("system")
def command() -> None:
    """Build operating systems and run them in containers.

    Give the operating system as exactly one of:

    \b
    FILE     a Python file defining 'operating_system' (an OperatingSystem)
             and optionally 'mappings' (host files a container of it gets);
    -e EXPR  a Python expression giving an OperatingSystem, as guix system -e:
             MODULE:EXPR evaluates EXPR in the names of the importable
             MODULE (-e fixtures.os:operating_system); a bare EXPR can use
             the public names of the system modules and replace
             (-e 'OperatingSystem(host_name="tiny")').  It gives no
             mappings.  MODULE is searched in -L DIR, the installed
             modules, then the current directory.
    """


@command.command("build")
@_source_arguments
@click.option(
    "-d",
    "--derivation",
    "derivation_only",
    is_flag=True,
    help="Print the derivation path; build nothing.",
)
@click.option("-n", "--dry-run", is_flag=True, help="Show what would be built.")
@click.option(
    "-r",
    "--root",
    "root_link",
    metavar="LINK",
    help="Make LINK a GC root to the system.",
)
@click.option("--check", is_flag=True, help="Rebuild and compare with the outputs.")
@_jobs_option
@click.pass_context
def build_command(
    ctx: click.Context,
    file: str | None,
    expression: str | None,
    load_path: tuple[str, ...],
    derivation_only: bool,
    dry_run: bool,
    root_link: str | None,
    check: bool,
    jobs: int,
) -> None:
    """Build the system directory of FILE (or -e EXPR) and print its path."""
    source = _source(ctx, file, expression, load_path)

    def lower(os_: OperatingSystem, _: Any) -> Any:
        from system.operating_system import operating_system_derivation

        return operating_system_derivation(os_)

    store, drv_path = _evaluate(ctx, source, ["build"], lower)
    _finish(store, drv_path, derivation_only, dry_run, root_link, check, jobs)


def _finish(
    store: Any,
    drv_path: str,
    derivation_only: bool,
    dry_run: bool,
    root_link: str | None,
    check: bool,
    jobs: int,
) -> str | None:
    """Print the derivation, or build it and print its output; return the
    output path when built."""
    if derivation_only:
        click.echo(drv_path)
        return None
    path = _build(store, drv_path, jobs=jobs, check=check, dry_run=dry_run)
    if path is None:
        return None
    if root_link:
        store.add_permanent_root(root_link, path)
    click.echo(path)
    return path


@command.command("container")
@_source_arguments
@click.option(
    "--share",
    "shares",
    multiple=True,
    metavar="SPEC",
    help="Bind SRC[=DST] writable in the container (repeatable).",
)
@click.option(
    "--expose",
    "exposes",
    multiple=True,
    metavar="SPEC",
    help="Bind SRC[=DST] read-only in the container (repeatable).",
)
@click.option(
    "-N",
    "--network",
    is_flag=True,
    help="Share the host's network (no network namespace).",
)
@click.option(
    "-d",
    "--derivation",
    "derivation_only",
    is_flag=True,
    help="Print the script's derivation path; build nothing.",
)
@click.option(
    "-r",
    "--root",
    "root_link",
    metavar="LINK",
    help="Make LINK a GC root to the script.",
)
@click.option("-n", "--dry-run", is_flag=True, help="Show what would be built.")
@click.option("--check", is_flag=True, help="Rebuild and compare with the outputs.")
@click.option(
    "--run",
    "run_it",
    is_flag=True,
    help="Boot the container in the foreground once built.",
)
@_jobs_option
@click.pass_context
def container_command(
    ctx: click.Context,
    file: str | None,
    expression: str | None,
    load_path: tuple[str, ...],
    shares: tuple[str, ...],
    exposes: tuple[str, ...],
    network: bool,
    derivation_only: bool,
    root_link: str | None,
    dry_run: bool,
    check: bool,
    run_it: bool,
    jobs: int,
) -> None:
    """Build the run-container script of FILE (or -e EXPR); print its path.

    Run the script (as root, to map 65536 ids) to boot the system; it takes
    --share, --expose and --pid-file too.  With --run, boot it now, passing
    --share and --expose at run time; the exit status is the container's.
    """

    source = _source(ctx, file, expression, load_path)
    shares = tuple(_resolved_spec(spec) for spec in shares)
    exposes = tuple(_resolved_spec(spec) for spec in exposes)

    def lower(os_: OperatingSystem, file_mappings: tuple[Any, ...]) -> Any:
        from system.container_script import container_script

        mappings = _mappings(shares, exposes)
        baked = [*file_mappings] if run_it else [*file_mappings, *mappings]
        return _checked(
            [*mappings, *file_mappings], container_script(os_, baked, network)
        )

    # Resolved sources, so that the cache never answers for another directory.
    options = [
        "container",
        *(f"--share={spec}" for spec in shares),
        *(f"--expose={spec}" for spec in exposes),
        f"--network={network}",
        f"--run={run_it}",
    ]
    store, drv_path = _evaluate(ctx, source, options, lower)
    path = _finish(store, drv_path, derivation_only, dry_run, root_link, check, jobs)
    if run_it and path is not None:
        _exec_script(store.physical(path), shares, exposes)


def _checked(mappings: Sequence[FileSystemMapping], script: Any) -> Any:
    """Return, monadically, the derivation of ``script`` once ``mappings``
    (those given at run time with ``--run`` included) pass
    :func:`system.file_systems.check_mappings` with the store's directory."""
    from derivations.monad import current_store, monadic
    from system.file_systems import check_mappings

    @monadic
    def run() -> Any:
        store = yield current_store()
        check_mappings(mappings, store.store_dir)
        drv = yield script
        return drv

    return run()


def _exec_script(script: str, shares: Sequence[str], exposes: Sequence[str]) -> None:
    """Replace this process with ``script``, giving it the mappings."""
    argv = [script]
    argv += [f"--share={spec}" for spec in shares]
    argv += [f"--expose={spec}" for spec in exposes]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(script, argv)


_graph_format_option = click.option(
    "--format",
    "format_",
    type=click.Choice(["dot", "json"]),
    default="dot",
    show_default=True,
    help="dot for Graphviz; json for {name, nodes, edges}.",
)


def _write_graph(graph: Any, format_: str) -> None:
    """Write the service graph ``graph`` on standard output as ``format_``."""
    from system import graphs

    if format_ == "dot":
        click.echo(graphs.to_dot(graph), nl=False)
    else:
        click.echo(json.dumps(graphs.to_json(graph), indent=2))


def _graph_command(name: str, builder: str, help_: str) -> click.Command:
    """Return the command ``name`` writing the graph that the function
    ``builder`` of :mod:`system.graphs` gives for the OS, documented by
    ``help_`` (its first sentence is the short help)."""

    @click.pass_context
    def run(
        ctx: click.Context,
        file: str | None,
        expression: str | None,
        load_path: tuple[str, ...],
        format_: str,
    ) -> None:
        from system import graphs

        os_, _ = _load(_source(ctx, file, expression, load_path))
        _write_graph(getattr(graphs, builder)(os_), format_)

    return click.command(name, help=help_)(_source_arguments(_graph_format_option(run)))


_INIT_GRAPH_HELP = """Write the graph of the init services of FILE (or -e EXPR).

An edge goes from each init service to those providing what it requires."""

command.add_command(
    _graph_command(
        "extension-graph",
        "extension_graph",
        """Write the service extension graph of FILE (or -e EXPR).

        An edge goes from each service to each service it extends, every path
        ending at the system service; 'dot -Tsvg' draws it.""",
    )
)
command.add_command(_graph_command("init-graph", "init_graph", _INIT_GRAPH_HELP))
command.add_command(
    _graph_command(
        "shepherd-graph",
        "init_graph",
        f"Same as init-graph, under Guix's name.\n\n{_INIT_GRAPH_HELP}",
    )
)
