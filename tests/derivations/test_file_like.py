"""Tests of file-like objects: their store paths (against Nix 2.8 for local
files, see fixtures/gexp/generate.sh), their derivations, and what their
builders make when run directly."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from derivations.derivation import Derivation
from derivations.file_like import (
    FileLikeError,
    computed_file,
    directory_union,
    file_append,
    file_union,
    local_file,
    mixed_text_file,
    plain_file,
    program_file,
    text_file,
)
from derivations.gexp import gexp, with_imported_modules
from derivations.lowering import gexp_to_derivation, lower_object
from derivations.monad import run_with_store
from store.hash import Hash
from store.local import LocalStore
from store.nar.writer import hash_path
from store.paths import StorePath, make_fixed_output_path, make_text_path

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "gexp"


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(str(tmp_path / "store"), str(tmp_path / "state"))


def lower(store: LocalStore, obj: Any) -> Any:
    return run_with_store(store, lower_object(obj), system="x86_64-linux")


def build_directly(drv: Derivation, cwd: Path) -> None:
    """Run ``drv``'s builder with its environment, as a build would."""
    result = subprocess.run(
        [drv.builder, *drv.args],
        env=dict(drv.env),
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def copy_fixture_tree(target: Path) -> Path:
    """Copy fixtures/gexp/local-tree with the modes generate.sh sets."""
    tree = target / "local-tree"
    shutil.copytree(FIXTURES / "local-tree", tree, symlinks=True)
    os.chmod(tree / "run.sh", 0o755)
    os.chmod(tree / "hello.txt", 0o644)
    return tree


def test_plain_file_is_text(store: LocalStore) -> None:
    path = lower(store, plain_file("greeting", "hello\n"))
    expected = make_text_path(
        "greeting", hashlib.sha256(b"hello\n").digest(), (), store.store_dir
    )
    assert path == expected
    assert Path(store.physical(path)).read_bytes() == b"hello\n"
    assert lower(store, text_file("bin", b"\x00\xff")) == make_text_path(
        "bin", hashlib.sha256(b"\x00\xff").digest(), (), store.store_dir
    )


def test_local_file_paths_equal_nix(tmp_path: Path) -> None:
    golden = json.loads((FIXTURES / "local-files.json").read_text())
    nix_store = LocalStore(
        golden["store_dir"], "/nix/var/pyguix", root=str(tmp_path / "root")
    )
    tree = copy_fixture_tree(tmp_path)
    assert (
        str(lower(nix_store, local_file(tree, recursive=True))) == golden["recursive"]
    )
    assert str(lower(nix_store, local_file(tree / "hello.txt"))) == golden["flat"]


def test_local_file_flat_is_fixed_output_sha256(
    store: LocalStore, tmp_path: Path
) -> None:
    tree = copy_fixture_tree(tmp_path)
    path = lower(store, local_file(tree / "run.sh", "script"))
    digest = Hash("sha256", hashlib.sha256((tree / "run.sh").read_bytes()).digest())
    assert path == make_fixed_output_path("flat", digest, "script", store.store_dir)
    assert not os.access(store.physical(path), os.X_OK)


def test_local_file_recursive_is_the_nar_source_path(
    store: LocalStore, tmp_path: Path
) -> None:
    tree = copy_fixture_tree(tmp_path)
    path = lower(store, local_file(tree, "tree", recursive=True))
    assert path == make_fixed_output_path(
        "recursive", hash_path(tree)[0], "tree", store.store_dir
    )
    assert os.access(Path(store.physical(path), "run.sh"), os.X_OK)


def test_local_file_is_relative_to_the_calling_file() -> None:
    obj = local_file("../../fixtures/gexp/local-tree/hello.txt")
    assert obj.file == str(FIXTURES / "local-tree" / "hello.txt")
    assert obj.name == "hello.txt"


def test_missing_local_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileLikeError, match="'.*no-such-file' does not exist"):
        local_file(tmp_path / "no-such-file")


def test_directory_needs_recursive(tmp_path: Path) -> None:
    with pytest.raises(FileLikeError, match="is not a regular file") as info:
        local_file(tmp_path)
    assert info.value.hint is not None and "recursive=True" in info.value.hint


def test_local_file_select_filters_entries(store: LocalStore, tmp_path: Path) -> None:
    tree = copy_fixture_tree(tmp_path)
    obj = local_file(
        tree,
        "filtered",
        recursive=True,
        select=lambda path, _: not path.endswith(".sh"),
    )
    path = lower(store, obj)
    assert sorted(os.listdir(store.physical(path))) == ["hello.txt", "link", "sub"]

    expected = tmp_path / "expected"
    shutil.copytree(tree, expected, symlinks=True)
    (expected / "run.sh").unlink()
    assert path == make_fixed_output_path(
        "recursive", hash_path(expected)[0], "filtered", store.store_dir
    )


def test_mixed_text_file_keeps_references(store: LocalStore, tmp_path: Path) -> None:
    hello = plain_file("hello", "hi")
    drv = lower(store, mixed_text_file("mixed", "path=", hello, "\n"))
    hello_path = str(lower(store, hello))
    assert hello_path in drv.input_sources
    build_directly(drv, tmp_path)
    assert Path(drv.output_path()).read_text() == f"path={hello_path}\n"


