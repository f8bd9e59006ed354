"""``pyguix build``: realise derivations, or the objects a Python file defines.

As ``nix-store --realise``/``nix-build`` and ``guix build``: each TARGET is
built if its outputs are missing, and the output paths are printed on
standard output, one per line; progress and logs go to standard error.

**Targets.** A TARGET is a derivation path, optionally with the outputs
wanted (``DRV^out,lib``, ``DRV!out``; all outputs by default), or an output
path whose deriver the store knows.  With ``-f FILE.py``, a TARGET is the
name of a module-level object of that file instead.

**The ``-f FILE.py`` convention.** The file is run as a module.  Each object
it names may be a file-like object (``computed_file``, ``plain_file``, ...),
a monadic value (what ``gexp_to_derivation`` returns), a derivation, a store
path, or a function taking no argument and returning one of those.  Without
TARGET, the names listed in the module's ``pyguix_build_targets`` are built,
or else those in its ``__all__``.  For example::

    from derivations.gexp import gexp
    from derivations.file_like import computed_file

    hello = computed_file("hello", gexp("open($out, 'w').write('hi')"))
    pyguix_build_targets = ["hello"]

Objects are lowered against the store (``derivations.lowering``) and their
derivations realised like any other.  An unchanged file, given the same
TARGETs, is not run again: the evaluation cache
(``derivations.lowering_cache.EvaluationCache``) gives what it lowered to.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

import click

from pyguix.cli import open_store
from store.errors import PyguixError

if TYPE_CHECKING:
    from derivations.derivation import Derivation
    from store.paths import StorePath

__all__ = ["FileTargetError", "command", "load_file_targets"]

logger = logging.getLogger(__name__)

TARGETS_VARIABLE = "pyguix_build_targets"
"""The module-level list naming what ``pyguix build -f FILE`` builds by default."""


class FileTargetError(PyguixError):
    """Report a ``-f FILE`` target that cannot be found or lowered.

    :param file: the Python file.
    :param name: the object's name, if one is concerned.
    """

    def __init__(self, file: str, name: str | None, message: str, hint: str) -> None:
        super().__init__(message, hint)
        self.file = file
        self.name = name


def _load_module(file: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location("pyguix_build_file", file)
    if spec is None or spec.loader is None:
        raise FileTargetError(
            file, None, f"cannot load '{file}' as Python", "give a .py file"
        )
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except PyguixError:
        raise
    except SyntaxError as error:
        raise FileTargetError(
            file,
            None,
            f"build file '{file}' is not valid Python: {error.msg} (line {error.lineno})",
            "fix the syntax error",
        ) from None
    except (Exception, SystemExit) as error:  # noqa: BLE001 - the user's code
        raise _user_failure(file, None, f"loading build file '{file}'", error) from None
    return module


def _user_failure(
    file: str, name: str | None, action: str, error: BaseException
) -> FileTargetError:
    """Return the error for the user's code failing (or exiting) in ``action``."""
    from pyguix.user_code import describe_failure

    return FileTargetError(
        file,
        name,
        f"{action} failed{describe_failure(file, error)}",
        "fix the file; run with PYGUIX_DEBUG=1 to see the whole trace",
    )


def _default_names(file: str, module: ModuleType) -> list[str]:
    names = getattr(module, TARGETS_VARIABLE, None) or getattr(module, "__all__", None)
    if not names:
        raise FileTargetError(
            file,
            None,
            f"'{file}' names nothing to build",
            f"give TARGET names, or list them in '{TARGETS_VARIABLE}' or '__all__'",
        )
    return [str(name) for name in names]


def _lower(store: Any, file: str, name: str, value: Any) -> Derivation | StorePath:
    """Lower ``value``, the object ``name`` of ``file``, to a derivation or path."""
    from derivations.derivation import Derivation
    from derivations.gexp import compiler_for
    from derivations.lowering import lower_object
    from derivations.monad import MValue, run_with_store
    from store.paths import StorePath

    for _ in range(3):
        if isinstance(value, Derivation | StorePath):
            return value
        if isinstance(value, MValue):
            value = run_with_store(store, value)
        elif compiler_for(value) is not None:
            value = run_with_store(store, lower_object(value))
        elif callable(value):
            value = _call(file, name, value)
        else:
            break
    raise FileTargetError(
        file,
        name,
        f"'{name}' in '{file}' is not something to build ({type(value).__name__})",
        "give a file-like object, a monadic value, a derivation or a function "
        "returning one",
    )


