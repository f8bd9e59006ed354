"""Tests of the gexp record: template grammar, references, inputs,
outputs, modules and deterministic expansion (no store needed)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from derivations.file_like import file_append, plain_file
from derivations.gexp import (
    GexpError,
    GexpInput,
    Hole,
    OwnOutput,
    expand_gexp,
    gexp,
    gexp_inputs,
    gexp_outputs,
    gexp_text,
    plain_repr,
    with_imported_modules,
)
from store.paths import StorePath

STORE_PATH = "/gnu/store/0123456789abcdfghijklmnpqrsvwxyz-thing"


def paths(item: GexpInput) -> str:
    """Name each input by its kind and output, as a stand-in store path."""
    thing = item.thing
    label = thing if isinstance(thing, str) else getattr(thing, "name", "?")
    return f"<{label}:{item.output}>"


def test_placeholder_forms() -> None:
    hello = plain_file("hello", "hi")
    g = gexp("a $x ${x} ${x:lib} $out ${output} ${output:doc} $$ z", x=hello)
    assert g.parts == (
        "a ",
        Hole("x"),
        " ",
        Hole("x"),
        " ",
        Hole("x", "lib"),
        " ",
        OwnOutput("out"),
        " ",
        OwnOutput("out"),
        " ",
        OwnOutput("doc"),
        " $ z",
    )


def test_expansion_of_references_and_outputs() -> None:
    hello = plain_file("hello", "hi")
    g = gexp("f($x, ${x:lib}, $out, ${output:doc}, $$5)", x=hello)
    code = expand_gexp(g, paths)
    assert (
        code
        == "f('<hello:out>', '<hello:lib>', os.environ['out'], os.environ['doc'], $5)"
    )


def test_unknown_placeholder_is_named() -> None:
    with pytest.raises(GexpError, match="'\\$missing'") as info:
        gexp("print($missing)", other=1)
    assert info.value.placeholder == "missing"


def test_unknown_braced_placeholder_is_named() -> None:
    with pytest.raises(GexpError, match="names no reference 'nope'"):
        gexp("print(${nope:lib})")


def test_stray_dollar_is_an_error_with_offset() -> None:
    with pytest.raises(GexpError, match="offset 6"):
        gexp("price $ 5")


@pytest.mark.parametrize("name", ["out", "output"])
def test_reserved_reference_names(name: str) -> None:
    with pytest.raises(GexpError, match="reserved"):
        gexp("x", **{name: 1})


def test_output_of_plain_data_is_an_error() -> None:
    with pytest.raises(GexpError, match="asks an output of 'n'"):
        gexp("${n:lib}", n=3)


def test_unusable_reference_type() -> None:
    with pytest.raises(GexpError, match="the reference 'thing' holds object"):
        gexp("$thing", thing=object())


def test_plain_data_is_written_deterministically() -> None:
    first = gexp("$d $s", d={"b": 2, "a": [1.5, None, True]}, s={"y", "x"})
    second = gexp("$d $s", d={"a": [1.5, None, True], "b": 2}, s={"x", "y"})
    assert first == second
    assert expand_gexp(first, paths) == "{'a': [1.5, None, True], 'b': 2} {'x', 'y'}"
    assert plain_repr(()) == "()" and plain_repr((1,)) == "(1,)"
    assert (
        plain_repr(set()) == "set()"
        and plain_repr(frozenset({2, 1})) == "frozenset({1, 2})"
    )


def test_template_is_dedented() -> None:
    g = gexp(
        """
        if True:
            print(1)
        """
    )
    assert expand_gexp(g, paths) == "if True:\n    print(1)\n"


def test_inputs_are_deduplicated_in_order_and_nested() -> None:
    a, b, c = plain_file("a", "1"), plain_file("b", "2"), plain_file("c", "3")
    inner = gexp("g($c, ${a:lib})", a=a, c=c)
    g = gexp(
        "$b $a $inner $a $lst $path $plain",
        a=a,
        b=b,
        inner=inner,
        lst=[c, [b]],
        path=STORE_PATH,
        plain="text",
    )
    assert gexp_inputs(g) == (
        GexpInput(b),
        GexpInput(a),
        GexpInput(c),
        GexpInput(a, "lib"),
        GexpInput(STORE_PATH),
    )


def test_sequences_expand_as_literals() -> None:
    a = plain_file("a", "1")
    g = gexp("$l $t", l=[a, "x", 2], t=(a,))
    assert expand_gexp(g, paths) == "['<a:out>', 'x', 2] ('<a:out>',)"


def test_nested_gexp_is_inlined() -> None:
    inner = gexp("os.mkdir(${output:bin})")
    g = gexp("$inner\nprint($n)", inner=inner, n=1)
    assert expand_gexp(g, paths) == "os.mkdir(os.environ['bin'])\nprint(1)"


def test_outputs_default_and_mentioned() -> None:
    assert gexp_outputs(gexp("pass")) == ("out",)
    inner = gexp("${output:lib}")
    assert gexp_outputs(gexp("$out $i ${output:doc}", i=inner)) == ("doc", "lib", "out")
    assert gexp_outputs(gexp("$t", t=gexp_text(inner))) == ("lib",)


def test_gexp_text_expands_to_the_repr_of_code() -> None:
    a = plain_file("a", "1")
    g = gexp("write($t)", t=gexp_text(gexp("print($a)", a=a)))
    assert expand_gexp(g, paths) == "write(\"print('<a:out>')\")"
    assert gexp_inputs(g) == (GexpInput(a),)


def test_file_append_is_an_input() -> None:
    a = plain_file("a", "1")
    g = gexp("$bin", bin=file_append(a, "/bin/x"))
    assert gexp_inputs(g) == (GexpInput(file_append(a, "/bin/x")),)


def test_store_path_records_are_store_path_strings() -> None:
    path = StorePath.from_string(STORE_PATH, "/gnu/store")
    g = gexp("$p $l", p=path, l=[path])
    assert g == gexp("$p $l", p=STORE_PATH, l=[STORE_PATH])
    assert gexp_inputs(g) == (GexpInput(STORE_PATH),)
    text = repr(f"<{STORE_PATH}:out>")
    assert expand_gexp(g, paths) == f"{text} [{text}]"


def test_gexps_compare_by_value() -> None:
    one = gexp("$x", x=plain_file("a", "1"))
    two = gexp("$x", x=plain_file("a", "1"))
    assert one == two and hash(one) == hash(two)
    assert one != gexp("$x", x=plain_file("a", "2"))


def test_modules_are_tagged_and_merged_from_nested() -> None:
    inner = with_imported_modules(["store.nar.writer"], gexp("pass"))
    outer = gexp("$i", i=inner)
    assert outer.modules == ("store.nar.writer",)
    tagged = with_imported_modules(["store.base32", "store.nar.writer"], outer)
    assert tagged.modules == ("store.base32", "store.nar.writer")


# Each object refers to the two before it, so the top is reached by about
# 1.6**depth paths; hashing, comparing (with a copy made apart) or keying
# it must not walk them all.
SHARED_GRAPH = """
import pickle, sys
from derivations.file_like import computed_file, file_union, plain_file
from derivations.gexp import gexp
from derivations.lowering import object_key

objects = [plain_file("a", "1"), plain_file("b", "2")]
for n in range(int(sys.argv[1])):
    g = gexp("$x + $y", x=objects[-1], y=objects[-2])
    objects.append(computed_file(f"c{n}", g))
top = file_union("top", [("x", objects[-1]), ("y", objects[-2])])
copy = pickle.loads(pickle.dumps(top))
assert "_hash" not in copy.__dict__ and hash(copy) == hash(top)
assert copy == top and not copy != top
other = file_union("top", [("x", objects[-1]), ("y", objects[-3])])
assert other != top
print(object_key(top, "x86_64-linux", "/gnu/store").hex())
"""


def test_shared_object_graphs_hash_compare_and_key_in_linear_time() -> None:
    keys = [
        subprocess.run(
            [sys.executable, "-c", SHARED_GRAPH, "90"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2")
    ]
    assert keys[0] == keys[1] and len(keys[0]) == 65
