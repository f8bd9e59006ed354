"""Mistakes in what the user gives pyguix: their build file's own failures
(exceptions, ``sys.exit``), bad values, and command-line misuse.  Each is
one ``error:`` line and one ``hint:`` line with a non-zero status, never a
report of a bug in pyguix, and ``PYGUIX_DEBUG=1`` shows the user's trace."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def pyguix(
    tmp_path: Path, *args: str, debug: bool = False
) -> subprocess.CompletedProcess[str]:
    where = [
        "--store-dir",
        str(tmp_path / "store"),
        "--state-dir",
        str(tmp_path / "state"),
    ]
    env = {k: v for k, v in os.environ.items() if k != "PYGUIX_DEBUG"}
    if debug:
        env["PYGUIX_DEBUG"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pyguix", *where, *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def error_and_hint(result: subprocess.CompletedProcess[str]) -> tuple[str, str]:
    """Return the error and hint lines, checking there is nothing else."""
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith("error: ") and lines[1].startswith("hint: ")
    assert "bug in pyguix" not in result.stderr
    return lines[0], lines[1]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("x = 1 / 0\n", "loading build file '{file}' failed at line 1: "
         "ZeroDivisionError: division by zero"),
        ("import sys\nsys.exit(0)\n", "loading build file '{file}' failed at line 2: "
         "SystemExit: 0"),
        ("import sys\nsys.exit(3)\n", "loading build file '{file}' failed at line 2: "
         "SystemExit: 3"),
        ("def x():\n    return x()\n", "calling 'x' of '{file}' failed at line 2: "
         "RecursionError: maximum recursion depth exceeded"),
        ("def x():\n    exit()\n", "calling 'x' of '{file}' failed at line 2: "
         "SystemExit: None"),
        ("x = (\n", "build file '{file}' is not valid Python: '(' was never closed "
         "(line 1)"),
        ("from derivations.file_like import plain_file\nx = plain_file('ok', 42)\n",
         "the content of plain file 'ok' is of type int, not text or bytes"),
    ],
)  # fmt: skip
def test_a_failing_build_file_is_the_users_error(
    tmp_path: Path, source: str, message: str
) -> None:
    file = tmp_path / "things.py"
    file.write_text(source)

    result = pyguix(tmp_path, "build", "-f", str(file), "x")

    assert result.returncode == 1
    error, _ = error_and_hint(result)
    assert error == "error: " + message.format(file=file)
    assert result.stdout == ""


def test_debug_shows_the_trace_of_the_users_code(tmp_path: Path) -> None:
    file = tmp_path / "things.py"
    file.write_text("def helper():\n    return {}['missing']\nx = helper()\n")

    result = pyguix(tmp_path, "build", "-f", str(file), "x", debug=True)

    assert result.returncode == 1
    assert f'File "{file}", line 2, in helper' in result.stderr
    assert result.stderr.splitlines()[-2].startswith(
        f"error: loading build file '{file}' failed at line 2: KeyError"
    )


@pytest.mark.parametrize(
    ("args", "error", "command"),
    [
        (["store", "query", "/x"], "give one of --references", "pyguix store query"),
        (["build", "-j", "0", "x"], "Invalid value for '-j'", "pyguix build"),
        (["no-such-command"], "No such command 'no-such-command'", "pyguix"),
    ],
)
def test_command_line_mistakes_are_one_error_and_a_hint(
    tmp_path: Path, args: list[str], error: str, command: str
) -> None:
    result = pyguix(tmp_path, *args)

    assert result.returncode == 2
    line, hint = error_and_hint(result)
    assert error in line
    assert hint == f"hint: see '{command} --help'"