def _call(file: str, name: str, function: Any) -> Any:
    """Call ``function``, the object ``name`` of ``file``, for what to build."""
    try:
        return function()
    except PyguixError:
        raise
    except (Exception, SystemExit) as error:  # noqa: BLE001 - the user's code
        raise _user_failure(
            file, name, f"calling '{name}' of '{file}'", error
        ) from None


def load_file_targets(
    store: Any, file: str, names: Sequence[str]
) -> list[Derivation | StorePath]:
    """Run ``file`` and lower the objects ``names`` (default: see the module's
    documentation) against ``store``."""
    module = _load_module(file)
    lowered = []
    for name in names or _default_names(file, module):
        if not hasattr(module, name):
            raise FileTargetError(
                file,
                name,
                f"'{file}' defines no '{name}'",
                "name a module-level object of the file",
            )
        lowered.append(_lower(store, file, name, getattr(module, name)))
    return lowered


def _target_of_path(store: Any, text: str) -> tuple[str, tuple[str, ...] | None]:
    """Return the derivation and outputs a TARGET on the command line names."""
    from builders.scheduler import parse_target
    from derivations.derivation import DerivationError

    path, names = parse_target(text)
    if path.endswith(".drv"):
        return path, names
    store.parse_path(path)
    deriver = store.query_deriver(path) if store.is_valid(path) else None
    if not deriver:
        raise DerivationError(
            path,
            f"'{path}' is neither a derivation nor a valid output with a known deriver",
            "give a .drv path (see 'pyguix derivation show')",
        )
    outputs = store.query_derivation_outputs(deriver)
    chosen = tuple(n for n, p in outputs.items() if p == path) or None
    return deriver, chosen


Item = tuple[str, tuple[str, ...] | None] | str
"""A derivation with the outputs wanted, or a store path given as it is."""


def _resolve_targets(
    store: Any, file: str | None, targets: Sequence[str]
) -> list[Item]:
    """Return what the command line names, in order."""
    if file is None:
        if not targets:
            raise click.UsageError("give at least one TARGET, or -f FILE")
        return [_target_of_path(store, text) for text in targets]
    return _file_targets(store, file, targets)


def _file_targets(store: Any, file: str, targets: Sequence[str]) -> list[Item]:
    """Return the items ``-f file`` names, from the evaluation cache if it
    knows them (see :mod:`derivations.lowering_cache`), else by running
    ``file`` and lowering; log how many objects were lowered."""
    from derivations.lowering_cache import cached_evaluation

    def evaluate() -> list[tuple[str, str]]:
        from derivations.derivation import Derivation

        return [
            ("drv", item.path) if isinstance(item, Derivation) else ("path", str(item))
            for item in load_file_targets(store, file, targets)
        ]

    result, cached = cached_evaluation(store, "build", file, targets, evaluate)
    if cached:
        logger.info("0 objects lowered, evaluation of '%s' from cache", file)
    else:
        _report_lowering(store)
    return [(path, None) if kind == "drv" else path for kind, path in result]


def _dry_run(store: Any, drvs: list[tuple[str, tuple[str, ...] | None]]) -> None:
    from derivations.graph import store_derivation_graph, to_build

    roots = [path for path, _ in drvs]
    graph = to_build(store, store_derivation_graph(store, roots), roots)
    nodes = sorted(graph.nodes)
    if not nodes:
        click.echo("nothing to build", err=True)
        return
    click.echo(f"these {len(nodes)} derivations would be built:", err=True)
    for node in nodes:
        click.echo(f"  {node}", err=True)


def _add_roots(store: Any, link: str, outputs: list[tuple[int, str, str]]) -> None:
    """Make ``link`` (``link-2``, ``link-lib``, ...) indirect roots, as nix-build."""
    for number, name, path in outputs:
        suffix = "" if number == 0 else f"-{number + 1}"
        if name != "out":
            suffix += f"-{name}"
        store.add_permanent_root(link + suffix, path)


