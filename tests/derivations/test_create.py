from __future__ import annotations

from typing import Any

import pytest

from derivations.aterm_parser import from_aterm
from derivations.create import (
    current_system,
    derivation,
    make_derivation,
    read_derivation,
)
from derivations.derivation import DerivationError
from derivations.hashing import ModuloCache
from store.errors import InvalidPathError
from store.hash import Hash

S = "/nix/store"
BASE_ARGS = ("-c", "true")


def nix_like(golden: Any, name: str, **options: Any) -> Any:
    """Create what `derivation { name; system; builder = "/bin/sh"; ... }`
    makes, with the variables Nix adds itself."""
    env = {"builder": "/bin/sh", "name": name, "system": "x86_64-linux"}
    env.update(options.pop("env", {}))
    drv, aterm = make_derivation(
        S,
        name,
        "/bin/sh",
        BASE_ARGS,
        env=env,
        system="x86_64-linux",
        resolve=golden.drvs.__getitem__,
        cache=ModuloCache(),
        **options,
    )
    return drv, aterm


def test_simple_equals_nix(golden: Any) -> None:
    drv, aterm = nix_like(golden, "simple")
    assert drv.path == golden.cases["simple"]
    assert aterm == golden.data[drv.path]


def test_multiple_outputs_equal_nix(golden: Any) -> None:
    outputs = ("out", "dev", "lib", "doc")
    drv, _ = nix_like(
        golden, "multi", outputs=outputs, env={"outputs": " ".join(outputs)}
    )
    assert drv.path == golden.cases["multi"]


def test_input_record_and_its_output_path_equal_nix(golden: Any) -> None:
    chain_b = golden.drvs[next(iter(golden.case("chain-c").input_derivations))]
    env = {"dep": chain_b.output_path()}
    drv, _ = nix_like(golden, "chain-c", inputs=[chain_b], env=env)
    assert drv.path == golden.cases["chain-c"]


def test_duplicate_inputs_are_coalesced(golden: Any) -> None:
    multi = golden.case("multi")
    env = {"paths": f"{multi.output_path('dev')} {multi.output_path('lib')}"}
    inputs = [(multi, "dev"), (multi.path, ["lib"]), (multi, "dev")]
    drv, _ = nix_like(golden, "uses-dev-and-lib", inputs=inputs, env=env)
    assert drv.input_derivations == {multi.path: frozenset({"dev", "lib"})}
    assert drv.path == golden.cases["two-outputs-of-one"]


