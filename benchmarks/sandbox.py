"""Benchmark the sandbox alone: the cost of one trivial sandboxed build.

Each sample is one :func:`builders.sandbox.run_sandboxed` of the bootstrap
interpreter running ``-S -c pass`` with the interpreter's paths bound, as a
build binds them, and nothing else: the per-build overhead of the sandbox
plus the interpreter's start-up.  For comparison the same command is also
timed outside any sandbox.

With ``--baseline REF`` the same measurement runs against the sources of
git revision ``REF`` (checked out in a temporary ``git worktree``), in
rounds alternated with the working tree's, so that both see the same load
on the machine; the medians of both and their ratio are printed.

Usage: ``python3 benchmarks/sandbox.py [--runs N] [--rounds R]
[--baseline REF]``.  Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["main", "measure"]

_PROJECT = Path(__file__).resolve().parent.parent


def measure(runs: int) -> dict[str, object]:
    """Time ``runs`` sandboxed and unsandboxed ``python -S -c pass``, in ms."""
    from builders.bootstrap import interpreter_executable, interpreter_paths
    from builders.sandbox import BindMount, SandboxSpec, run_sandboxed

    paths = interpreter_paths()
    command = (interpreter_executable(), "-S", "-c", "pass")
    sandboxed, bare = [], []
    with tempfile.TemporaryDirectory() as build_dir:
        os.chmod(build_dir, 0o755)
        spec = SandboxSpec(
            command=command,
            build_dir=build_dir,
            mounts=tuple(BindMount(path, path) for path in paths),
        )
        for _ in range(runs):
            start = time.perf_counter()
            result = run_sandboxed(spec, sys.stderr.buffer.write)
            sandboxed.append((time.perf_counter() - start) * 1000)
            assert result.succeeded, result

            start = time.perf_counter()
            subprocess.run(command, check=True)
            bare.append((time.perf_counter() - start) * 1000)
    return {"paths": len(paths), "sandboxed": sandboxed, "bare": bare}


def _measure_in(source: Path, runs: int) -> dict[str, object]:
    """Run :func:`measure` in a fresh process importing from ``source``."""
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); "
        "sys.path.insert(0, sys.argv[1] + '/benchmarks'); "
        "import sandbox; print(json.dumps(sandbox.measure(int(sys.argv[2]))))"
    )
    output = subprocess.run(
        [sys.executable, "-c", code, str(source), str(runs)],
        check=True,
        capture_output=True,
        text=True,
        cwd=source,
        env={**os.environ, "PYTHONPATH": str(source)},
    ).stdout
    return json.loads(output.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _worktree(ref: str, directory: Path) -> Path:
    target = directory / "baseline"
    subprocess.run(
        ["git", "-C", str(_PROJECT), "worktree", "add", "--detach", str(target), ref],
        check=True,
        capture_output=True,
    )
    # The benchmark script itself may not exist at REF: use this one.
    (target / "benchmarks" / "sandbox.py").write_bytes(Path(__file__).read_bytes())
    return target


def _report(name: str, samples: dict[str, list[float]], paths: int) -> float:
    sandboxed = statistics.median(samples["sandboxed"])
    bare = statistics.median(samples["bare"])
    print(
        f"{name:>10}: {paths:3d} interpreter paths, "
        f"sandboxed median {sandboxed:6.1f} ms (min {min(samples['sandboxed']):5.1f}), "
        f"bare python -S median {bare:5.1f} ms, overhead {sandboxed - bare:5.1f} ms "
        f"({len(samples['sandboxed'])} runs)"
    )
    return sandboxed


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, measure and print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs per round")
    parser.add_argument("--rounds", type=int, default=5, help="alternated rounds")
    parser.add_argument("--baseline", help="git revision to compare with")
    options = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as scratch:
        sources = {"current": _PROJECT}
        if options.baseline:
            sources["baseline"] = _worktree(options.baseline, Path(scratch))
        try:
            samples: dict[str, dict[str, list[float]]] = {
                name: {"sandboxed": [], "bare": []} for name in sources
            }
            paths = dict.fromkeys(sources, 0)
            for _ in range(options.rounds):
                for name, source in sources.items():
                    result = _measure_in(source, options.runs)
                    for key in ("sandboxed", "bare"):
                        values = result[key]
                        assert isinstance(values, list)
                        samples[name][key] += values
                    paths[name] = result["paths"]  # type: ignore[assignment]
            medians = {
                name: _report(name, samples[name], paths[name]) for name in sources
            }
            if "baseline" in medians:
                print(f"     ratio: {medians['current'] / medians['baseline']:.2f}")
        finally:
            if options.baseline:
                subprocess.run(
                    [
                        "git",
                        "-C",
                        str(_PROJECT),
                        "worktree",
                        "remove",
                        "--force",
                        str(sources["baseline"]),
                    ],
                    check=False,
                    capture_output=True,
                )


if __name__ == "__main__":
    main()
