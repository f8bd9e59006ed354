"""Benchmark synthetic DAGs: evaluation, cold build, no-op realise, peak memory.

The DAG is the layered one of ``benchmarks/builds.py``: ten layers of
SIZE/10 derivations, each depending on two of the layer below (fixed seed),
every builder writing the output paths of its inputs into its output.  Each
measurement is a new process, as a user runs it, timed with its peak RSS:

* evaluation: creating and writing every ``.drv``: this script's
  ``--create-into ROOT`` mode (Python start-up, imports, hashing, ATerm,
  writing into a fresh pyguix store under ROOT) against ``nix-instantiate``
  of the same DAG written as a ``.nix`` file (into /nix/store; a random salt
  in every derivation makes each run's derivations new to Nix);
* cold build: ``pyguix build DRV...`` (builders are ``python -S -c``, in
  pyguix's sandbox) against ``nix-store --realise DRV...`` (builders are
  ``/bin/sh -c``) with Nix's sandbox on, and once more with it off (this
  machine's setting), all with one build at a time;
* no-op realise: the same two commands again, every output valid.

Sizes above the build cap get evaluation only: a cold build costs about
0.1 s a derivation on either side.  Timings are reported, never asserted.

Usage: ``python3 benchmarks/dags.py [--sizes 100,1000] [--runs N]
[--build-cap N] [--no-nix]``.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

from benchmarks._common import (  # noqa: E402
    Measure,
    ProcessError,
    Sample,
    nix_installed,
    run_process,
    summarise,
)

__all__ = ["DagFigures", "measure_dag", "main"]

STORE_DIR = "/nix/store"
STATE_DIR = "/nix/var/pyguix"
NIX_SANDBOX = ["--option", "sandbox", "true",
               "--option", "extra-sandbox-paths", "/bin /lib /lib64 /usr"]  # fmt: skip
NIX_NO_SANDBOX = ["--option", "sandbox", "false"]


@dataclass(frozen=True)
class DagFigures:
    """The measurements of one DAG size, by name, and notes on them."""

    size: int
    measures: dict[str, Measure] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _layers(size: int) -> list[list[tuple[str, list[int]]]]:
    from benchmarks import builds

    layers: list[list[tuple[str, list[int]]]] = builds.shape(size, max(1, size // 10))
    return layers


def create_into(root: str, size: int, salt: str, shell: bool = False) -> list[str]:
    """Create every derivation of the DAG in a store under ``root``."""
    from benchmarks import builds
    from store.local import LocalStore

    store = LocalStore(STORE_DIR, STATE_DIR, root=root)
    return [d.path for d in builds.create_pyguix(store, _layers(size), salt, shell)]


def _pyguix(root: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "pyguix", "--store-dir", STORE_DIR,
            "--state-dir", STATE_DIR, "--root", root, *args]  # fmt: skip


def _pyguix_evaluate(
    root: str, size: int, salt: str, shell: bool = False
) -> tuple[Sample, list[str]]:
    command = [sys.executable, __file__, "--create-into", root,
               "--size", str(size), "--salt", salt,
               *(["--shell"] if shell else [])]  # fmt: skip
    sample = run_process(command)
    return sample, sample.stdout.split()


def _pyguix_shell_cold(root: str, size: int, salt: str) -> Sample:
    """Build cold, with pyguix, the DAG whose builders are Nix's ``/bin/sh``
    one-liners, the host's shell bound into the sandbox."""
    from benchmarks.builds import SHELL_SANDBOX_PATHS

    _, drvs = _pyguix_evaluate(root, size, salt, shell=True)
    bound = [arg for path in SHELL_SANDBOX_PATHS for arg in ("--sandbox-path", path)]
    return run_process(_pyguix(root, "build", *bound, *drvs))


def _nix_evaluate(workdir: str, size: int, salt: str) -> tuple[Sample, list[str]]:
    from benchmarks import builds

    expression = Path(workdir, f"dag-{salt}.nix")
    expression.write_text(builds.nix_expression(_layers(size), salt))
    sample = run_process(["nix-instantiate", str(expression)])
    return sample, sample.stdout.split()


def _nix_realise(drvs: Sequence[str], options: Sequence[str]) -> Sample:
    return run_process(["nix-store", "--realise", "--quiet", "-j", "1",
                        "--option", "substituters", "", *options, *drvs])  # fmt: skip


def _evaluations(
    size: int, runs: int, nix: str, workdir: str
) -> tuple[dict[str, list[Sample]], list[tuple[str, str, list[str], list[str]]]]:
    """Evaluate the DAG ``runs`` times; return samples and each run's
    (root, salt, pyguix derivations, Nix derivations)."""
    samples: dict[str, list[Sample]] = {"pyguix eval": [], "nix eval": []}
    stores = []
    for run in range(runs):
        salt = secrets.token_hex(4)
        root = f"{workdir}/root-{size}-{run}"
        sample, ours = _pyguix_evaluate(root, size, salt)
        samples["pyguix eval"].append(sample)
        theirs: list[str] = []
        if nix:
            sample, theirs = _nix_evaluate(workdir, size, salt)
            samples["nix eval"].append(sample)
        stores.append((root, salt, ours, theirs))
    return samples, stores


