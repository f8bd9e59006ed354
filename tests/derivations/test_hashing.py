from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import pytest

from derivations.create import make_derivation
from derivations.derivation import Derivation, DerivationError
from derivations.hashing import (
    ModuloCache,
    OutputPathMismatch,
    check_output_paths,
    derivation_path,
    hash_derivation_modulo,
    with_output_paths,
    without_output_paths,
)

S = "/nix/store"


def test_derivation_path_equals_nix(golden: Any, golden_path: str) -> None:
    assert str(derivation_path(golden.drvs[golden_path], S)) == golden_path


def test_output_paths_equal_nix(golden: Any, golden_path: str) -> None:
    drv = golden.drvs[golden_path]
    computed = with_output_paths(
        without_output_paths(drv), S, golden.drvs.__getitem__, ModuloCache()
    )
    assert computed.output_paths() == drv.output_paths()
    assert computed.env == drv.env


def test_fixed_output_hash_is_of_its_output_alone(golden: Any) -> None:
    drv = golden.case("fod-recursive-sha1")
    out = drv.outputs["out"]
    expected = f"fixed:out:r:sha1:da39a3ee5e6b4b0d3255bfef95601890afd80709:{out.path}"
    hashes = hash_derivation_modulo(drv, golden.drvs.__getitem__, True)
    assert hashes == {"out": hashlib.sha256(expected.encode()).digest()}


def test_fixed_outputs_with_other_builders_are_interchangeable(golden: Any) -> None:
    a, b = golden.case("fod-a"), golden.case("fod-b")
    assert a.path != b.path and a.builder != b.builder and a.args != b.args
    assert a.output_paths() == b.output_paths()
    dep_a, dep_b = golden.case("fod-dependent-a"), golden.case("fod-dependent-b")
    assert dep_a.path != dep_b.path
    assert dep_a.output_paths() == dep_b.output_paths()
    resolve = golden.drvs.__getitem__
    assert hash_derivation_modulo(dep_a, resolve, False) == hash_derivation_modulo(
        dep_b, resolve, False
    )


def test_inputs_with_the_same_hash_are_merged(golden: Any) -> None:
    split, joined = golden.case("fod-parent-split"), golden.case("fod-parent-joined")
    assert len(split.input_derivations) == 2 and len(joined.input_derivations) == 1
    assert split.output_paths() == joined.output_paths()


def test_input_hashes_are_memoised_by_path(golden: Any) -> None:
    cache = ModuloCache()
    drv = golden.case("diamond")
    hash_derivation_modulo(drv, golden.drvs.__getitem__, True, cache)
    assert set(cache.hashes) == {
        path for path in golden.drvs if "diamond-" in path and "top" not in path
    }
    read: list[str] = []

    def counting(path: str) -> Derivation:
        read.append(path)
        return golden.drvs[path]  # type: ignore[no-any-return]

    hash_derivation_modulo(drv, counting, True, cache)
    assert read == []


def test_masking_changes_the_hash(golden: Any) -> None:
    drv = golden.case("simple")
    resolve = golden.drvs.__getitem__
    assert hash_derivation_modulo(drv, resolve, True) != hash_derivation_modulo(
        drv, resolve, False
    )


def test_missing_output_of_an_input_is_an_error(golden: Any) -> None:
    drv = golden.case("chain-c")
    (input_path,) = drv.input_derivations
    broken = dataclasses.replace(
        drv, input_derivations={input_path: frozenset({"dev"})}
    )
    with pytest.raises(DerivationError, match="has no such output"):
        hash_derivation_modulo(broken, golden.drvs.__getitem__, True, ModuloCache())


def test_golden_output_paths_check(golden: Any, golden_path: str) -> None:
    check_output_paths(
        golden.drvs[golden_path], S, golden.drvs.__getitem__, ModuloCache()
    )


def test_a_changed_derivation_fails_the_check(golden: Any) -> None:
    drv = golden.case("multi")
    changed = dataclasses.replace(drv, args=("-c", "false"))
    with pytest.raises(OutputPathMismatch) as error:
        check_output_paths(changed, S, golden.drvs.__getitem__)
    assert error.value.output == "dev"
    assert error.value.actual == drv.output_path("dev")
    assert error.value.expected != error.value.actual
    assert f"'{error.value.expected}'" in str(error.value)


def test_an_output_variable_must_hold_its_path(golden: Any) -> None:
    drv = golden.case("simple")
    changed = dataclasses.replace(drv, env={**drv.env, "out": "/elsewhere"})
    with pytest.raises(OutputPathMismatch, match="'/elsewhere'"):
        check_output_paths(changed, S, golden.drvs.__getitem__)


def test_fixed_output_hash_ignores_the_written_path(golden: Any) -> None:
    drv = golden.case("fod-flat-sha512")
    resolve = golden.drvs.__getitem__
    elsewhere = dict(drv.outputs)
    elsewhere["out"] = dataclasses.replace(drv.outputs["out"], path=f"{S}/{'0' * 32}-x")
    moved = dataclasses.replace(drv, outputs=elsewhere)
    expected = hash_derivation_modulo(drv, resolve, False)
    assert hash_derivation_modulo(moved, resolve, False) == expected
    masked = without_output_paths(drv)
    masked = dataclasses.replace(masked, path="")
    assert hash_derivation_modulo(masked, resolve, True, store_dir=S) == expected


def test_a_long_chain_is_hashed_with_an_empty_cache() -> None:
    # Hashing a derivation needs its inputs' hashes, theirs, and so on: a
    # chain thousands long must not need as many nested calls.
    drvs: dict[str, Derivation] = {}
    previous: str | None = None
    building = ModuloCache()
    for index in range(3000):
        drv, _ = make_derivation(
            S,
            f"link-{index}",
            "/bin/sh",
            inputs={previous: ["out"]} if previous else {},
            resolve=drvs.__getitem__,
            cache=building,
        )
        assert drv.path is not None
        drvs[drv.path] = drv
        previous = drv.path

    assert previous is not None
    top = drvs[previous]
    fresh = ModuloCache()
    resolve = drvs.__getitem__
    expected = hash_derivation_modulo(top, resolve, False, building)
    assert hash_derivation_modulo(top, resolve, False, fresh) == expected
    assert len(fresh) == 2999
    check_output_paths(top, S, resolve, ModuloCache())