def test_mixed_text_file_rejects_other_parts() -> None:
    with pytest.raises(FileLikeError, match="neither text nor file-like"):
        mixed_text_file("bad", "a", 3)


def test_file_append_expands_to_path_and_suffix(store: LocalStore) -> None:
    tool = computed_file("tool", gexp("os.makedirs(os.path.join($out, 'bin'))"))
    drv = run_with_store(
        store,
        gexp_to_derivation(
            "user", gexp("print($x)", x=file_append(tool, "/bin", "/tool"))
        ),
    )
    tool_drv = lower(store, tool)
    assert dict(drv.input_derivations) == {tool_drv.path: frozenset({"out"})}
    assert (
        repr(tool_drv.output_path() + "/bin/tool")
        in Path(store.physical(drv.args[-1])).read_text()
    )


def test_file_union_makes_symlinks(store: LocalStore, tmp_path: Path) -> None:
    a, b = plain_file("a", "1"), plain_file("b", "2")
    drv = lower(store, file_union("union", [("etc/a", a), ("b", b)]))
    build_directly(drv, tmp_path)
    out = Path(drv.output_path())
    assert os.readlink(out / "etc" / "a") == str(lower(store, a))
    assert (out / "b").read_text() == "2"
    assert drv.input_sources >= {str(lower(store, a)), str(lower(store, b))}


def test_lowered_store_paths_are_usable_like_objects(
    store: LocalStore, tmp_path: Path
) -> None:
    hello = lower(store, plain_file("hello", "hi\n"))
    assert isinstance(hello, StorePath)
    text = lower(store, mixed_text_file("text", "at ", file_append(hello), "\n"))
    union = lower(store, file_union("union", [("hello", hello)]))
    user = lower(store, computed_file("user", gexp("print($h)", h=hello)))

    for drv in (text, union, user):
        assert str(hello) in drv.input_sources
    build_directly(text, tmp_path)
    build_directly(union, tmp_path)
    assert Path(text.output_path()).read_text() == f"at {hello}\n"
    assert os.readlink(Path(union.output_path(), "hello")) == str(hello)
    assert user == lower(store, computed_file("user", gexp("print($h)", h=str(hello))))


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        (["x", "./x"], "appears twice"),
        (["/abs"], "not a relative path"),
        (["../up"], "not a relative path"),
    ],
    ids=["duplicate-target", "absolute-target", "escaping-target"],
)
def test_file_union_rejects_bad_targets(targets: list[str], message: str) -> None:
    with pytest.raises(FileLikeError, match=message):
        file_union("u", [(target, plain_file("a", "1")) for target in targets])


def test_directory_union(store: LocalStore, tmp_path: Path) -> None:
    one = file_union(
        "one", [("bin/x", plain_file("x", "x")), ("share/a", plain_file("a", "a"))]
    )
    two = file_union(
        "two", [("bin/y", plain_file("y", "y")), ("lib", plain_file("l", "l"))]
    )
    assert directory_union("single", [one]) is one

    drv = lower(store, directory_union("both", [one, two]))
    for part in (one, two):
        build_directly(lower(store, part), tmp_path)
    build_directly(drv, tmp_path)
    out = Path(drv.output_path())
    assert sorted(os.listdir(out)) == ["bin", "lib", "share"]
    assert sorted(os.listdir(out / "bin")) == ["x", "y"]
    assert (out / "bin" / "y").read_text() == "y"
    assert os.path.islink(out / "share")


def test_program_file_is_an_executable_script(
    store: LocalStore, tmp_path: Path
) -> None:
    code = "from store import base32\nprint(base32.encode(b'ab'), $n, base32.__file__)"
    g = with_imported_modules(["store.base32"], gexp(code, n=7))
    drv = lower(store, program_file("hello-script", g))
    assert drv.env.get("preferLocalBuild") == "1"
    assert drv.env.get("allowSubstitutes") == "0"
    build_directly(drv, tmp_path)

    script = Path(drv.output_path())
    assert os.stat(script).st_mode & 0o777 == 0o555
    assert script.read_text().startswith(f"#!{drv.builder} -IB\n")
    from store import base32

    output = subprocess.run(
        [str(script)], capture_output=True, text=True, check=True
    ).stdout
    encoded, number, origin = output.split()
    assert (encoded, number) == (base32.encode(b"ab"), "7")
    (tree,) = [path for path in drv.input_sources if path.endswith("-module-import")]
    assert origin == f"{tree}/store/base32.py"


def test_computed_file_options(store: LocalStore) -> None:
    obj = computed_file(
        "opts",
        gexp("os.mkdir($out)"),
        local_build=False,
        options={"env_vars": {"A": "b"}},
    )
    drv = lower(store, obj)
    assert drv.env["A"] == "b"
    assert "preferLocalBuild" not in drv.env or drv.env["preferLocalBuild"] != "1"
    assert isinstance(lower(store, plain_file("p", "x")), StorePath)
