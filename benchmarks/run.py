"""Run every benchmark and print one markdown table of ratios.

Each row is the ratio of two measurements made in this run, A/B of their
median wall-clock seconds (above 1: A is slower), with the raw figures:
per-derivation milliseconds for the DAGs, the peak resident set of each
process (``ru_maxrss``, builders included) and the number of runs.  Above
the table: the machine, the date and the command.  Rows:

* ``pyguix system container fixtures/os.py``: warm/cold and
  incremental/cold, with the number of derivations each built
  (``benchmarks/system.py``);
* synthetic layered DAGs (``benchmarks/dags.py``) of each size: evaluation
  (pyguix creating the ``.drv`` files / ``nix-instantiate``), cold build
  (``pyguix build`` / ``nix-store --realise``, Nix in its sandbox, then
  without it), no-op realise (all valid, a new process each);
* lowering 1,000 file-like objects again, warm (the persistent lowering
  cache) against cold (``benchmarks/lowering.py``);
* the builders' start-up (``python3 -S`` / ``/bin/sh``), which the cold
  builds pay once a derivation;
* NAR hashing of a ~100 MB tree (pyguix / hashlib, pyguix / nix-hash) and
  ``pyguix store add`` / ``nix-store --add``, cold and valid
  (``benchmarks/nar_hash.py``, ``benchmarks/store_add.py``).

Nix's columns appear when ``nix-store`` is installed and ``--no-nix`` is
not given.  ``--smoke`` (CI) measures the DAG of 100 only, once, on small
trees, and lets Nix evaluate only (no Nix builds).  Timings are printed, never
asserted.

Usage: ``python3 benchmarks/run.py [--smoke] [--runs N] [--sizes
100,1000,10000] [--build-cap N] [--no-nix]``.
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

from benchmarks._common import (  # noqa: E402
    Measure,
    machine,
    nix_installed,
    run_process,
    summarise,
)
from benchmarks.dags import DagFigures, measure_dag  # noqa: E402
from benchmarks.system import SystemFigures, measure_system  # noqa: E402

__all__ = ["Row", "main"]

MIB = 1024 * 1024
DASH = "—"


@dataclass(frozen=True)
class Row:
    """One line of the table: A against B, and what the figures mean."""

    name: str
    a: Measure | None
    b: Measure | None
    per: int = 0
    note: str = ""


def _seconds(measure: Measure | None) -> str:
    return DASH if measure is None else f"{measure.seconds:.3f}"


def _per(measure: Measure | None, count: int) -> str:
    if measure is None or not count:
        return DASH
    return f"{measure.seconds / count * 1e3:.2f}"


def _rss(measure: Measure | None) -> str:
    if measure is None or not measure.max_rss_kib:
        return DASH
    return f"{measure.max_rss_kib / 1024:.0f}"


def _ratio(row: Row) -> str:
    if row.a is None or row.b is None or not row.b.seconds:
        return DASH
    return f"**{row.a.seconds / row.b.seconds:.2f}**"


def table(rows: Sequence[Row]) -> str:
    """Render ``rows`` as a markdown table."""
    lines = [
        "| measurement (A / B) | A s | B s | A/B | A ms/drv | B ms/drv "
        "| A max RSS MiB | B max RSS MiB | runs | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        runs = max((m.runs for m in (row.a, row.b) if m is not None), default=0)
        cells = [
            row.name, _seconds(row.a), _seconds(row.b), _ratio(row),
            _per(row.a, row.per), _per(row.b, row.per), _rss(row.a), _rss(row.b),
            str(runs), row.note,
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# -- Rows of each benchmark ---------------------------------------------------


def system_rows(figures: SystemFigures) -> list[Row]:
    """Warm and incremental container builds against the cold one."""
    return [
        Row("system container: warm / cold", figures.warm, figures.cold,
            note=f"cold built {figures.cold_built} derivations; warm: "
            "all valid, a new process"),
        Row("system container: incremental / cold", figures.incremental, figures.cold,
            note=f"one leaf changed (hello's greeting): "
            f"{figures.incremental_built} derivations rebuilt"),
        Row("system container: warm / python3 -c pass", figures.warm,
            figures.interpreter,
            note="the same interpreter and site packages doing nothing"),
    ]  # fmt: skip


def dag_rows(figures: DagFigures, cap: int) -> list[Row]:
    """Evaluation, cold build and no-op rows of one DAG size."""
    m, n = figures.measures, figures.size
    name = f"DAG {n:,}"
    rows = [
        Row(f"{name}: evaluation, pyguix / nix-instantiate",
            m.get("pyguix eval"), m.get("nix eval"), n,
            "create and write every .drv, a new process"),
    ]  # fmt: skip
    if n > cap:
        note = f"not measured: cold builds capped at {cap:,} derivations (--build-cap)"
        rows.append(Row(f"{name}: cold build and no-op realise", None, None, n, note))
        return rows
    rows += [
        Row(f"{name}: cold build, pyguix / Nix with sandbox",
            m.get("pyguix cold"), m.get("nix cold sandbox"), n,
            "; ".join(["-j1; builders: python3 -S (pyguix), /bin/sh (Nix)",
                       *figures.notes])),
        Row(f"{name}: cold build, /bin/sh builders, pyguix / Nix with sandbox",
            m.get("pyguix cold sh"), m.get("nix cold sandbox"), n,
            "-j1; the same builders on both sides, the host's /bin /lib "
            "/lib64 /usr bound into both sandboxes"),
        Row(f"{name}: cold build, pyguix / Nix without sandbox",
            m.get("pyguix cold"), m.get("nix cold no sandbox"), n,
            "Nix's setting on this machine (sandbox = false)"),
        Row(f"{name}: no-op realise, pyguix build / nix-store --realise",
            m.get("pyguix no-op"), m.get("nix no-op"), n,
            "all outputs valid, a new process"),
    ]  # fmt: skip
    return rows


def lowering_rows(smoke: bool, runs: int) -> list[Row]:
    """Lowering a configuration of file-like objects again: warm / cold."""
    import tempfile

    from benchmarks import lowering

    size = 100 if smoke else 1000
    cold: list[dict[str, float]] = []
    warm: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="pyguix-lowering-") as temp:
        store = Path(temp, "root")
        for _ in range(runs):
            lowering.remove(store)
            cold.append(lowering.measure(store, size))
            warm.append(lowering.measure(store, size))
    ratio = lowering.median(warm, "lower") / lowering.median(cold, "lower")
    return [
        Row(f"evaluation of {size:,} file-like objects: warm / cold",
            Measure(lowering.median(warm, "process"), 0, runs),
            Measure(lowering.median(cold, "process"), 0, runs),
            note=f"a new process each; warm: the persistent lowering cache; "
            f"lowering alone: {ratio:.3f}"),
    ]  # fmt: skip


def builder_rows(runs: int) -> list[Row]:
    """The start-up of each side's builder program, paid once a build."""
    python = [sys.executable, "-S", "-c", "pass"]
    shell = ["/bin/sh", "-c", "true"]
    a = summarise([run_process(python) for _ in range(runs)])
    b = summarise([run_process(shell) for _ in range(runs)])
    return [Row("builder start-up: python3 -S / /bin/sh", a, b,
                note="context for the cold builds")]  # fmt: skip


