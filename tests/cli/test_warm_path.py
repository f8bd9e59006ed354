"""The warm path of ``pyguix system container`` and ``pyguix build -f``: an
unchanged OS file is answered by the evaluation cache without importing
the graph library, the live display or the sandbox and without lowering
anything; a changed OS file or a changed module it imports misses and
gives the derivation a fresh cache gives; a damaged cache is ignored."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgpack
import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "fixtures" / "os.py"
STORE_DIR = "/pyguix/store"
IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)\s*$")
EVALUATIONS = Path("var", "pyguix", "cache", "evaluations")

WRAPPER = """
import dataclasses
import os
import runpy
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import warm_names

_example = runpy.run_path({example!r})
operating_system = dataclasses.replace(
    _example["operating_system"], host_name=warm_names.HOST_NAME
)
mappings = _example["mappings"]
"""
"""An OS file: the example's system, named by a module beside it."""


def pyguix(
    root: Path, *arguments: str, flags: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, *flags, "-m", "pyguix", "--root", str(root)]
    command += ["--store-dir", STORE_DIR, "--state-dir", "/var/pyguix", *arguments]
    done = subprocess.run(
        command, capture_output=True, text=True, check=False, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return done


def imported(stderr: str) -> set[str]:
    """Return the modules ``-X importtime`` reports in ``stderr``."""
    return {
        match.group(1)
        for line in stderr.splitlines()
        if (match := IMPORT_LINE.match(line)) is not None
    }


def write_wrapper(directory: Path, host_name: str) -> Path:
    directory.mkdir(exist_ok=True)
    (directory / "warm_names.py").write_text(f"HOST_NAME = {host_name!r}\n")
    file = directory / "os.py"
    file.write_text(WRAPPER.format(example=str(EXAMPLE)))
    return file


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A store where the example's run-container script is built."""
    root = tmp_path_factory.mktemp("warm") / "root"
    done = pyguix(root, "system", "container", str(EXAMPLE))
    return root, done.stdout.strip()


def test_warm_container_imports_no_graph_display_or_sandbox(
    built: tuple[Path, str],
) -> None:
    root, script = built
    done = pyguix(
        root, "-v", "system", "container", str(EXAMPLE), flags=("-X", "importtime")
    )

    assert done.stdout.strip() == script
    modules = imported(done.stderr)
    assert "click" in modules, "the importtime scan saw nothing"
    for heavy in ("networkx", "rich", "builders.sandbox", "system.operating_system"):
        assert heavy not in modules, heavy
    assert "0 objects lowered" in done.stderr
    assert "nothing to build" in done.stderr


def test_warm_build_file_lowers_nothing(built: tuple[Path, str]) -> None:
    root, _ = built
    first = pyguix(root, "-v", "build", "-f", str(EXAMPLE), "operating_system")
    second = pyguix(root, "-v", "build", "-f", str(EXAMPLE), "operating_system")

    assert second.stdout == first.stdout
    assert first.stdout.strip().endswith("-system")
    assert "0 objects lowered" in second.stderr
    assert "networkx" not in imported(
        pyguix(
            root,
            "build",
            "-f",
            str(EXAMPLE),
            "operating_system",
            flags=("-X", "importtime"),
        ).stderr
    )


def derivation_of(root: Path, file: Path, *, cached: bool | None = None) -> str:
    """Return the script derivation of ``file``; check that it came from
    the evaluation cache, or not, as ``cached`` says."""
    done = pyguix(root, "-v", "system", "container", "-d", str(file))
    if cached is not None:
        assert ("evaluation of" in done.stderr) == cached, done.stderr
    return done.stdout.strip()


def test_changed_file_or_module_misses_and_matches_a_fresh_cache(
    built: tuple[Path, str], tmp_path: Path
) -> None:
    root, _ = built
    file = write_wrapper(tmp_path / "config", "warm-one")
    one = derivation_of(root, file, cached=False)
    assert derivation_of(root, file, cached=True) == one

    file.write_text(file.read_text() + "\n# the same system, another text\n")
    assert derivation_of(root, file, cached=False) == one
    assert derivation_of(root, file, cached=True) == one

    text = file.read_text().replace(
        "host_name=warm_names.HOST_NAME", "host_name=warm_names.HOST_NAME + '-b'"
    )
    file.write_text(text)
    two = derivation_of(root, file, cached=False)
    assert two != one
    assert two == derivation_of(tmp_path / "fresh-1", file)

    (file.parent / "warm_names.py").write_text("HOST_NAME = 'warm-three'\n")
    three = derivation_of(root, file, cached=False)
    assert three not in (one, two)
    assert derivation_of(root, file, cached=True) == three
    assert three == derivation_of(tmp_path / "fresh-2", file)


def test_changed_file_read_by_the_os_file_misses(
    built: tuple[Path, str], tmp_path: Path
) -> None:
    root, _ = built
    directory = tmp_path / "config"
    directory.mkdir()
    (directory / "name.txt").write_text("from-a-file\n")
    file = directory / "os.py"
    file.write_text(
        WRAPPER.replace("import warm_names\n", "")
        .replace(
            "warm_names.HOST_NAME",
            "open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "
            "'name.txt')).read().strip()",
        )
        .format(example=str(EXAMPLE))
    )
    one = derivation_of(root, file, cached=False)
    assert derivation_of(root, file, cached=True) == one

    (directory / "name.txt").write_text("from-another-file\n")
    two = derivation_of(root, file, cached=False)
    assert two != one
    assert two == derivation_of(tmp_path / "fresh", file)


def test_damaged_cache_gives_correct_results(
    built: tuple[Path, str], tmp_path: Path
) -> None:
    root, script = built
    file = write_wrapper(tmp_path / "config", "warm-damaged")
    expected = derivation_of(root, file)
    entries = list((root / EVALUATIONS).iterdir())
    assert entries
    for entry in entries:
        entry.write_bytes(entry.read_bytes()[:-7] + b"garbage")

    assert derivation_of(root, file, cached=False) == expected
    assert derivation_of(root, file, cached=True) == expected
    done = pyguix(root, "system", "container", str(EXAMPLE))
    assert done.stdout.strip() == script

    for entry in (root / EVALUATIONS).iterdir():
        entry.write_bytes(b"")
    assert derivation_of(root, file, cached=False) == expected
    assert derivation_of(root, file) == derivation_of(tmp_path / "fresh", file)


def test_entry_naming_paths_the_store_lacks_misses(tmp_path: Path) -> None:
    file = write_wrapper(tmp_path / "config", "warm-moved")
    first = tmp_path / "first"
    expected = derivation_of(first, file)
    second = tmp_path / "second"
    (second / EVALUATIONS).mkdir(parents=True)
    for entry in (first / EVALUATIONS).iterdir():
        (second / EVALUATIONS / entry.name).write_bytes(entry.read_bytes())

    done = pyguix(second, "-v", "system", "container", "-d", str(file))
    assert done.stdout.strip() == expected
    assert "evaluation of" not in done.stderr
    assert (second / expected.lstrip("/")).is_file()


def test_changed_file_deep_in_a_local_directory_misses(
    built: tuple[Path, str], tmp_path: Path
) -> None:
    root, _ = built
    directory = tmp_path / "config"
    notes = directory / "extra" / "share" / "doc"
    notes.mkdir(parents=True)
    (notes / "note.txt").write_text("first\n")
    file = directory / "os.py"
    file.write_text(
        WRAPPER.replace("import warm_names\n", "")
        .replace(
            "host_name=warm_names.HOST_NAME",
            "host_name='warm-local', packages=(*_example['operating_system']"
            ".packages, local_file('extra', recursive=True))",
        )
        .replace(
            "import sys\n",
            "import sys\n\nfrom derivations.file_like import local_file\n",
        )
        .format(example=str(EXAMPLE))
    )
    one = derivation_of(root, file, cached=False)
    assert derivation_of(root, file, cached=True) == one

    (notes / "note.txt").write_text("other\n")
    two = derivation_of(root, file, cached=False)
    assert two != one
    assert two == derivation_of(tmp_path / "fresh", file)


def entry_of(root: Path, file: Path) -> dict[str, Any]:
    """Return the one evaluation entry whose dependencies include ``file``."""
    found: list[dict[str, Any]] = []
    for entry in (root / EVALUATIONS).iterdir():
        try:
            data = msgpack.unpackb(entry.read_bytes())
        except ValueError:
            continue  # left damaged by the test above
        if str(file) in {path for path, _ in data["depends"]}:
            found.append(data)
    assert len(found) == 1
    return found[0]


def test_entries_depend_on_project_modules_and_interpreter(
    built: tuple[Path, str], tmp_path: Path
) -> None:
    root, _ = built
    file = write_wrapper(tmp_path / "config", "warm-entries")
    derivation_of(root, file, cached=False)
    depends = {path for path, _ in entry_of(root, file)["depends"]}

    project = EXAMPLE.parents[1]
    for module in (
        "system/operating_system.py",
        "system/services.py",
        "system/container_script.py",
        "derivations/lowering.py",
        "pyguix/commands/system.py",
        "builders/container.py",
    ):
        assert str(project / module) in depends, module
    assert str(file.parent / "warm_names.py") in depends
    assert str(EXAMPLE) in depends
    assert os.path.realpath(sys.executable) in depends
    assert not any(path.startswith(str(root)) for path in depends)


def test_lookup_misses_once_a_dependency_changes(tmp_path: Path) -> None:
    from derivations.lowering_cache import (
        EvaluationCache,
        cached_evaluation,
        evaluation_key,
    )
    from store.local import LocalStore

    store = LocalStore(str(tmp_path / "store"), str(tmp_path / "state"))
    source = tmp_path / "input.txt"
    source.write_text("one\n")
    item = store.add_text("warm-item", "x")
    evaluated = tmp_path / "evaluated.py"
    evaluated.write_text("# evaluated\n")

    def evaluate() -> list[tuple[str, str]]:
        source.read_text()
        return [("path", str(item))]

    first, cached = cached_evaluation(store, "test", str(evaluated), [], evaluate)
    assert (first, cached) == ([("path", str(item))], False)
    again, cached = cached_evaluation(store, "test", str(evaluated), [], evaluate)
    assert (again, cached) == (first, True)

    key = evaluation_key("test", str(evaluated), [], store.store_dir)
    assert key is not None
    source.write_text("two, longer\n")
    assert EvaluationCache(store).lookup(key) is None
    assert (
        cached_evaluation(store, "test", str(evaluated), ["-x"], evaluate)[1] is False
    )
