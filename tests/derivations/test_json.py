from __future__ import annotations

from typing import Any

import pytest

from derivations import json as drv_json
from derivations.aterm_writer import to_aterm
from derivations.derivation import DerivationError


def test_show_json_equals_nix(golden: Any, golden_path: str) -> None:
    ours = drv_json.dumps([golden.drvs[golden_path]])
    assert drv_json.loads(ours) == drv_json.loads(golden.json_bytes(golden_path))


def test_show_json_bytes_equal_nix_bytes(golden: Any) -> None:
    # Same indentation and raw non-UTF-8 bytes as Nix 2.8.
    for name in ("raw-bytes", "escapes", "fod-recursive-sha256", "diamond"):
        drv = golden.case(name)
        assert drv_json.dumps([drv]) == golden.json_bytes(drv.path)


def test_json_reads_back_to_the_same_derivation(golden: Any, golden_path: str) -> None:
    document = drv_json.loads(golden.json_bytes(golden_path))
    drv = drv_json.from_json(golden_path, document[golden_path])
    assert to_aterm(drv) == golden.data[golden_path]
    assert drv.path == golden_path


@pytest.mark.parametrize(
    "change,message",
    [
        ({"env": []}, "must be objects"),
        ({"system": 1}, "'system' must be a string"),
        ({"args": "x"}, "'args' is not a list"),
        ({"outputs": {"out": {}}}, "has no path"),
        (
            {"outputs": {"out": {"path": "/p", "hashAlgo": "sha1", "hash": "zz"}}},
            "not base16",
        ),
        (
            {"outputs": {"out": {"path": "/p", "hashAlgo": "sha1", "hash": "00"}}},
            "not a sha1 hash",
        ),
    ],
    ids=[
        "env-not-object",
        "system-not-string",
        "args-not-list",
        "output-without-path",
        "hash-not-hex",
        "hash-wrong-size",
    ],
)
def test_bad_json_is_reported(
    golden: Any, change: dict[str, Any], message: str
) -> None:
    drv = golden.case("simple")
    value = drv_json.to_json(drv) | change
    with pytest.raises(DerivationError, match=message):
        drv_json.from_json(drv.path, value)
