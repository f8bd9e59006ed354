"""Realise graphs of real derivations: parallel builds, failures, the cache hit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from helpers.builds import python_derivation

from builders.linux import namespaces_unavailable_reason
from builders.progress import BuildReporter
from builders.scheduler import RealiseError, parse_target, realise
from derivations.derivation import Derivation
from store.local import LocalStore

pytestmark = pytest.mark.skipif(
    namespaces_unavailable_reason() is not None,
    reason=f"no namespaces here: {namespaces_unavailable_reason()}",
)

STAMPED = """
import json, time
start = time.time()
time.sleep(float(os.environ.get('SLEEP', '0')))
inputs = sorted(v for k, v in os.environ.items() if k.startswith('in'))
with open(out, 'w') as f:
    json.dump({'start': start, 'end': time.time(), 'inputs': inputs}, f)
"""


def pydrv(
    store: LocalStore,
    name: str,
    code: str = STAMPED,
    inputs: Iterable[Derivation] = (),
    env: dict[str, str] | None = None,
    **options: Any,
) -> Derivation:
    """Make a Python derivation; by default it stamps its output."""
    return python_derivation(store, name, code, inputs, env, **options)


class Recorder(BuildReporter):
    def __init__(self) -> None:
        self.events: list[tuple[str, ...]] = []

    def plan(self, to_build: Any, to_substitute: Any = ()) -> None:
        self.events.append(("plan", *to_build))

    def build_started(self, drv: str, name: str) -> None:
        self.events.append(("started", name))

    def build_log_line(self, drv: str, line: str) -> None:
        self.events.append(("line", line))

    def build_finished(self, drv: str, ok: bool, duration: float) -> None:
        self.events.append(("finished", drv, str(ok)))

    def done(self) -> None:
        self.events.append(("done",))


def stamps(drv: Derivation) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(Path(drv.output_path()).read_text())
    return data


def test_diamond_builds_in_parallel_and_records_references(
    store: LocalStore,
) -> None:
    a = pydrv(store, "a")
    b = pydrv(store, "b", inputs=[a], env={"SLEEP": "0.6"})
    c = pydrv(store, "c", inputs=[a], env={"SLEEP": "0.6"})
    top = pydrv(store, "top", inputs=[b, c])
    reporter = Recorder()

    result = realise(store, [top.path], jobs=2, reporter=reporter)

    assert result.outputs == {top.path: {"out": top.output_path()}}
    assert sorted(result.built) == sorted(d.path for d in (a, b, c, top))
    assert result.built[0] == a.path and result.built[-1] == top.path
    sb, sc = stamps(b), stamps(c)
    assert sb["start"] < sc["end"] and sc["start"] < sb["end"], "b and c overlap"
    assert stamps(top)["start"] >= max(sb["end"], sc["end"])
    assert store.query_references(top.output_path()) == {
        b.output_path(),
        c.output_path(),
    }
    assert store.query_references(b.output_path()) == {a.output_path()}
    assert reporter.events[0] == ("plan", *sorted(d.path for d in (a, b, c, top)))
    assert reporter.events[-1] == ("done",)
    assert [e for e in reporter.events if e[0] == "finished"][-1][1:] == (
        top.path,
        "True",
    )


def test_log_lines_reach_the_reporter(store: LocalStore) -> None:
    drv = pydrv(store, "talks", "print('one'); print('two'); open(out, 'w')")
    reporter = Recorder()
    realise(store, [drv.path], reporter=reporter)
    assert ("line", "one") in reporter.events and ("line", "two") in reporter.events


def test_failure_stops_new_builds_but_running_ones_finish(store: LocalStore) -> None:
    bad = pydrv(store, "bad", "print('broken'); sys.exit(1)")
    after_bad = pydrv(store, "after-bad", inputs=[bad])
    slow = pydrv(store, "slow", env={"SLEEP": "1"})
    after_slow = pydrv(store, "after-slow", inputs=[slow])

    with pytest.raises(RealiseError) as caught:
        realise(store, [after_bad.path, after_slow.path], jobs=2)

    result = caught.value.result
    assert result.failed[bad.path].kind == "builder"
    assert result.failed[bad.path].log_tail == ("broken",)
    assert result.failed[after_bad.path].kind == "dependency"
    assert bad.path in result.failed[after_bad.path].reason
    assert store.is_valid(slow.output_path()), "the running build finished"
    assert result.not_started == (after_slow.path,)
    assert caught.value.exit_status == 100
    assert "dependency failed" in caught.value.message


def test_keep_going_builds_everything_it_can(store: LocalStore) -> None:
    bad = pydrv(store, "bad", "sys.exit(1)")
    after_bad = pydrv(store, "after-bad", inputs=[bad])
    good = [pydrv(store, f"good{i}") for i in range(3)]
    targets = [after_bad.path, *(d.path for d in good)]

    with pytest.raises(RealiseError) as caught:
        realise(store, targets, jobs=1, keep_going=True)

    result = caught.value.result
    assert set(result.failed) == {bad.path, after_bad.path}
    assert sorted(result.built) == sorted(d.path for d in good)
    assert all(store.is_valid(d.output_path()) for d in good)


def test_wanted_outputs_and_target_syntax(store: LocalStore) -> None:
    code = "os.mkdir(out); os.mkdir(os.environ['lib'])"
    drv = pydrv(store, "multi", code, outputs=["out", "lib"])
    assert parse_target(drv.path + "^lib") == (drv.path, ("lib",))
    assert parse_target(drv.path + "!out") == (drv.path, ("out",))
    assert parse_target(drv.path + "^*") == (drv.path, None)

    result = realise(store, [(drv.path, ["lib"])])

    assert result.outputs == {drv.path: {"lib": drv.output_path("lib")}}
    assert store.is_valid(drv.output_path("out"))


def test_exit_status_names_the_kind_of_failure(store: LocalStore) -> None:
    from store.hash import Hash

    drv = pydrv(store, "fixed", "open(out, 'w')", hash=Hash("sha256", bytes(32)))
    with pytest.raises(RealiseError) as caught:
        realise(store, [drv.path])
    assert caught.value.exit_status == 102
    assert "hash mismatch" in caught.value.message


def test_no_op_realise_does_one_query_and_imports_no_networkx(
    store: LocalStore,
) -> None:
    drvs = [pydrv(store, f"leaf{i}") for i in range(20)]
    realise(store, [d.path for d in drvs], jobs=2)
    script = textwrap.dedent(
        f"""
        import sys
        from store.local import LocalStore
        from builders.scheduler import realise
        store = LocalStore({store.store_dir!r}, {store.state_dir!r})
        calls = []
        query = store.db.query_valid
        store.db.query_valid = lambda paths: calls.append(1) or query(paths)
        result = realise(store, {[d.path for d in drvs]!r}, jobs=2)
        print(len(result.outputs), len(result.built), len(calls),
              'networkx' in sys.modules)
        """
    )
    process = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert process.stdout.split() == ["20", "0", "1", "False"]


def test_a_store_opened_in_another_process_sees_the_builds(
    store: LocalStore,
) -> None:
    drv = pydrv(store, "seen")
    realise(store, [drv.path])
    other = LocalStore(store.store_dir, store.state_dir)
    assert other.query_deriver(drv.output_path()) == drv.path
    assert os.access(drv.output_path(), os.R_OK)


def test_bad_targets_are_reported(store: LocalStore) -> None:
    from derivations.derivation import DerivationError

    drv = pydrv(store, "one")
    with pytest.raises(DerivationError, match="has no output 'lib'"):
        realise(store, [(drv.path, ["lib"])])
    with pytest.raises(DerivationError, match="is not a derivation path"):
        realise(store, [drv.output_path()])
    missing = drv.path.replace("-one.drv", "-two.drv")
    with pytest.raises(DerivationError, match="is not in the store"):
        realise(store, [missing])

    realise(store, [drv.path])
    # Once built, the outputs come from the database; the check still holds.
    with pytest.raises(DerivationError, match="has no output 'lib'"):
        realise(store, [(drv.path, ["lib"])])


def test_reporter_refresh_is_called_from_the_scheduler_thread(
    store: LocalStore,
) -> None:
    import threading

    class Refreshing(BuildReporter):
        def __init__(self) -> None:
            self.refreshes = 0
            self.threads: set[int] = set()

        def refresh(self) -> None:
            self.refreshes += 1
            self.threads.add(threading.get_ident())

    drv = pydrv(store, "waits", env={"SLEEP": "0.8"})
    reporter = Refreshing()
    realise(store, [drv.path], reporter=reporter)
    assert reporter.refreshes >= 2
    assert reporter.threads == {threading.get_ident()}


def test_a_worker_that_dies_fails_its_build_only(store: LocalStore) -> None:
    def children() -> list[int]:
        found = []
        for name in os.listdir("/proc"):
            try:
                with open(f"/proc/{name}/stat") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == os.getpid():
                        found.append(int(name))
            except (OSError, ValueError, IndexError):
                pass
        return found

    class Killer(BuildReporter):
        def build_started(self, drv: str, name: str) -> None:
            if name == "victim":
                for pid in children():
                    os.kill(pid, 9)

    victim = pydrv(store, "victim", env={"SLEEP": "1"})
    with pytest.raises(RealiseError) as caught:
        realise(store, [victim.path], reporter=Killer())
    assert "died unexpectedly" in caught.value.result.failed[victim.path].reason

    survivor = pydrv(store, "survivor")
    realise(store, [victim.path, survivor.path], jobs=2)
    assert store.is_valid(victim.output_path()) and store.is_valid(
        survivor.output_path()
    )
