"""Tests of lowering gexps to derivations in a real local store: inputs,
outputs, builder text, the interpreter, imported modules, memoisation and
determinism across processes.  Builders are run directly (not built) where
a test checks that the generated code works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from derivations.create import read_derivation
from derivations.derivation import Derivation
from derivations.file_like import computed_file, plain_file
from derivations.gexp import gexp, with_imported_modules
from derivations.lowering import (
    BUILDER_FLAGS,
    LoweringError,
    bootstrap_interpreter,
    gexp_to_derivation,
    lower_object,
    lowering_stats,
)
from derivations.monad import MValue, run_with_store
from store.local import LocalStore
from store.paths import StorePath

SYSTEM = "x86_64-linux"


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(str(tmp_path / "store"), str(tmp_path / "state"))


def lower(store: LocalStore, mvalue: MValue[Any]) -> Derivation:
    result = run_with_store(store, mvalue, system=SYSTEM)
    assert isinstance(result, Derivation)
    return result


def builder_text(store: LocalStore, drv: Derivation) -> str:
    return Path(store.physical(drv.args[-1])).read_text()


def run_builder(drv: Derivation, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``drv``'s builder as a build would, outputs going to their paths."""
    return subprocess.run(
        [drv.builder, *drv.args],
        env=dict(drv.env),
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )


def test_non_default_output_of_another_derivation(store: LocalStore) -> None:
    dep = lower(
        store,
        gexp_to_derivation("dep", gexp("os.mkdir($out)\nos.mkdir(${output:lib})")),
    )
    assert sorted(dep.outputs) == ["lib", "out"]

    program = gexp("print(${dep:lib})", dep=dep)
    drv = lower(store, gexp_to_derivation("program", program))

    assert dict(drv.input_derivations) == {dep.path: frozenset({"lib"})}
    assert repr(dep.output_path("lib")) in builder_text(store, drv)
    assert dep.output_path("out") not in builder_text(store, drv)


def test_file_like_output_is_an_input_with_that_output(store: LocalStore) -> None:
    dep = computed_file("dep", gexp("os.mkdir($out)\nos.mkdir(${output:lib})"))
    drv = lower(store, gexp_to_derivation("user", gexp("print(${d:lib})", d=dep)))
    (path,) = drv.input_derivations
    assert drv.input_derivations[path] == frozenset({"lib"})
    assert read_derivation(store, path).name == "dep"


def test_outputs_are_those_mentioned(store: LocalStore) -> None:
    drv = lower(
        store, gexp_to_derivation("multi", gexp("$out ${output:doc} ${output:bin}"))
    )
    assert sorted(drv.outputs) == ["bin", "doc", "out"]
    assert sorted(lower(store, gexp_to_derivation("none", gexp("pass"))).outputs) == [
        "out"
    ]


def test_builder_interpreter_environment_and_sources(store: LocalStore) -> None:
    hello = plain_file("hello.txt", "hi\n")
    drv = lower(
        store,
        gexp_to_derivation("env", gexp("print($h)", h=hello), env_vars={"X": "1"}),
    )
    interpreter = bootstrap_interpreter()

    assert drv.builder == os.path.realpath(sys.executable)
    assert drv.args[: len(BUILDER_FLAGS)] == BUILDER_FLAGS
    assert drv.env["PYGUIX_INTERPRETER"] == interpreter.identity
    assert drv.env["PYTHONHASHSEED"] == "0" and drv.env["X"] == "1"
    assert drv.system == SYSTEM

    builder = drv.args[-1]
    assert builder.endswith("-env-builder")
    hello_path = str(run_with_store(store, lower_object(hello)))
    assert drv.input_sources == frozenset({builder, hello_path})
    assert store.query_references(builder) == {hello_path}
    assert not drv.input_derivations


def test_plain_store_path_string_is_a_source(store: LocalStore, tmp_path: Path) -> None:
    item = str(store.add_text("data", "x"))
    elsewhere = "/elsewhere/0123456789abcdfghijklmnpqrsvwxyz-thing"
    drv = lower(
        store, gexp_to_derivation("paths", gexp("print($p, $q)", p=item, q=elsewhere))
    )
    assert item in drv.input_sources
    assert elsewhere not in drv.input_sources
    assert repr(elsewhere) in builder_text(store, drv)


def test_builder_runs_and_writes_its_outputs(store: LocalStore, tmp_path: Path) -> None:
    hello = plain_file("hello.txt", "hi\n")
    g = gexp(
        """
        import shutil
        os.mkdir($out)
        shutil.copy($h, os.path.join($out, "copy"))
        with open(${output:lib}, "w") as f:
            f.write(repr($data))
        """,
        h=hello,
        data={"b": [1, 2], "a": None},
    )
    drv = lower(store, gexp_to_derivation("runs", g))
    result = run_builder(drv, tmp_path)
    assert result.returncode == 0, result.stderr
    assert Path(drv.output_path("out"), "copy").read_text() == "hi\n"
    assert Path(drv.output_path("lib")).read_text() == "{'a': None, 'b': [1, 2]}"