def _measure(results: Mapping[str, float], name: str, runs: int) -> Measure | None:
    """Wrap the median ``results[name]`` of a script measuring in process."""
    seconds = results.get(name)
    return None if seconds is None else Measure(seconds, 0, runs)


def nar_rows(smoke: bool, runs: int, nix: bool) -> list[Row]:
    """NAR hashing of a tree against hashlib and nix-hash."""
    from benchmarks import nar_hash

    size, results = nar_hash.measure(smoke, runs, nix)
    medians = {name: seconds for name, (seconds, _) in results.items()}
    agree = "nix-hash" not in results or results["nix-hash"][1] == results["pyguix"][1]
    tree = f"{size / 1e6:.0f} MB tree" if size > 5e6 else f"{size / 1e6:.1f} MB tree"
    return [
        Row("NAR hash: pyguix / hashlib (sha256 of contents)",
            _measure(medians, "pyguix", runs), _measure(medians, "hashlib", runs),
            note=f"{tree}, in process"),
        Row("NAR hash: pyguix / nix-hash",
            _measure(medians, "pyguix", runs), _measure(medians, "nix-hash", runs),
            note=f"{tree}; nix-hash is a process; "
            f"same hash: {'yes' if agree else 'NO'}"),
    ]  # fmt: skip


