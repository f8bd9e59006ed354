"""Real sandboxed builds of derivations with structured attributes: the
builder's ``.attrs.json`` and ``.attrs.sh``, and each output's
``outputChecks``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from helpers.builds import built
from helpers.builds import python_derivation as pydrv

from builders.build import BuildError, build_derivation
from builders.environment import pass_as_file_name
from builders.linux import namespaces_unavailable_reason
from builders.structured_attrs import graph_objects
from derivations.derivation import Derivation
from store import nar
from store.local import LocalStore

pytestmark = pytest.mark.skipif(
    namespaces_unavailable_reason() is not None,
    reason=f"no namespaces here: {namespaces_unavailable_reason()}",
)

# The variables every builder gets; a structured one gets nothing more.
BASE_VARIABLES = {
    "HOME",
    "NIX_BUILD_CORES",
    "NIX_BUILD_TOP",
    "NIX_LOG_FD",
    "NIX_STORE",
    "PATH",
    "PWD",
    "TEMP",
    "TEMPDIR",
    "TERM",
    "TMP",
    "TMPDIR",
}

# A structured builder finds its output, and its input, in .attrs.json.
PROLOGUE = """
import json
attrs = json.load(open('.attrs.json'))
out = attrs['outputs']['out']
"""

# Writes an output referring to the input named 'dep' in the attributes.
REFER = PROLOGUE + "open(out, 'w').write('uses ' + attrs['dep'] + '\\n')"


def structured(
    store: LocalStore,
    name: str,
    code: str,
    attrs: dict[str, Any],
    inputs: tuple[Derivation, ...] = (),
    env: dict[str, str] | None = None,
) -> Derivation:
    """Make a derivation whose ``__json`` is ``attrs``, running ``code``."""
    variables = {"__json": json.dumps(attrs), **(env or {})}
    drv: Derivation = pydrv(store, name, code, inputs, env=variables)
    return drv


def failure_of(store: LocalStore, drv: Derivation) -> BuildError:
    with pytest.raises(BuildError) as caught:
        build_derivation(store, drv)
    assert not store.is_valid(drv.output_path())
    return caught.value


def nar_size_of(tmp_path: Path, text: str) -> int:
    """Return the NAR size of a regular file holding ``text``."""
    file = tmp_path / "sized"
    file.write_text(text)
    return nar.hash_path(file)[1]


# ---------------------------------------------------------------------------
# What the builder sees


def test_builder_sees_attrs_files_and_no_derivation_variables(
    store: LocalStore, chain: tuple[Derivation, Derivation]
) -> None:
    _, mid = chain
    code = (
        PROLOGUE
        + """
json.dump({'env': sorted(os.environ), 'json': open('.attrs.json').read(),
           'sh': open('.attrs.sh').read(), 'listing': sorted(os.listdir('.')),
           'uid': os.stat('.attrs.json').st_uid}, open(out, 'w'))
