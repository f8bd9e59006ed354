"""Tests of lowering deeply nested objects: chains of 2,000 computed files
and gexps nested 2,000 deep lower cold, then warm from the persistent cache
in a new process; hashing, comparing, fingerprinting, expanding and
collecting the inputs of such graphs use no recursion; and fingerprints of
ordinary objects keep the digests they had when those were recursive."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import pytest

from derivations.file_like import (
    computed_file,
    directory_union,
    file_append,
    file_union,
    mixed_text_file,
    plain_file,
    program_file,
)
from derivations.gexp import (
    Compiler,
    Gexp,
    GexpInput,
    expand_gexp,
    gexp,
    gexp_fingerprint,
    gexp_inputs,
    gexp_outputs,
    gexp_text,
    register_compiler,
)
from derivations.lowering import (
    LoweringError,
    _fingerprint,
    _packed,
    lower_object,
    object_key,
)
from derivations.monad import mreturn, run_with_store
from store.hash import hash_bytes
from store.local import LocalStore

DEPTH = 2000
"""Deeper than Python's default recursion limit of 1,000 frames."""

CHAIN = """
import json, sys
from store.local import LocalStore
from derivations.create import read_derivation
from derivations.file_like import computed_file, plain_file
from derivations.gexp import gexp
from derivations.lowering import lower_object, lowering_stats
from derivations.monad import run_with_store

store = LocalStore(sys.argv[1], sys.argv[2])
obj = plain_file("seed", "0")
for n in range(int(sys.argv[3])):
    obj = computed_file(f"link-{n}", gexp("print($x)", x=obj))
if sys.argv[4]:
    obj = computed_file("top", gexp("print($x, $y)", x=obj, y=sys.argv[4]))
drv = run_with_store(store, lower_object(obj), system="x86_64-linux")
below = read_derivation(store, sorted(drv.input_derivations)[0])
stats = lowering_stats(store)
print(json.dumps({"path": drv.path, "below": below.name,
                  "hits": stats.hits, "misses": stats.misses}))
"""

NESTED = """
import json, sys
from store.local import LocalStore
from derivations.file_like import computed_file, plain_file
from derivations.gexp import gexp, gexp_text
from derivations.lowering import lower_object, lowering_stats
from derivations.monad import run_with_store

store = LocalStore(sys.argv[1], sys.argv[2])
g = gexp("os.mkdir(${output:lib}); $s", s=plain_file("seed", "0"))
g = gexp("exec($t)", t=gexp_text(g))
for n in range(int(sys.argv[3])):
    g = gexp("[$g]", g=g) if n % 2 else gexp("$g", g=[g])
drv = run_with_store(store, lower_object(computed_file("nested", g)), system="x86_64-linux")
stats = lowering_stats(store)
builder = open(store.physical(drv.args[-1])).read()
print(json.dumps({"path": drv.path, "outputs": sorted(drv.outputs),
                  "sources": len(drv.input_sources),
                  "brackets": "[" * int(sys.argv[3]) in builder,
                  "hits": stats.hits, "misses": stats.misses}))
"""


def run(tmp_path: Path, script: str, depth: int, extra: str = "") -> dict[str, Any]:
    """Run ``script`` in a new process on the store under ``tmp_path``."""
    output = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            str(tmp_path / "store"),
            str(tmp_path / "state"),
            str(depth),
            extra,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    report: dict[str, Any] = json.loads(output)
    return report


# ---------------------------------------------------------------------------
# Whole lowerings, in new processes


def test_chain_of_computed_files_lowers_cold_then_warm(tmp_path: Path) -> None:
    cold = run(tmp_path, CHAIN, DEPTH)
    assert cold["path"].endswith(f"-link-{DEPTH - 1}.drv")
    assert cold["below"] == f"link-{DEPTH - 2}"
    assert (cold["hits"], cold["misses"]) == (0, DEPTH + 1)

    warm = run(tmp_path, CHAIN, DEPTH)
    assert warm["path"] == cold["path"]
    assert (warm["hits"], warm["misses"]) == (1, 0)

    # A new top over the cached chain hashes the chain read back from the store.
    changed = run(tmp_path, CHAIN, DEPTH, "changed")
    assert changed["path"].endswith("-top.drv")
    assert changed["below"] == f"link-{DEPTH - 1}"
    assert (changed["hits"], changed["misses"]) == (1, 1)


def test_gexps_nested_in_gexps_lower_cold_then_warm(tmp_path: Path) -> None:
    cold = run(tmp_path, NESTED, DEPTH)
    assert cold["path"].endswith("-nested.drv")
    assert cold["outputs"] == ["lib"]
    assert cold["sources"] == 2  # the seed and the builder
    assert cold["brackets"]
    assert (cold["hits"], cold["misses"]) == (0, 2)

    warm = run(tmp_path, NESTED, DEPTH)
    assert warm == {**cold, "hits": 1, "misses": 0}


