"""Gexp packages built for real: lowered, realised in the sandbox, then run
and inspected in the store (issue 4, "What it must show").

Each test lowers file-like objects against a store whose logical directory
is its physical one (under ``tmp_path``, no root), so built programs run
directly from the host and their store paths resolve.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from builders.linux import namespaces_unavailable_reason
from builders.scheduler import realise
from derivations.derivation import Derivation
from derivations.file_like import (
    computed_file,
    file_append,
    file_union,
    local_file,
    mixed_text_file,
    plain_file,
    program_file,
)
from derivations.gexp import gexp, with_imported_modules
from derivations.lowering import gexp_to_derivation, lower_object
from derivations.monad import run_with_store
from store import base32
from store.local import LocalStore
from store.paths import StorePath

pytestmark = pytest.mark.skipif(
    namespaces_unavailable_reason() is not None,
    reason=f"no namespaces here: {namespaces_unavailable_reason()}",
)

DATA = "forty-two\n"

SPLIT_BUILDER = """
os.makedirs(${output:lib} + "/share")
with open(${output:lib} + "/share/data.txt", "w") as file:
    file.write($data)
os.mkdir($out)
with open($out + "/marker", "w") as file:
    file.write("the default output\\n")
"""


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LocalStore]:
    local = LocalStore(str(tmp_path / "store"), str(tmp_path / "state"))
    yield local
    local.close()


def build(store: LocalStore, thing: Any) -> dict[str, str]:
    """Lower ``thing``, realise its derivation, return its output paths."""
    lowered = thing if isinstance(thing, Derivation) else lower(store, thing)
    if isinstance(lowered, StorePath):
        return {"out": str(lowered)}
    return dict(realise(store, [lowered.path]).outputs[lowered.path])


def lower(store: LocalStore, thing: Any) -> Any:
    return run_with_store(store, lower_object(thing))


def run(program: str) -> str:
    result = subprocess.run(
        [program], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_program_reads_another_derivations_non_default_output(
    store: LocalStore,
) -> None:
    split = run_with_store(
        store, gexp_to_derivation("split", gexp(SPLIT_BUILDER, data=DATA))
    )
    assert sorted(split.outputs) == ["lib", "out"]
    program = program_file(
        "show-data",
        gexp(
            """
            with open(${split:lib} + "/share/data.txt") as file:
                print("data:", file.read().strip())
            """,
            split=split,
        ),
    )

    drv = lower(store, program)
    assert drv.input_derivations == {split.path: frozenset({"lib"})}
    path = build(store, drv)["out"]

    assert run(path) == "data: forty-two\n"
    assert os.stat(store.physical(path)).st_mode & 0o777 == 0o555
    lib, out = split.output_path("lib"), split.output_path("out")
    assert store.is_valid(out), "both outputs of the dependency were built"
    references = store.query_references(path)
    assert lib in references
    assert out not in references


def test_file_union_links_each_target_to_its_item(
    store: LocalStore, tmp_path: Path
) -> None:
    greeting = plain_file("greeting", "hello\n")
    tool = computed_file(
        "tool",
        gexp(
            """
            os.makedirs($out + "/bin")
            with open($out + "/bin/tool", "w") as file:
                file.write("the tool\\n")
            """
        ),
    )
    (tmp_path / "notes.txt").write_text("some notes\n")
    notes = local_file(tmp_path / "notes.txt")
    union = file_union(
        "union",
        [
            ("etc/greeting", greeting),
            ("bin/tool", file_append(tool, "/bin/tool")),
            ("share/notes.txt", notes),
        ],
    )

    path = Path(build(store, union)["out"])

    tool_path = str(lower(store, tool).output_path())
    greeting_path, notes_path = str(lower(store, greeting)), str(lower(store, notes))
    assert os.readlink(path / "etc/greeting") == greeting_path
    assert os.readlink(path / "bin/tool") == tool_path + "/bin/tool"
    assert os.readlink(path / "share/notes.txt") == notes_path
    assert (path / "etc/greeting").read_text() == "hello\n"
    assert (path / "bin/tool").read_text() == "the tool\n"
    assert (path / "share/notes.txt").read_text() == "some notes\n"
    assert store.query_references(str(path)) == {tool_path, greeting_path, notes_path}


def test_script_imports_a_project_module(store: LocalStore) -> None:
    script = program_file(
        "encode",
        with_imported_modules(
            ["store.base32"],
            gexp(
                """
                from store import base32
                print(base32.encode($data))
                """,
                data=b"pyguix",
            ),
        ),
    )

    path = build(store, script)["out"]

    assert run(path) == base32.encode(b"pyguix") + "\n"
    (tree,) = store.query_references(path)
    assert tree.endswith("-module-import")
    assert (
        Path(tree, "store", "base32.py").read_bytes()
        == Path(base32.__file__).read_bytes()
    )
    assert Path(tree, "store", "__init__.py").is_file()
    assert not Path(tree, "derivations").exists(), "only the closure is copied"


def test_mixed_text_file_and_file_append(store: LocalStore) -> None:
    greeting = plain_file("greeting", "hello\n")
    tool = computed_file(
        "tool",
        gexp('os.makedirs($out + "/bin")\nopen($out + "/bin/tool", "w").close()'),
    )
    config = mixed_text_file(
        "config",
        "greeting = ",
        greeting,
        "\ntool = ",
        file_append(tool, "/bin", "/tool"),
        "\n",
    )
    copy = computed_file(
        "appended",
        gexp(
            """
            import shutil
            shutil.copy($greeting, $out)
            """,
            greeting=file_append(config),
        ),
    )

    path = build(store, config)["out"]
    copied = build(store, copy)["out"]

    greeting_path = str(lower(store, greeting))
    tool_path = lower(store, tool).output_path()
    expected = f"greeting = {greeting_path}\ntool = {tool_path}/bin/tool\n"
    assert Path(path).read_text() == expected
    assert store.query_references(path) == {greeting_path, tool_path}
    assert Path(copied).read_text() == expected
    assert store.query_references(copied) == {greeting_path, tool_path}


def test_computed_file_from_flat_and_recursive_local_files(
    store: LocalStore, tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    (tree / "bin").mkdir(parents=True)
    (tree / "bin" / "run").write_text("#!/bin/sh\necho run\n")
    (tree / "bin" / "run").chmod(0o755)
    (tree / "skip.log").write_text("not wanted\n")
    (tmp_path / "flat.txt").write_text("flat bytes\n")
    (tmp_path / "flat.txt").chmod(0o755)
    recursive = local_file(
        tree, "tree", recursive=True, select=lambda path, _: not path.endswith(".log")
    )
    flat = local_file(tmp_path / "flat.txt")
    combined = computed_file(
        "combined",
        gexp(
            """
            import shutil
            os.mkdir($out)
            shutil.copytree($tree, $out + "/tree", symlinks=True)
            shutil.copy($flat, $out + "/flat.txt")
            with open($out + "/sources", "w") as file:
                file.write($tree + "\\n" + $flat + "\\n")
            """,
            tree=recursive,
            flat=flat,
        ),
    )

    drv = lower(store, combined)
    path = Path(build(store, drv)["out"])

    tree_path, flat_path = str(lower(store, recursive)), str(lower(store, flat))
    assert {tree_path, flat_path} <= drv.input_sources
    assert sorted(os.listdir(path)) == ["flat.txt", "sources", "tree"]
    assert os.listdir(path / "tree") == ["bin"], "select dropped skip.log"
    assert os.access(path / "tree/bin/run", os.X_OK), "recursive keeps the mode"
    assert not os.access(flat_path, os.X_OK), "flat drops the executable bit"
    assert (path / "flat.txt").read_text() == "flat bytes\n"
    assert store.query_references(str(path)) == {tree_path, flat_path}