def test_fixed_output_equals_nix(golden: Any) -> None:
    digest = Hash.from_string(
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    env = {
        "outputHash": digest.to_base16(),
        "outputHashAlgo": "sha256",
        "outputHashMode": "flat",
    }
    drv, _ = nix_like(golden, "flat-sha256", hash=digest, env=env)
    assert drv.is_fixed_output()
    assert drv.path == golden.cases["fod-flat-sha256"]


def test_sources_equal_nix(golden: Any) -> None:
    expected = golden.case("source-inputs")
    env = {key: expected.env[key] for key in ("script", "src")}
    drv, _ = nix_like(golden, "with-sources", sources=expected.input_sources, env=env)
    assert drv.path == expected.path


def test_guix_options_become_variables(golden: Any) -> None:
    drv, aterm = nix_like(
        golden,
        "opts",
        allowed_references=["out", f"{S}/00000000000000000000000000000000-a"],
        disallowed_references=["b"],
        references_graphs=[("graph", f"{S}/00000000000000000000000000000000-a")],
        local_build=True,
        substitutable=False,
        leaked_env_vars=["http_proxy", "LANG"],
        properties={"type": "graft", "graft?": True, "n": [1, "x"]},
    )
    assert drv.env["preferLocalBuild"] == "1"
    assert drv.env["allowSubstitutes"] == "0"
    assert drv.env["allowedReferences"] == f"out {S}/00000000000000000000000000000000-a"
    assert drv.env["disallowedReferences"] == "b"
    assert (
        drv.env["exportReferencesGraph"]
        == f"graph {S}/00000000000000000000000000000000-a"
    )
    assert drv.env["impureEnvVars"] == "http_proxy LANG"
    assert (
        drv.env["guix properties"] == '((type . "graft") (graft? . #t) (n . (1 "x")))'
    )
    assert from_aterm(aterm, S, path=drv.path) == drv


def test_output_variables_hold_the_output_paths(golden: Any) -> None:
    drv, _ = nix_like(golden, "x", outputs=("out", "bin"), env={"bin": "overwritten"})
    assert drv.env["bin"] == drv.outputs["bin"].path
    assert drv.env["bin"].endswith("-x-bin")


@pytest.mark.parametrize(
    "options,error,message",
    [
        ({"outputs": ()}, DerivationError, "distinct output names"),
        ({"outputs": ("out", "out")}, DerivationError, "distinct output names"),
        ({"outputs": ("out", "b/c")}, InvalidPathError, "character '/'"),
        ({"hash": b"\0" * 20, "hash_algo": "sha256"}, DerivationError, "is not a hash"),
        (
            {"hash": b"\0" * 20, "hash_algo": "sha1", "outputs": ("out", "dev")},
            DerivationError,
            "one output",
        ),
        ({"inputs": ["/tmp/x.drv"]}, DerivationError, "not in the store"),
        (
            {"inputs": [f"{S}/00000000000000000000000000000000-a"]},
            DerivationError,
            "is not a .drv",
        ),
        (
            {
                "inputs": [f"{S}/00000000000000000000000000000000-a.drv"],
                "resolve": None,
            },
            DerivationError,
            "is unknown",
        ),
        ({"sources": ["relative"]}, DerivationError, "input source"),
    ],
    ids=[
        "no-outputs",
        "duplicate-output",
        "bad-output-name",
        "hash-size",
        "fixed-with-two-outputs",
        "input-outside-store",
        "input-not-drv",
        "unknown-input",
        "bad-source",
    ],
)
def test_invalid_derivations_are_refused(
    options: dict[str, Any], error: type, message: str
) -> None:
    options.setdefault("system", "x86_64-linux")
    with pytest.raises(error, match=message):
        make_derivation(S, "x", "/bin/sh", **options)


def test_bad_name_is_refused() -> None:
    with pytest.raises(InvalidPathError):
        make_derivation(S, "a b", "/bin/sh", system="s")


def test_derivation_writes_into_a_store(tmp_path: Any) -> None:
    local = pytest.importorskip("store.local")
    store = local.LocalStore(
        "/nix/store", str(tmp_path / "state"), root=str(tmp_path / "root")
    )
    base = derivation(
        store,
        "base",
        "/bin/sh",
        ["-c", "true"],
        system="x86_64-linux",
        outputs=("out", "dev"),
    )
    top = derivation(
        store, "top", "/bin/sh", inputs=[(base.path, "dev")], system="x86_64-linux"
    )
    assert store.is_valid(base.path) and store.is_valid(top.path)
    assert set(store.query_references(top.path)) == {base.path}
    with open(store.physical(top.path), "rb") as file:
        assert from_aterm(file.read(), S, path=top.path) == top
    assert read_derivation(store, top.path) == top


def test_current_system_names_this_machine() -> None:
    import platform

    assert current_system().startswith(platform.machine() + "-")
    assert current_system().endswith("-linux")


def test_read_derivation_reports_a_missing_file(tmp_path: Any) -> None:
    local = pytest.importorskip("store.local")
    store = local.LocalStore(S, str(tmp_path / "state"), root=str(tmp_path / "root"))
    missing = f"{S}/00000000000000000000000000000000-gone.drv"
    with pytest.raises(DerivationError, match="is not in the store"):
        read_derivation(store, missing)
    with pytest.raises(InvalidPathError):
        read_derivation(store, "/tmp/x.drv")


def test_derivation_input_paths_are_read_from_the_store(tmp_path: Any) -> None:
    local = pytest.importorskip("store.local")
    store = local.LocalStore(S, str(tmp_path / "state"), root=str(tmp_path / "root"))
    base = derivation(store, "base", "/bin/sh", system="x86_64-linux")
    # The same derivation made purely, reading the input from the store file.
    from derivations.create import clear_read_cache

    clear_read_cache()
    top = derivation(store, "top", "/bin/sh", inputs=[base.path], system="x86_64-linux")
    pure, _ = make_derivation(
        S, "top", "/bin/sh", inputs=[base], system="x86_64-linux", cache=ModuloCache()
    )
    assert top == pure