def test_file_appends_nested_deep_expand_in_order(tmp_path: Path) -> None:
    store = LocalStore(str(tmp_path / "store"), str(tmp_path / "state"))
    seed = plain_file("seed", "0")
    obj: Any = seed
    for n in range(DEPTH):
        obj = file_append(obj, f"/{n}")
    lowered = run_with_store(
        store, lower_object(computed_file("user", gexp("print($x)", x=obj)))
    )
    seed_path = str(run_with_store(store, lower_object(seed)))
    builder = Path(store.physical(lowered.args[-1])).read_text()  # type: ignore[union-attr]
    expected = seed_path + "".join(f"/{n}" for n in range(DEPTH))
    assert f"print({expected!r})" in builder


# ---------------------------------------------------------------------------
# The walks, without a store


def nested_gexp(depth: int, bottom: Any) -> Gexp:
    """Return ``depth`` gexps, each quoting the one below in a list."""
    g = gexp("f($x, ${output:doc})", x=bottom)
    for _ in range(depth):
        g = gexp("[$g]", g=g)
    return g


def chain(depth: int, seed: str = "0") -> Any:
    """Return a chain of ``depth`` computed files over a plain file."""
    obj: Any = plain_file("seed", seed)
    for n in range(depth):
        obj = computed_file(f"link-{n}", gexp("print($x, $y)", x=obj, y=[obj]))
    return obj


def test_deep_gexps_expand_and_list_their_inputs_and_outputs() -> None:
    seed = plain_file("seed", "0")
    g = nested_gexp(DEPTH, gexp_text(gexp("g($s)", s=seed)))

    code = expand_gexp(g, lambda item: f"/path/{item.thing.name}")

    inner = repr("g('/path/seed')")
    assert code == "[" * DEPTH + f"f({inner}, os.environ['doc'])" + "]" * DEPTH
    assert gexp_inputs(g) == (GexpInput(seed),)
    assert gexp_outputs(g) == ("doc",)


def test_deep_gexps_fingerprint_as_nested_data() -> None:
    g = nested_gexp(DEPTH, "/gnu/store/" + "a" * 32 + "-x")

    data = gexp_fingerprint(g, lambda thing: pytest.fail("no file-like object"))

    levels = 0
    while data[1] == ["[", ["hole", "g", None], "]"]:
        assert data[0] == "gexp" and data[2][0][0] == "g"
        data = data[2][0][1]
        levels += 1
    assert levels == DEPTH
    assert data[2] == [["x", ["path", "/gnu/store/" + "a" * 32 + "-x"]]]


def test_deep_graphs_built_apart_hash_and_compare_equal() -> None:
    first, second = chain(DEPTH), chain(DEPTH)
    other = chain(DEPTH, seed="1")

    assert first is not second
    assert hash(first) == hash(second) and first == second
    assert first != other
    assert {first: 1}[second] == 1
    assert nested_gexp(DEPTH, "x") == nested_gexp(DEPTH, "x")
    assert nested_gexp(DEPTH, "x") != nested_gexp(DEPTH, "y")


def test_deep_chains_have_keys_and_shared_objects_are_fingerprinted_once() -> None:
    memo: dict[Any, bytes | None] = {}

    key = object_key(chain(DEPTH), "x86_64-linux", "/gnu/store", memo)

    assert key is not None and len(key) == 32
    assert len(memo) == DEPTH + 1  # each link once, though named twice
    assert object_key(chain(DEPTH), "x86_64-linux", "/gnu/store") == key
    assert object_key(chain(DEPTH, "1"), "x86_64-linux", "/gnu/store") != key


@dataclass(frozen=True)
class Opaque:
    """A file-like object without a fingerprint."""

    name: str


register_compiler(Opaque, Compiler(lambda obj, system: mreturn(obj)))


def test_what_refers_to_an_unkeyable_object_deep_down_has_no_key() -> None:
    bottom = computed_file("bottom", gexp("print($o)", o=Opaque("o")))
    top = computed_file("top", gexp("print($x)", x=bottom))
    for n in range(DEPTH):
        top = computed_file(f"link-{n}", gexp("print($x)", x=top))
    memo: dict[Any, bytes | None] = {}

    assert object_key(top, "x86_64-linux", "/gnu/store", memo) is None
    assert memo[Opaque("o")] is None and memo[bottom] is None and memo[top] is None
    assert object_key(plain_file("a", "b"), "x86_64-linux", "/gnu/store", memo)


@dataclass(frozen=True)
class Loop:
    """A file-like object whose fingerprint names a new one, endlessly."""

    n: int


register_compiler(
    Loop,
    Compiler(
        lambda obj, system: mreturn(obj),
        fingerprint=lambda obj, of: [of(Loop(obj.n % 3 + 1))],
    ),
)


def test_an_object_referring_to_itself_is_an_error() -> None:
    with pytest.raises(LoweringError, match="refers to itself"):
        object_key(Loop(1), "x86_64-linux", "/gnu/store")


