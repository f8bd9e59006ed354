"""``.attrs.json`` and ``.attrs.sh`` against those Nix 2.8 wrote for the same
derivations (fixtures/structured, see generate.sh), and the rules behind them."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from builders.structured_attrs import (
    StructuredAttrsError,
    attrs_files,
    exported_graphs,
    graph_objects,
    hash_placeholder,
    output_checks,
    parse_structured_attrs,
    prepare_structured_attrs,
    to_attrs_json,
    to_attrs_sh,
)
from derivations.aterm_parser import from_aterm
from derivations.derivation import Derivation
from store import nar
from store.database import PathInfo
from store.local import LocalStore

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "structured"
NIX_STORE = "/nix/store"
CASES = dict(line.split() for line in (FIXTURES / "cases.txt").read_text().splitlines())


def golden_drv(case: str) -> Derivation:
    path = CASES[case]
    data = (FIXTURES / os.path.basename(path)).read_bytes()
    return from_aterm(data, NIX_STORE, path=path)


def golden_file(case: str, name: str) -> bytes:
    return (FIXTURES / (os.path.basename(CASES[case]) + name)).read_bytes()


def add_graph_inputs(store: LocalStore, drv: Derivation) -> None:
    """Make valid in ``store`` what the ``graph`` case exports, as Nix had it:
    two texts, a source file, and a built file referring to itself."""
    text = str(store.add_text("attrs-text", "some text\n"))
    store.add_text("attrs-refers", f"uses {text}\n", [text])
    store.add_path(str(FIXTURES / "source.txt"))

    selfish = json.loads(drv.env["__json"])["exportReferencesGraph"]["built"]
    physical = store.physical(selfish)
    Path(physical).write_text(f"{selfish} {text}\n")
    nar_hash, nar_size = nar.hash_path(physical)
    info = PathInfo(selfish, nar_hash, nar_size, frozenset({text, selfish}))
    store.register_valid_paths([info])


def pyguix_files(store: LocalStore, drv: Derivation) -> dict[str, bytes]:
    """Return the files pyguix writes for ``drv``, as the build does."""
    attrs = parse_structured_attrs(drv)
    assert attrs is not None
    graphs = {
        name: graph_objects(store, paths)
        for name, paths in exported_graphs(drv, attrs).items()
    }
    outputs = drv.output_paths()
    return attrs_files(prepare_structured_attrs(attrs, outputs, graphs), outputs)


@pytest.mark.parametrize("name", [".attrs.json", ".attrs.sh"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_files_are_nixs_byte_for_byte(
    nix_store: LocalStore, case: str, name: str
) -> None:
    drv = golden_drv(case)
    if case == "graph":
        add_graph_inputs(nix_store, drv)

    files = pyguix_files(nix_store, drv)

    assert files[name].decode() == golden_file(case, name).decode()


def test_the_golden_graph_holds_self_references_and_content_addresses() -> None:
    graph = json.loads(golden_file("graph", ".attrs.json"))
    built = graph["built"][-1]
    assert built["path"] in built["references"] and "ca" not in built
    assert graph["both"][0]["ca"].startswith("text:sha256:")
    assert graph["both"][1]["ca"].startswith("fixed:r:sha256:")
    assert built["closureSize"] == built["narSize"] + graph["both"][0]["narSize"]


def test_a_derivation_without_json_is_not_structured() -> None:
    env = dict(golden_drv("values").env)
    del env["__json"]
    assert parse_structured_attrs(replace(golden_drv("values"), env=env)) is None


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("{", id="not-json"),
        pytest.param("[1]", id="not-an-object"),
        pytest.param('{"a": NaN}', id="nan-is-not-json"),
        pytest.param('{"a": 1e400}', id="number-out-of-range"),
        pytest.param('{"a": "\udcff"}', id="bytes-not-utf8"),
        pytest.param('{"a": "\\ud800"}', id="lone-surrogate-escape"),
    ],
)
def test_json_that_nix_refuses_is_refused(text: str) -> None:
    drv = golden_drv("values")
    broken = replace(drv, env={**drv.env, "__json": text})
    with pytest.raises(StructuredAttrsError, match="'__json' attribute of"):
        parse_structured_attrs(broken)


@pytest.mark.parametrize(
    ("value", "declared"),
    [
        pytest.param(2**31, "-2147483648", id="int-wraps-at-32-bits"),
        pytest.param(-(2**32) - 3, "-3", id="negative-int-wraps"),
        pytest.param(3.0, "3", id="whole-float"),
        pytest.param(2.000000001, "2", id="whole-once-a-32-bit-float"),
        pytest.param(-3.0, "-3", id="negative-whole-float"),
        pytest.param(1e10, "-2147483648", id="float-out-of-int-range"),
        pytest.param(1e300, "-2147483648", id="float-out-of-float-range"),
        pytest.param(2.5, None, id="fraction-left-out"),
        pytest.param({"k": [1]}, None, id="nested-left-out"),
        pytest.param([], "()", id="empty-list"),
        pytest.param({}, "()", id="empty-object"),
    ],
)
def test_shell_declarations_of_numbers_and_nesting(
    value: Any, declared: str | None
) -> None:
    line = to_attrs_sh({"v": value})
    if declared is None:
        assert line == ""
    else:
        assert line.split("=", 1)[1] == declared + "\n"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        pytest.param(1e15, "1e+15", id="exponent-from-1e15"),
        pytest.param(-1234567890123456.8, "-1.2345678901234568e+15", id="digits"),
        pytest.param(1e16, "1e+16", id="exponent-as-repr"),
        pytest.param(999999999999999.0, "999999999999999.0", id="below-1e15"),
        pytest.param(1e-5, "1e-05", id="small"),
        pytest.param(2**64, "1.8446744073709552e+19", id="int-beyond-64-bits"),
        pytest.param("\x01é/", '"\\u0001é/"', id="control-and-unicode"),
    ],
)
def test_json_numbers_and_strings_as_nlohmann_writes_them(
    value: Any, text: str
) -> None:
    assert to_attrs_json(value) == text


def test_placeholders_become_output_paths() -> None:
    outputs = {"out": "/nix/store/aaaa-x"}
    files = attrs_files({"p": hash_placeholder("out") + "/bin"}, outputs)
    assert files[".attrs.json"] == b'{"p":"/nix/store/aaaa-x/bin"}'
    assert files[".attrs.sh"] == b"declare p='/nix/store/aaaa-x/bin'\n"


@pytest.mark.parametrize(
    ("checks", "message"),
    [
        pytest.param("no", "'outputChecks' of .* must be an object", id="not-object"),
        pytest.param(
            {"out": 1}, "'outputChecks.out' of .* must be an object", id="entry"
        ),
        pytest.param(
            {"out": {"maxSize": -1}}, "'outputChecks.out.maxSize'", id="negative-size"
        ),
        pytest.param(
            {"out": {"maxClosureSize": 1.5}},
            "'outputChecks.out.maxClosureSize'",
            id="fractional-size",
        ),
        pytest.param(
            {"out": {"allowedReferences": [1]}},
            "'outputChecks.out.allowedReferences' .* list of strings",
            id="list-of-numbers",
        ),
    ],
)
def test_ill_typed_output_checks_are_refused(checks: Any, message: str) -> None:
    with pytest.raises(StructuredAttrsError, match=message):
        output_checks(golden_drv("values"), {"outputChecks": checks}, "out")


def test_a_lone_string_is_a_one_item_list_as_in_nix() -> None:
    attrs = {"outputChecks": {"out": {"allowedReferences": "out", "maxSize": 9}}}
    checks = output_checks(golden_drv("values"), attrs, "out")
    assert checks is not None
    assert checks.lists == {"allowedReferences": ["out"]} and checks.max_size == 9
    assert output_checks(golden_drv("values"), attrs, "dev") is None