def store_add_rows(smoke: bool, runs: int, nix: bool) -> list[Row]:
    """``pyguix store add`` against ``nix-store --add``, cold and valid."""
    from benchmarks import store_add

    size = 8 * MIB if smoke else 100 * MIB
    results = store_add.measure(size, runs, fsync=False, nix=nix)
    tree = f"{size // MIB} MiB tree, a new process"
    return [
        Row("store add, cold: pyguix / nix-store --add",
            _measure(results, "pyguix add (cold)", runs),
            _measure(results, "nix-store --add (cold)", runs),
            note=f"{tree}; fresh store (pyguix), item deleted (Nix)"),
        Row("store add, valid: pyguix / nix-store --add",
            _measure(results, "pyguix add (valid)", runs),
            _measure(results, "nix-store --add (valid)", runs),
            note=f"{tree}; already in the store"),
    ]  # fmt: skip


# -- The command --------------------------------------------------------------


def _header(command: str, started: datetime.datetime, commit: str, load: str) -> str:
    lines = [
        f"Run on {started:%Y-%m-%d %H:%M} UTC with `{command}` at commit {commit}"
        f" ({(datetime.datetime.now(datetime.UTC) - started).seconds // 60} min).",
        "",
    ]
    lines += [f"- {key}: {value}" for key, value in machine().items()]
    lines.append(f"- load average (1 min) at start and end: {load} and {_load()}")
    return "\n".join(lines)


def _load() -> str:
    try:
        with open("/proc/loadavg") as file:
            return file.read().split()[0]
    except OSError:
        return "unknown"


def _commit() -> str:
    result = subprocess.run(
        ["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return result.stdout.strip() or "unknown"


def _progress(message: str) -> None:
    print(f"# {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the options, run each benchmark, print the header and table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="smallest, once (CI)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each measure")
    parser.add_argument("--sizes", default="100,1000,10000", help="DAG sizes")
    parser.add_argument("--build-cap", type=int, default=1000,
                        help="largest DAG to build cold (default 1000)")  # fmt: skip
    parser.add_argument("--no-nix", action="store_true", help="do not run Nix")
    options = parser.parse_args(argv)
    runs = 1 if options.smoke else options.runs
    sizes = [100] if options.smoke else [int(s) for s in options.sizes.split(",")]
    nix = "" if options.no_nix or not nix_installed() else "both"
    if options.smoke and nix:
        nix = "eval"
    command = shlex.join(["python3", "benchmarks/run.py", *sys.argv[1:]])
    started, commit, load = datetime.datetime.now(datetime.UTC), _commit(), _load()

    _progress("system container")
    rows = system_rows(measure_system(runs))
    for size in sizes:
        _progress(f"DAG of {size}")
        build_runs = 0 if size > options.build_cap else runs if size <= 100 else 1
        rows += dag_rows(measure_dag(size, runs, build_runs, nix), options.build_cap)
    _progress("lowering file-like objects")
    rows += lowering_rows(options.smoke, runs)
    _progress("builder start-up, NAR hashing, store add")
    rows += builder_rows(max(runs, 5))
    rows += nar_rows(options.smoke, runs, bool(nix))
    rows += store_add_rows(options.smoke, runs, bool(nix))

    print(_header(command, started, commit, load))
    print()
    print(table(rows))
    if not nix:
        print("\nNix is not installed or --no-nix was given: no Nix columns.")


if __name__ == "__main__":
    main()
