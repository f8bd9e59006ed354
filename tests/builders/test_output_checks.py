"""Real sandboxed builds using Nix's ``passAsFile``, output placeholders,
``allowedRequisites`` and ``disallowedRequisites`` (and the reference lists
beside them)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from helpers.builds import python_derivation as pydrv

from builders.bootstrap import interpreter_executable
from builders.build import BuildError, build_derivation
from builders.environment import pass_as_file_name
from builders.linux import namespaces_unavailable_reason
from derivations.create import derivation
from derivations.derivation import Derivation
from store.local import LocalStore

pytestmark = pytest.mark.skipif(
    namespaces_unavailable_reason() is not None,
    reason=f"no namespaces here: {namespaces_unavailable_reason()}",
)

# What Nix 2.8's nix-build named the file of attribute 'foo' under passAsFile.
NIX_FOO_FILE = ".attr-1bp7cri8hplaz6hbz0v4f0nl44rl84q1sg25kgwqzipzd1mv89ic"


def failure_of(store: LocalStore, drv: Derivation) -> BuildError:
    with pytest.raises(BuildError) as caught:
        build_derivation(store, drv)
    for path in drv.output_paths().values():
        assert not store.is_valid(path)
        assert not os.path.lexists(store.physical(path))
    return caught.value


# The user refers to mid (so to dep through it) and to itself.
USER = "open(out, 'w').write(os.environ['in0'] + ' ' + out)"


def test_pass_as_file_writes_the_value_to_nixs_file(store: LocalStore) -> None:
    code = """
    import json
    path = os.environ['fooPath']
    info = os.stat(path)
    json.dump({'env': dict(os.environ), 'text': open(path).read(),
               'uid': info.st_uid, 'listing': sorted(os.listdir('.'))},
              open(out, 'w'))
    """
    value = "two\nlines and ünïcode\n"
    env = {"foo": value, "bar": "plain", "passAsFile": "foo absent"}
    drv = pydrv(store, "paf", code, env=env)

    build_derivation(store, drv)

    seen = json.loads(Path(drv.output_path()).read_text())
    top = "/tmp/pyguix-build-paf.drv-0"
    assert pass_as_file_name("foo") == NIX_FOO_FILE
    assert seen["env"]["fooPath"] == f"{top}/{NIX_FOO_FILE}"
    assert seen["text"] == value and seen["uid"] == 1000
    assert NIX_FOO_FILE in seen["listing"]
    assert "foo" not in seen["env"] and "absentPath" not in seen["env"]
    assert seen["env"]["bar"] == "plain"
    assert seen["env"]["passAsFile"] == "foo absent"


# What Nix 2.8 gives for builtins.placeholder "out" and "dev".
NIX_PLACEHOLDERS = {
    "out": "/1rz4g4znpzjwh1xymhjpm42vipw92pr73vdgl6xs1hycac8kf2n9",
    "dev": "/02qcpld1y6xhs5gz9bchpxaw0xdhmsp5dv88lh25r2ss44kh8dxz",
}


def test_placeholders_become_output_paths_everywhere_nix_rewrites(
    store: LocalStore,
) -> None:
    out, dev = NIX_PLACEHOLDERS["out"], NIX_PLACEHOLDERS["dev"]
    code = """
import json, os, sys
json.dump({'arg': sys.argv[1], 'env': os.environ['where'],
           'file': open(os.environ['listedPath']).read()},
          open(os.environ['out'], 'w'))
open(os.environ['dev'], 'w').write('')
"""
    drv = derivation(
        store,
        "placeholders",
        interpreter_executable(),
        ["-S", "-c", code, f"{dev}/include"],
        env={"where": f"{out}/bin", "listed": f"{out} {dev}", "passAsFile": "listed"},
        outputs=["out", "dev"],
    )

    build_derivation(store, drv)

    paths = drv.output_paths()
    seen = json.loads(Path(paths["out"]).read_text())
    assert seen == {
        "arg": f"{paths['dev']}/include",
        "env": f"{paths['out']}/bin",
        "file": f"{paths['out']} {paths['dev']}",
    }


def test_allowed_requisites_must_hold_the_whole_closure(
    store: LocalStore, chain: tuple[Derivation, Derivation]
) -> None:
    dep, mid = chain
    narrow = {"allowedRequisites": mid.output_path()}
    error = failure_of(store, pydrv(store, "narrow", USER, [mid], env=narrow))

    assert error.failure.kind == "references"
    assert error.failure.details == (
        f"output 'out' may not have in its closure '{dep.output_path()}' "
        "(allowedRequisites)",
    )
    assert "allowedRequisites" in error.message and dep.output_path() in error.message

    # The output itself need not be listed: Nix ignores it in its closure.
    wide = {"allowedRequisites": f"{mid.output_path()} {dep.output_path()}"}
    fine = pydrv(store, "wide", USER, [mid], env=wide)
    build_derivation(store, fine)
    assert store.query_references(fine.output_path()) == {
        mid.output_path(),
        fine.output_path(),
    }


def test_disallowed_requisites_reach_through_references(
    store: LocalStore, chain: tuple[Derivation, Derivation]
) -> None:
    dep, mid = chain
    env = {"disallowedRequisites": dep.output_path(), "disallowedReferences": "out"}
    drv = pydrv(store, "banned", USER, [mid], env=env)

    error = failure_of(store, drv)

    # A reference to itself counts for references, not for requisites.
    assert error.failure.details == (
        f"output 'out' may not refer to '{drv.output_path()}' (disallowedReferences)",
        f"output 'out' may not have in its closure '{dep.output_path()}' "
        "(disallowedRequisites)",
    )
    assert error.failure.reason == (
        "output 'out' breaks its derivation's "
        "disallowedReferences and disallowedRequisites"
    )
    only_self = {"disallowedRequisites": "out"}
    build_derivation(store, pydrv(store, "self", USER, [mid], env=only_self))


MULTI = """
lib = os.environ['lib']
open(lib, 'w').write(os.environ['in0'])
open(out, 'w').write(lib)
"""


@pytest.mark.parametrize(
    ("forbidden", "expected"),
    [
        pytest.param("dep", {"out", "lib"}, id="input-via-sibling-output"),
        pytest.param("lib", {"out"}, id="output-name-means-its-path"),
    ],
)
def test_requisites_follow_the_other_outputs_just_built(
    store: LocalStore,
    chain: tuple[Derivation, Derivation],
    forbidden: str,
    expected: set[str],
) -> None:
    dep, _ = chain
    item = dep.output_path() if forbidden == "dep" else "lib"
    env: dict[str, Any] = {"disallowedRequisites": item}
    drv = pydrv(store, "multi", MULTI, [dep], env=env, outputs=["out", "lib"])

    error = failure_of(store, drv)

    path = drv.output_path(forbidden) if forbidden == "lib" else dep.output_path()
    assert {line.split("'")[1] for line in error.failure.details} == expected
    assert all(f"'{path}' (disallowedRequisites)" in d for d in error.failure.details)


def test_a_list_item_that_is_no_path_nor_output_is_refused(
    store: LocalStore,
) -> None:
    env = {"allowedRequisites": "out nonsense"}
    error = failure_of(store, pydrv(store, "bad-spec", "open(out, 'w')", env=env))
    assert error.failure.kind == "references"
    assert "allowedRequisites names 'nonsense'" in error.message