def test_imported_modules_are_on_the_builder_path(
    store: LocalStore, tmp_path: Path
) -> None:
    g = with_imported_modules(
        ["store.base32"],
        gexp(
            """
            from store import base32
            with open($out, "w") as f:
                f.write(base32.encode(bytes(range(5))) + " " + base32.__file__)
            """
        ),
    )
    drv = lower(store, gexp_to_derivation("modules", g))
    (tree,) = [path for path in drv.input_sources if path.endswith("-module-import")]
    assert Path(tree, "store", "base32.py").is_file()
    assert Path(tree, "store", "errors.py").is_file()
    assert f"sys.path.insert(0, {tree!r})" in builder_text(store, drv)

    result = run_builder(drv, tmp_path)
    assert result.returncode == 0, result.stderr
    from store import base32

    encoded, origin = Path(drv.output_path()).read_text().split()
    assert encoded == base32.encode(bytes(range(5)))
    assert origin.startswith(tree)


def test_lowering_is_memoised_per_connection(store: LocalStore) -> None:
    obj = computed_file("memo", gexp("os.mkdir($out)"))
    first = run_with_store(store, lower_object(obj), system=SYSTEM)
    lowered = lowering_stats(store).misses
    second = run_with_store(
        store,
        lower_object(computed_file("memo", gexp("os.mkdir($out)"))),
        system=SYSTEM,
    )
    assert first is second
    assert lowering_stats(store).misses == lowered
    other = run_with_store(store, lower_object(obj), system="aarch64-linux")
    assert isinstance(other, Derivation) and other.path != first.path  # type: ignore[union-attr]


def test_derivations_and_store_paths_lower_to_themselves(store: LocalStore) -> None:
    drv = lower(store, gexp_to_derivation("self", gexp("pass")))
    assert run_with_store(store, lower_object(drv)) is drv
    item = store.add_text("t", "x")
    assert run_with_store(store, lower_object(item)) == item
    assert isinstance(item, StorePath)


def test_lowering_something_not_file_like_is_an_error() -> None:
    with pytest.raises(LoweringError, match="not a file-like object"):
        lower_object(42)


def test_fixed_output_has_only_out(store: LocalStore) -> None:
    g = gexp("with open($out, 'w') as f: f.write('x')\n")
    drv = lower(
        store, gexp_to_derivation("fixed", g, hash=bytes(32), hash_algo="sha256")
    )
    assert drv.is_fixed_output()


DETERMINISM_SCRIPT = """
import json, sys
from store.local import LocalStore
from derivations.file_like import computed_file, file_union, mixed_text_file, plain_file
from derivations.gexp import gexp, with_imported_modules
from derivations.lowering import gexp_to_derivation
from derivations.monad import MValue, run_with_store

store = LocalStore("/pyguix/store", "/pyguix/state", root=sys.argv[1])
dep = computed_file("dep", gexp("os.mkdir($out)\\nos.mkdir(${output:lib})"))
files = file_union("files", [("a", plain_file("a", "1")), ("b/c", mixed_text_file("m", "x", dep))])
g = with_imported_modules(["store.nar.writer"], gexp(
    "print($files, ${dep:lib}, $data)", files=files, dep=dep, data={"z": {1, 2}, "a": [3.5]}))
drv = run_with_store(store, gexp_to_derivation("top", g), system="x86_64-linux")
print(json.dumps([drv.path, open(store.physical(drv.args[-1])).read()]))
"""


def test_lowering_is_deterministic_across_processes(tmp_path: Path) -> None:
    results = []
    for seed in ["1", "2"]:
        env = {**os.environ, "PYTHONHASHSEED": seed}
        output = subprocess.run(
            [sys.executable, "-c", DETERMINISM_SCRIPT, str(tmp_path / f"root{seed}")],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            cwd=tmp_path,
        ).stdout
        results.append(json.loads(output))
    assert results[0] == results[1]


def test_references_graphs_and_allowed_references_are_lowered(
    store: LocalStore,
) -> None:
    data = plain_file("data", "x")
    dep = computed_file("dep", gexp("os.mkdir($out)"))
    drv = lower(
        store,
        gexp_to_derivation(
            "graphs",
            gexp("pass"),
            references_graphs=[("closure", data), ("deps", dep)],
            allowed_references=["out", data],
        ),
    )
    data_path = str(run_with_store(store, lower_object(data)))
    dep_drv = run_with_store(store, lower_object(dep), system=SYSTEM)
    assert isinstance(dep_drv, Derivation)
    assert data_path in drv.input_sources
    assert dict(drv.input_derivations) == {dep_drv.path: frozenset({"out"})}
    graph = drv.env["exportReferencesGraph"].split()
    assert graph == ["closure", data_path, "deps", dep_drv.output_path()]
    assert drv.env["allowedReferences"].split() == ["out", data_path]


def test_long_chains_of_objects_lower_in_one_go(store: LocalStore) -> None:
    objects: list[Any] = [plain_file("seed", "0")]
    for n in range(120):
        objects.append(computed_file(f"link-{n}", gexp("print($x)", x=objects[-1])))

    top = run_with_store(store, lower_object(objects[-1]))

    assert isinstance(top, Derivation) and top.name == "link-119"
    (below,) = top.input_derivations
    assert below.endswith("-link-118.drv")