# ---------------------------------------------------------------------------
# Byte-identical keys


def golden_objects() -> dict[str, Any]:
    """Return objects of every kind, whose digests were recorded with the
    recursive fingerprinting this replaced."""
    seed = plain_file("seed", "seed\n")
    raw = plain_file("raw", b"\x00\xffbytes")
    dep = computed_file("dep", gexp("os.mkdir($out)\nos.mkdir(${output:lib})"))
    inner = gexp("print($a, ${b:lib})", a=seed, b=dep)
    nested = gexp(
        "x = $g\ny = $t\nz = $s\nw = $d",
        g=inner,
        t=gexp_text(inner),
        s=[seed, (raw, "/x"), [dep]],
        d={"k": [1, 2.5, None, True]},
    )
    options = {"env_vars": {"A": "1"}, "allowed_references": ["out", seed]}
    fixed = {"hash": hash_bytes("sha256", b"x"), "hash_algo": "sha256"}
    linked: Any = seed
    for n in range(5):
        y = file_append(linked, "/bin")
        linked = computed_file(f"c{n}", gexp("print($x, $y)", x=linked, y=y))
    deep = gexp("0")
    for _ in range(8):
        deep = gexp("[$g, $s]", g=deep, s=seed)
    return {
        "plain": seed,
        "bytes": raw,
        "computed": dep,
        "nested": computed_file("nested", nested, options=options),
        "fixed": computed_file("fixed", gexp("pass"), local_build=False, options=fixed),
        "chain": linked,
        "append": file_append(dep, "/bin/sh"),
        "mixed": mixed_text_file("mixed", "a=", seed, " b=", dep),
        "union": file_union("u", [("a", seed), ("b/c", dep)]),
        "dunion": directory_union("du", [seed, dep, raw]),
        "program": program_file("prog", gexp("print($x)", x=inner)),
        "deep8": computed_file("deep8", deep),
    }


GOLDEN_DIGESTS = {
    "plain": "729f01123f8d08976b031f7137b36a69f6889f083df7e2f6727f554d4a2693eb",
    "bytes": "51d0dd3f55da6d41dfece2ea82dbabde5ec7fe4f83f8af0590abd91b58e6a71a",
    "computed": "74da084dcbe6f10b8058868fe1852b8ead3119884b1c674eff097d7c04bcfe3c",
    "nested": "69c0b0b898d1133a5ca34774eda1ab87e5e3ab74754b705fb28a90ce46ef51a3",
    "fixed": "57eb9cce888110a447776a88149e6f2990ee282e971b3549b75a0a3a7d766f35",
    "chain": "f93b1490674b821213de8fa04e7a413309354ad7176318ce01f9276b3772a41c",
    "append": "1e06c9412df856320fb07e5f471f99bd786add6111454e5deafa7fd51f1af150",
    "mixed": "0e730b0e7594ac9428dd1724428c72dc659bb8fe88782caca1f910466f9ae5ed",
    "union": "4d5c6267bae09efde4c3b2f93b8346e5ae672175bfe61bbd1a58b0cd96848aee",
    "dunion": "95a3439f56530eb727133673cc076d7ed62e9ea903818772a31cd440bae47b82",
    "program": "9a4004cbc2d4c1646bc2fc4658f39c6f23bfc019d3e9484ee9f17d77198b694b",
    "deep8": "d0f3ac7c843a802ea4b36379fa81345bde23ce1f58e570d508f4c33bdf6381bc",
}


def test_fingerprints_keep_their_recorded_digests() -> None:
    digests = {
        name: _fingerprint(obj, {}).hex() for name, obj in golden_objects().items()
    }
    assert digests == GOLDEN_DIGESTS


@pytest.mark.parametrize(
    "data",
    [
        ["kind", [1, -1, 2**40, -(2**40), 1.5, None, True, False]],
        ["text", "é" * 40, "x" * 300, "y" * 70000, b"b" * 300, b"c" * 70000],
        [list(range(15)), list(range(16)), list(range(65535)), list(range(65536))],
        [("a", ("b", [])), {"k": [1, {"n": None}]}, {str(i): i for i in range(16)}],
        [[[[[]]]]] * 3,
    ],
    ids=["scalars", "strings", "array-sizes", "tuples-maps", "nesting"],
)
def test_packing_matches_msgpack(data: Any) -> None:
    packed = b"".join(_packed(data, {}))
    assert packed == msgpack.packb(data, use_bin_type=True)


def test_packing_has_no_nesting_limit() -> None:
    data: Any = "bottom"
    for _ in range(DEPTH):
        data = [data, 1]

    packed = b"".join(_packed(data, {}))

    assert packed.startswith(b"\x92" * DEPTH + b"\xa6bottom\x01")
    with pytest.raises(ValueError):
        msgpack.packb(data, use_bin_type=True)
