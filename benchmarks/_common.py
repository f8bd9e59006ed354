"""Shared helpers of the benchmarks: timing processes, medians, peak memory.

Every figure the benchmarks report comes from here, so that pyguix and Nix
are measured the same way:

* :func:`run_process` starts a command from a small launcher process, which
  waits for it with ``os.wait4`` and reports its wall-clock duration and
  its peak resident set (``ru_maxrss`` of that child, which on Linux
  includes the children it waited for: the builders of a build);
* :func:`timed` times a call in this process;
* :func:`median` and :func:`summarise` reduce several runs;
* :func:`machine` describes the machine the figures were made on.

The scripts import this module as ``benchmarks._common`` with the project's
directory on ``sys.path`` and this one off it: the directory holds a
``derivations.py`` that would shadow the ``derivations`` package.

Timings are reported, never asserted.
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

__all__ = [
    "BENCHMARKS",
    "Measure",
    "ProcessError",
    "Sample",
    "machine",
    "median",
    "nix_installed",
    "run_process",
    "summarise",
    "timed",
]

T = TypeVar("T")
BENCHMARKS = Path(__file__).resolve().parent
"""The directory of the benchmark scripts."""


class ProcessError(RuntimeError):
    """A measured command failed; carries the command, status and stderr."""

    def __init__(self, command: Sequence[str], status: int, stderr: str) -> None:
        shown = " ".join(command[:6]) + (" ..." if len(command) > 6 else "")
        excerpt = (
            stderr if len(stderr) < 4000 else f"{stderr[:2000]}\n...\n{stderr[-1500:]}"
        )
        super().__init__(
            f"'{shown}' exited with status {status}; its stderr:\n"
            f"{excerpt}\nhint: run the command by hand to see why"
        )
        self.command = list(command)
        self.status = status
        self.stderr = stderr


@dataclass(frozen=True)
class Sample:
    """One run of a command: wall-clock seconds, peak RSS and its output."""

    seconds: float
    max_rss_kib: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class Measure:
    """Several runs reduced: median seconds, largest peak RSS, run count."""

    seconds: float
    max_rss_kib: int
    runs: int


_LAUNCHER = """
import os, sys, time
report, command = sys.argv[1], sys.argv[2:]
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(command[0], command)
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - start
with open(report, "w") as file:
    file.write(f"{seconds!r} {usage.ru_maxrss}")
code = os.waitstatus_to_exitcode(status)
os._exit(code if code >= 0 else 128 - code)
"""
"""Run a command and report its duration and peak RSS, from a small process.

Linux keeps, across ``exec``, the peak RSS of the process that forked: a
command started from this (large) process would report at least this
process's size.  Started from ``python3 -S``, the floor is a few MiB; the
launcher's own start-up is not timed.
"""


def run_process(
    command: Sequence[str],
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> Sample:
    """Run ``command`` to its end; return its duration and peak memory.

    The peak is ``ru_maxrss`` from ``wait4``: the largest of the command
    and the children it waited for.
    """
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.TemporaryDirectory() as scratch,
    ):
        report = Path(scratch, "report")
        launcher = [sys.executable, "-S", "-c", _LAUNCHER, str(report)]
        process = subprocess.run([*launcher, *command], stdout=out, stderr=err,
                                 env=env, check=False)  # fmt: skip
        seconds, max_rss = report.read_text().split()

        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    if check and process.returncode != 0:
        raise ProcessError(command, process.returncode, stderr)
    return Sample(float(seconds), int(max_rss), stdout, stderr)


def timed(function: Callable[[], T]) -> tuple[T, float]:
    """Call ``function``; return its result and the seconds it took."""
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def median(values: Sequence[float]) -> float:
    """Return the median of ``values`` (NaN when there are none)."""
    return statistics.median(values) if values else float("nan")


def summarise(samples: Sequence[Sample]) -> Measure:
    """Reduce runs of one measurement: median time, largest peak RSS."""
    return Measure(
        seconds=median([s.seconds for s in samples]),
        max_rss_kib=max((s.max_rss_kib for s in samples), default=0),
        runs=len(samples),
    )


def nix_installed() -> bool:
    """Tell whether Nix's command-line tools are on ``PATH``."""
    return shutil.which("nix-store") is not None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory() -> str:
    try:
        with open("/proc/meminfo") as file:
            for line in file:
                if line.startswith("MemTotal:"):
                    return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _nix_version() -> str:
    if not nix_installed():
        return "not installed"
    result = subprocess.run(
        ["nix-store", "--version"], capture_output=True, text=True, check=False
    )
    return result.stdout.strip() or "unknown"


def machine() -> dict[str, str]:
    """Describe this machine: cores, CPU, memory, kernel, Python and Nix."""
    return {
        "cores (nproc)": str(os.cpu_count()),
        "CPU": _cpu_model(),
        "memory": _memory(),
        "kernel": f"{platform.system()} {platform.release()}",
        "Python": sys.version.split()[0],
        "Nix": _nix_version(),
    }