@click.command("build")
@click.option(
    "-f",
    "--file",
    "file",
    type=click.Path(exists=True, dir_okay=False),
    help="Build the objects this Python file defines (see above).",
)
@click.option(
    "-d",
    "--derivation",
    "derivations_only",
    is_flag=True,
    help="Print the derivation paths; build nothing.",
)
@click.option("-n", "--dry-run", is_flag=True, help="Show what would be built.")
@click.option(
    "-r",
    "--root",
    "root_link",
    metavar="LINK",
    help="Make LINK a GC root to the outputs (LINK-2, LINK-lib...).",
)
@click.option(
    "-j",
    "--max-jobs",
    "jobs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Builds to run at once.",
)
@click.option(
    "-c",
    "--cores",
    type=click.IntRange(min=0),
    default=0,
    help="CPU cores each build may use (NIX_BUILD_CORES); 0: all.",
)
@click.option(
    "-k",
    "--keep-going",
    is_flag=True,
    help="Build what does not depend on a failed build.",
)
@click.option(
    "-K",
    "--keep-failed",
    is_flag=True,
    help="Keep the build directories of failed builds.",
)
@click.option(
    "--check",
    is_flag=True,
    help="Rebuild valid targets and compare them with their outputs.",
)
@click.option(
    "--rounds",
    type=click.IntRange(min=1),
    default=1,
    help="Build each target N times in all, comparing the results.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Kill a build after S seconds.",
)
@click.option(
    "--max-silent-time",
    type=click.FloatRange(min=0, min_open=True),
    help="Kill a build silent for S seconds.",
)
@click.option(
    "--sandbox-path",
    "sandbox_paths",
    multiple=True,
    metavar="PATH|TARGET=SOURCE[?]",
    help="Bind a host path read-only into every build (Nix's sandbox-paths).",
)
@click.option(
    "-L",
    "--print-build-logs",
    is_flag=True,
    help="Show the builds' logs on standard error.",
)
@click.argument("targets", nargs=-1)
@click.pass_context
def command(
    ctx: click.Context,
    file: str | None,
    derivations_only: bool,
    dry_run: bool,
    root_link: str | None,
    jobs: int,
    cores: int,
    keep_going: bool,
    keep_failed: bool,
    check: bool,
    rounds: int,
    timeout: float | None,
    max_silent_time: float | None,
    sandbox_paths: tuple[str, ...],
    print_build_logs: bool,
    targets: tuple[str, ...],
) -> None:
    """Build TARGETs and print their output paths, one per line.

    A TARGET is a derivation path (DRV, DRV^out,lib or DRV!out) or an output
    path.  With -f FILE.py, a TARGET is the name of a module-level object of
    FILE: a file-like object, a monadic value (as gexp_to_derivation
    returns), a derivation, or a function of no argument returning one.
    Without TARGET, -f builds the names listed in FILE's
    'pyguix_build_targets', or else in its '__all__'.

    Exit status: 0, or 100 when a build failed (101 timed out, 102 hash
    mismatch, 104 not deterministic under --check), 1 for other errors.
    """
    store = open_store(ctx)
    extra_paths = _sandbox_paths(store, sandbox_paths)
    items = _resolve_targets(store, file, targets)
    drvs = [item for item in items if not isinstance(item, str)]

    if derivations_only:
        for path, _ in drvs:
            click.echo(path)
        return
    if dry_run:
        _dry_run(store, drvs)
        return

    from builders.progress import make_reporter
    from builders.scheduler import realise

    result = realise(
        store,
        drvs,
        jobs=jobs,
        keep_going=keep_going,
        cores=cores,
        check=check,
        rounds=rounds,
        keep_failed=keep_failed,
        timeout=timeout,
        max_silent_time=max_silent_time,
        sandbox_paths=extra_paths,
        reporter=make_reporter(sys.stderr, verbose=print_build_logs),
    )

    printed = []
    for number, item in enumerate(items):
        if isinstance(item, str):
            printed.append((number, "out", item))
            continue
        outputs = result.outputs[item[0]]
        for name in item[1] or sorted(outputs):
            printed.append((number, name, outputs[name]))
    if root_link:
        _add_roots(store, root_link, printed)
    sys.stdout.write("".join(f"{path}\n" for _, _, path in printed))


def _sandbox_paths(store: Any, specs: tuple[str, ...]) -> tuple[Any, ...]:
    """Parse the ``--sandbox-path`` entries (checked before anything runs)."""
    if not specs:
        return ()
    from builders.sandbox_paths import SandboxPath

    return tuple(SandboxPath.from_spec(spec, store.store_dir) for spec in specs)


def _report_lowering(store: Any) -> None:
    """Log how many objects ``-f FILE`` lowered and how many the cache knew."""
    from derivations.lowering import lowering_cache, lowering_stats

    stats = lowering_stats(store)
    if stats.damaged:
        logger.warning(
            "warning: ignored the damaged lowering cache '%s'",
            lowering_cache(store).path,
        )
    logger.info("%d objects lowered, %d from cache", stats.misses, stats.hits)