"""
    )
    attrs = {
        "greeting": "it's me",
        "count": 3,
        "passAsFile": ["greeting"],
        "exportReferencesGraph": {"deps": [mid.output_path()]},
    }
    env = {"visible": "no", "passAsFile": "visible"}
    drv = structured(store, "sees", code, attrs, (mid,), env)

    build_derivation(store, drv)

    seen = json.loads(Path(drv.output_path()).read_text())
    assert set(seen["env"]) == BASE_VARIABLES
    assert seen["listing"] == [".attrs.json", ".attrs.sh"]
    assert pass_as_file_name("visible") not in seen["listing"]
    assert seen["uid"] == 1000
    written = json.loads(seen["json"])
    assert written["outputs"] == {"out": drv.output_path()}
    assert written["greeting"] == "it's me" and written["count"] == 3
    assert written["deps"] == graph_objects(store, [mid.output_path()])
    assert [item["path"] for item in written["deps"]] == sorted(
        store.query_requisites([mid.output_path()])
    )
    assert "declare greeting='it'\\''s me'\n" in seen["sh"]
    assert "declare count=3\n" in seen["sh"]
    assert f"declare -A outputs=(['out']='{drv.output_path()}' )\n" in seen["sh"]


def test_export_of_a_path_that_is_no_input_is_refused(
    store: LocalStore, chain: tuple[Derivation, Derivation]
) -> None:
    _, mid = chain
    other = built(store, "other", "open(out, 'w')")
    attrs = {"exportReferencesGraph": {"deps": [other.output_path()]}}
    error = failure_of(store, structured(store, "outside", REFER, attrs, (mid,)))

    assert error.failure.kind == "setup"
    assert error.failure.reason == (
        f"exportReferencesGraph.deps names '{other.output_path()}', "
        "which is not in its input closure"
    )


def test_json_that_is_not_an_object_fails_the_build_clearly(
    store: LocalStore,
) -> None:
    drv = pydrv(store, "bad-json", "pass", env={"__json": "[1, 2]"})
    error = failure_of(store, drv)
    assert error.failure.kind == "setup"
    assert "'__json' attribute of" in error.failure.reason
    assert "is not a JSON object" in error.failure.reason


# ---------------------------------------------------------------------------
# outputChecks


def checked(
    store: LocalStore, name: str, checks: dict[str, Any], dep: Derivation
) -> Derivation:
    """A structured derivation referring to ``dep``, with ``checks`` on 'out'."""
    attrs = {"dep": dep.output_path(), "outputChecks": {"out": checks}}
    return structured(store, name, REFER, attrs, (dep,))


def test_allowed_references_fail_and_pass(
    store: LocalStore, chain: tuple[Derivation, Derivation]
) -> None:
    _, mid = chain
    error = failure_of(store, checked(store, "no-refs", {"allowedReferences": []}, mid))

    rule = "outputChecks.out.allowedReferences"
    assert error.failure.kind == "references"
    assert error.failure.reason == f"output 'out' breaks its derivation's {rule}"
    assert error.failure.details == (
        f"output 'out' may not refer to '{mid.output_path()}' ({rule})",
    )

    allowed = {"allowedReferences": [mid.output_path()]}
    build_derivation(store, checked(store, "some-refs", allowed, mid))


@pytest.mark.parametrize(
    ("forbidden", "fails"),
    [
        pytest.param("dep", True, id="through-a-reference"),
        pytest.param("out", True, id="the-output-itself-counts"),
        pytest.param("other", False, id="respected"),
    ],
)
def test_disallowed_requisites(
    store: LocalStore,
    chain: tuple[Derivation, Derivation],
    forbidden: str,
    fails: bool,
) -> None:
    dep, mid = chain
    other = built(store, "other", "open(out, 'w')")
    item = {"dep": dep.output_path(), "out": "out", "other": other.output_path()}
    drv = checked(
        store, f"req-{forbidden}", {"disallowedRequisites": [item[forbidden]]}, mid
    )

    if not fails:
        build_derivation(store, drv)
        return
    error = failure_of(store, drv)
    path = drv.output_path() if forbidden == "out" else dep.output_path()
    assert error.failure.details == (
        f"output 'out' may not have in its closure '{path}' "
        "(outputChecks.out.disallowedRequisites)",
    )


def test_max_size_counts_the_outputs_nar(
    store: LocalStore, chain: tuple[Derivation, Derivation], tmp_path: Path
) -> None:
    _, mid = chain
    size = nar_size_of(tmp_path, f"uses {mid.output_path()}\n")

    error = failure_of(store, checked(store, "big", {"maxSize": size - 1}, mid))

    assert error.failure.reason == (
        "output 'out' breaks its derivation's outputChecks.out.maxSize"
    )
    assert error.failure.details == (
        f"output 'out' is {size} bytes, over the limit of {size - 1} bytes "
        "(outputChecks.out.maxSize)",
    )
    assert error.failure.hint == "make the output smaller, or raise the limit"
    drv = checked(store, "small", {"maxSize": size}, mid)
    build_derivation(store, drv)
    info = store.query_path_info(drv.output_path())
    assert info is not None and info.nar_size == size


def test_max_closure_size_counts_the_whole_closure(
    store: LocalStore, chain: tuple[Derivation, Derivation], tmp_path: Path
) -> None:
    _, mid = chain
    closure = store.query_requisites([mid.output_path()])
    inputs = 0
    for path in closure:
        info = store.query_path_info(path)
        assert info is not None
        inputs += info.nar_size
    size = nar_size_of(tmp_path, f"uses {mid.output_path()}\n") + inputs

    limit = {"maxClosureSize": size - 1}
    error = failure_of(store, checked(store, "heavy", limit, mid))

    assert error.failure.details == (
        f"the closure of output 'out' is {size} bytes, over the limit of "
        f"{size - 1} bytes (outputChecks.out.maxClosureSize)",
    )
    build_derivation(store, checked(store, "light", {"maxClosureSize": size}, mid))


def test_every_broken_check_is_reported_at_once(
    store: LocalStore, chain: tuple[Derivation, Derivation]
) -> None:
    _, mid = chain
    checks = {"maxSize": 1, "allowedReferences": []}
    error = failure_of(store, checked(store, "both", checks, mid))

    assert error.failure.reason == (
        "output 'out' breaks its derivation's outputChecks.out.allowedReferences "
        "and outputChecks.out.maxSize"
    )
    assert len(error.failure.details) == 2


def test_environment_checks_are_ignored_with_structured_attributes(
    store: LocalStore, chain: tuple[Derivation, Derivation]
) -> None:
    _, mid = chain
    attrs = {"dep": mid.output_path(), "allowedReferences": []}
    env = {"allowedReferences": "", "disallowedRequisites": mid.output_path()}
    drv = structured(store, "ignored", REFER, attrs, (mid,), env)

    build_derivation(store, drv)

    assert store.query_references(drv.output_path()) == {mid.output_path()}


def test_checks_of_another_output_do_not_apply(
    store: LocalStore, chain: tuple[Derivation, Derivation]
) -> None:
    _, mid = chain
    attrs = {"dep": mid.output_path(), "outputChecks": {"dev": {"maxSize": 0}}}
    build_derivation(store, structured(store, "other-output", REFER, attrs, (mid,)))


def test_a_bad_reference_specifier_names_the_rule(
    store: LocalStore, chain: tuple[Derivation, Derivation]
) -> None:
    _, mid = chain
    checks = {"allowedRequisites": ["out", "nonsense"]}
    error = failure_of(store, checked(store, "bad-spec", checks, mid))
    assert error.failure.reason == (
        "its outputChecks.out.allowedRequisites names 'nonsense', which is "
        "neither a store path nor one of its outputs"
    )


def test_an_ill_typed_size_fails_the_build_clearly(
    store: LocalStore, chain: tuple[Derivation, Derivation]
) -> None:
    _, mid = chain
    error = failure_of(store, checked(store, "typed", {"maxSize": "10"}, mid))
    assert error.failure.kind == "setup"
    assert "'outputChecks.out.maxSize'" in error.failure.reason
    assert os.path.basename(error.drv_path).endswith("typed.drv")
