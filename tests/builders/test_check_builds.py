"""``--check`` and ``--rounds`` with real rebuilds: deterministic derivations
pass, one that writes the time is caught and the differing file named."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from helpers.builds import python_derivation as pydrv

from builders.linux import namespaces_unavailable_reason
from builders.progress import BuildReporter
from builders.scheduler import RealiseError, realise
from store.hash import Hash
from store.local import LocalStore

pytestmark = pytest.mark.skipif(
    namespaces_unavailable_reason() is not None,
    reason=f"no namespaces here: {namespaces_unavailable_reason()}",
)

STABLE = """
os.mkdir(out)
open(out + '/stable', 'w').write('the same every time\\n')
"""
TIMED = STABLE + "import time\nopen(out + '/stamp', 'w').write(repr(time.time()))\n"


class Messages(BuildReporter):
    def __init__(self) -> None:
        self.messages: list[str] = []

    def message(self, text: str) -> None:
        self.messages.append(text)


def test_check_passes_on_a_deterministic_derivation(store: LocalStore) -> None:
    drv = pydrv(store, "stable", STABLE)
    realise(store, [drv.path])
    before = store.query_path_info(drv.output_path())

    result = realise(store, [drv.path], check=True, rounds=2)

    assert [(c.drv_path, c.rounds) for c in result.checked] == [(drv.path, 2)]
    assert result.built == ()
    assert store.query_path_info(drv.output_path()) == before
    assert not os.path.exists(drv.output_path() + "-check")


def test_check_reports_the_file_that_differs(store: LocalStore) -> None:
    drv = pydrv(store, "timed", TIMED)
    realise(store, [drv.path])
    original = Path(drv.output_path(), "stamp").read_text()

    with pytest.raises(RealiseError) as caught:
        realise(store, [drv.path], check=True)

    error = caught.value
    assert error.exit_status == 104
    failure = error.result.failed[drv.path]
    assert failure.kind == "check"
    report = "\n".join(failure.details)
    assert "stamp" in report and "stable" not in report
    kept = Path(drv.output_path() + "-check")
    assert kept.joinpath("stable").read_text() == "the same every time\n"
    assert kept.joinpath("stamp").read_text() != original
    assert not store.is_valid(str(kept))
    assert Path(drv.output_path(), "stamp").read_text() == original
    assert "not deterministic" in error.message


def test_rounds_catch_nondeterminism_on_the_first_build(store: LocalStore) -> None:
    drv = pydrv(store, "timed-rounds", TIMED)
    with pytest.raises(RealiseError) as caught:
        realise(store, [drv.path], rounds=2)
    assert caught.value.result.built == (drv.path,)
    assert caught.value.result.failed[drv.path].kind == "check"
    assert store.is_valid(drv.output_path())


def test_check_skips_fixed_output_derivations_and_says_so(store: LocalStore) -> None:
    content = b"fixed content"
    drv = pydrv(
        store,
        "fixed",
        f"open(out, 'wb').write({content!r})",
        hash=Hash("sha256", hashlib.sha256(content).digest()),
    )
    realise(store, [drv.path])
    reporter = Messages()

    result = realise(store, [drv.path], check=True, reporter=reporter)

    assert result.checked[0].skipped is not None
    assert any("fixed-output" in m and drv.path in m for m in reporter.messages)
