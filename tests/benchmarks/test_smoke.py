"""The benchmark command's smoke run: it ends well and prints its table.

Runs ``python3 benchmarks/run.py --smoke`` as CI does and checks the
output's shape (machine, every expected row, well-formed cells) and the one
figure that is not a timing: an incremental system build rebuilds some of
the system's derivations, not all.  Timings are never asserted.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROWS = [
    "system container: warm / cold",
    "system container: incremental / cold",
    "DAG 100: evaluation, pyguix / nix-instantiate",
    "DAG 100: cold build, pyguix / Nix with sandbox",
    "DAG 100: cold build, /bin/sh builders, pyguix / Nix with sandbox",
    "DAG 100: no-op realise, pyguix build / nix-store --realise",
    "evaluation of 100 file-like objects: warm / cold",
    "builder start-up: python3 -S / /bin/sh",
    "NAR hash: pyguix / hashlib (sha256 of contents)",
    "NAR hash: pyguix / nix-hash",
    "store add, cold: pyguix / nix-store --add",
    "store add, valid: pyguix / nix-store --add",
]
NUMBER_OR_DASH = re.compile(r"^(\*\*)?(\d+(\.\d+)?|—)(\*\*)?$")


def _table(stdout: str) -> dict[str, list[str]]:
    """Return the table's rows, by measurement name, as lists of cells."""
    rows = {}
    for line in stdout.splitlines():
        if line.startswith("| ") and not line.startswith("| measurement"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def test_smoke_run_prints_the_table() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    # The machine comes first, then a row for each measurement.
    assert "- cores (nproc):" in result.stdout
    assert "- Python: 3." in result.stdout
    rows = _table(result.stdout)
    assert [name for name in ROWS if name not in rows] == []

    # Each row: A, B, A/B, per-derivation, RSS A, RSS B, runs, notes.
    for name, cells in rows.items():
        assert len(cells) == 9, name
        assert all(NUMBER_OR_DASH.match(cell) for cell in cells[:7]), (name, cells)
    assert rows["system container: warm / cold"][2] != "—"
    assert rows["DAG 100: evaluation, pyguix / nix-instantiate"][3] != "—"

    # One leaf changed: some derivations rebuilt, fewer than the cold build's.
    cold = re.search(r"cold built (\d+)", rows["system container: warm / cold"][8])
    rebuilt = re.search(r"(\d+) derivations rebuilt", rows[ROWS[1]][8])
    assert cold and rebuilt, rows[ROWS[1]]
    assert 0 < int(rebuilt.group(1)) < int(cold.group(1))