def _pyguix_cold(
    root: str,
    drvs: Sequence[str],
    figures: DagFigures,
    samples: dict[str, list[Sample]],
) -> None:
    """Build cold with pyguix; a failed build is noted, its time dropped,
    and the build resumed so that the no-op realise finds everything valid."""
    try:
        samples["pyguix cold"].append(run_process(_pyguix(root, "build", *drvs)))
    except ProcessError as error:
        lines = error.stderr.splitlines()
        first = next((line for line in lines if "fail" in line), "no message")
        figures.notes.append(f"a pyguix cold build failed, run dropped: {first}")
        run_process(_pyguix(root, "build", *drvs))


def _builds(
    stores: list[tuple[str, str, list[str], list[str]]],
    nix: str,
    workdir: str,
    figures: DagFigures,
    samples: dict[str, list[Sample]],
) -> None:
    """Build each store's DAG cold, on both sides (Nix with its sandbox,
    and without it when ``nix`` is "both", on derivations of another salt)."""
    for name in ("pyguix cold", "pyguix cold sh", "nix cold sandbox",
                 "nix cold no sandbox"):  # fmt: skip
        samples[name] = []
    for root, salt, ours, theirs in stores:
        _pyguix_cold(root, ours, figures, samples)
        shell_root = f"{root}-sh"
        samples["pyguix cold sh"].append(
            _pyguix_shell_cold(shell_root, len(ours), salt)
        )
        if nix not in ("sandbox", "both"):
            continue
        try:
            samples["nix cold sandbox"].append(_nix_realise(theirs, NIX_SANDBOX))
        except ProcessError as error:
            figures.notes.append(f"Nix's sandbox failed here: {error.stderr[-300:]}")
            _nix_realise(theirs, NIX_NO_SANDBOX)
        if nix == "both":
            _, other = _nix_evaluate(workdir, len(ours), salt + "-no-sandbox")
            samples["nix cold no sandbox"].append(_nix_realise(other, NIX_NO_SANDBOX))


def _no_ops(
    store: tuple[str, str, list[str], list[str]],
    runs: int,
    nix: str,
    samples: dict[str, list[Sample]],
) -> None:
    """Realise the built DAG again ``runs`` times, each a new process."""
    root, _, ours, theirs = store
    samples["pyguix no-op"] = []
    samples["nix no-op"] = []
    for _ in range(runs):
        samples["pyguix no-op"].append(run_process(_pyguix(root, "build", *ours)))
        if nix in ("sandbox", "both"):
            samples["nix no-op"].append(_nix_realise(theirs, NIX_NO_SANDBOX))


def measure_dag(size: int, runs: int, build_runs: int, nix: str) -> DagFigures:
    """Measure the DAG of ``size``: ``runs`` evaluations and no-op
    realisations, ``build_runs`` cold builds (0: none, nor no-op).

    ``nix`` is "" (no Nix), "eval" (Nix evaluates only), "sandbox" (Nix
    builds in its sandbox only) or "both" (with and without it)."""
    figures = DagFigures(size)
    with tempfile.TemporaryDirectory(prefix="pyguix-dags-") as workdir:
        samples, stores = _evaluations(size, max(runs, build_runs), nix, workdir)

        if build_runs:
            _builds(stores[:build_runs], nix, workdir, figures, samples)
            _no_ops(stores[0], runs, nix, samples)

    for name, values in samples.items():
        if values:
            figures.measures[name] = summarise(values)
    return figures


def _print(figures: DagFigures) -> None:
    print(f"{figures.size} derivations")
    for name, measure in figures.measures.items():
        print(
            f"  {name:<22} {measure.seconds:8.3f} s  "
            f"{measure.seconds / figures.size * 1e3:7.2f} ms/drv  "
            f"max RSS {measure.max_rss_kib / 1024:7.1f} MiB  ({measure.runs} runs)"
        )


def main(argv: Sequence[str] | None = None) -> None:
    """Measure each size and print the figures; or, with --create-into,
    create one DAG's derivations and print their paths."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000", help="comma-separated")
    parser.add_argument("--runs", type=int, default=3, help="runs of each measure")
    parser.add_argument("--build-cap", type=int, default=1000, help="largest built")
    parser.add_argument("--no-nix", action="store_true", help="do not run Nix")
    parser.add_argument("--create-into", metavar="ROOT", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=100, help=argparse.SUPPRESS)
    parser.add_argument("--salt", default="", help=argparse.SUPPRESS)
    parser.add_argument("--shell", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)

    if options.create_into:
        paths = create_into(
            options.create_into, options.size, options.salt, options.shell
        )
        print("\n".join(paths))
        return
    nix = "both" if nix_installed() and not options.no_nix else ""
    for size in (int(s) for s in options.sizes.split(",")):
        build_runs = 0 if size > options.build_cap else options.runs
        figures = measure_dag(size, options.runs, build_runs, nix)
        _print(figures)
        print("\n".join(figures.notes))


if __name__ == "__main__":
    main()
