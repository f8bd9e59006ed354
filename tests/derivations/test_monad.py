"""Tests of the store monad: laziness, binding, parameters read at run time,
memoisation across runs on the same store."""

from __future__ import annotations

from typing import Any

import pytest

from derivations.monad import (
    MonadError,
    MValue,
    current_store,
    current_system,
    lift,
    mapm,
    mbegin,
    mbind,
    mcached,
    monadic,
    mreturn,
    munless,
    mwhen,
    run_with_store,
    sequence,
    store_lift,
)


class Recorder:
    """A stand-in connection state: records what ran, in order.

    The store monad is generic in its state; any object serves to test its
    laws and laziness without a store on disk.
    """

    def __init__(self) -> None:
        self.events: list[str] = []


def record(event: str) -> MValue[str]:
    """Return a monadic value that records ``event`` when it runs."""

    def run(state: Any) -> str:
        state.store.events.append(event)
        return event

    return MValue(run, event)


def test_nothing_runs_until_run_with_store() -> None:
    recorder = Recorder()

    @monadic
    def chain() -> Any:
        first = yield record("a")
        second = yield record("b")
        return first + second

    mvalue = chain()
    assert recorder.events == []
    assert run_with_store(recorder, mvalue) == "ab"
    assert recorder.events == ["a", "b"]


def test_monad_laws_hold() -> None:
    recorder = Recorder()

    def double(x: int) -> MValue[int]:
        return mreturn(x * 2)

    def inc(x: int) -> MValue[int]:
        return mreturn(x + 1)

    left_identity = mbind(mreturn(5), double)
    right_identity = mbind(mreturn(5), mreturn)
    nested = mbind(mbind(mreturn(5), double), inc)
    flat = mbind(mreturn(5), lambda x: mbind(double(x), inc))
    assert run_with_store(recorder, left_identity) == 10
    assert run_with_store(recorder, right_identity) == 5
    assert run_with_store(recorder, nested) == run_with_store(recorder, flat) == 11


def test_system_is_read_when_the_chain_runs_not_when_built() -> None:
    @monadic
    def describe() -> Any:
        system = yield current_system()
        return f"built for {system}"

    mvalue = describe()
    recorder = Recorder()
    assert run_with_store(recorder, mvalue, system="aarch64-linux") == (
        "built for aarch64-linux"
    )
    assert run_with_store(recorder, mvalue, system="riscv64-linux") == (
        "built for riscv64-linux"
    )


def test_sequence_mapm_and_mbegin_keep_order() -> None:
    recorder = Recorder()
    assert run_with_store(recorder, sequence([record("x"), record("y")])) == ["x", "y"]
    assert run_with_store(recorder, mapm(record, ["p", "q"])) == ["p", "q"]
    assert run_with_store(recorder, mbegin(record("m"), record("n"))) == "n"
    assert recorder.events == ["x", "y", "p", "q", "m", "n"]


def test_mwhen_and_munless_run_only_on_their_condition() -> None:
    recorder = Recorder()
    assert run_with_store(recorder, mwhen(False, record("no"))) is None
    assert run_with_store(recorder, munless(True, record("no"))) is None
    assert run_with_store(recorder, mwhen(True, record("yes"))) == "yes"
    assert recorder.events == ["yes"]


def test_lifted_procedures_are_deferred() -> None:
    calls: list[int] = []
    add = lift(lambda a, b: calls.append(a + b) or a + b)
    store_name = store_lift(lambda store, suffix: type(store).__name__ + suffix)
    mvalue = add(1, 2)
    assert calls == []
    assert run_with_store(Recorder(), mvalue) == 3
    assert run_with_store(Recorder(), store_name("!")) == "Recorder!"
    assert calls == [3]


def test_errors_are_thrown_into_the_generator() -> None:
    def fail(state: Any) -> None:
        raise ValueError("boom")

    @monadic
    def guarded() -> Any:
        try:
            yield MValue(fail)
        except ValueError as error:
            return f"caught {error}"
        return "not caught"

    assert run_with_store(Recorder(), guarded()) == "caught boom"


def test_yielding_a_plain_value_is_a_clear_error() -> None:
    @monadic
    def wrong() -> Any:
        yield 42

    with pytest.raises(MonadError, match="yielded 42"):
        run_with_store(Recorder(), wrong())


def test_mcached_runs_once_per_key_and_store_across_runs() -> None:
    recorder = Recorder()

    def cached(key: str) -> MValue[str]:
        return mcached("test", key, lambda: record(key))

    run_with_store(recorder, cached("k"))
    run_with_store(recorder, cached("k"))
    run_with_store(recorder, cached("other"))
    assert recorder.events == ["k", "other"]

    other = Recorder()
    run_with_store(other, cached("k"))
    assert other.events == ["k"]


def test_current_store_is_the_one_given() -> None:
    recorder = Recorder()
    assert run_with_store(recorder, current_store()) is recorder


def test_deep_chains_run_without_exhausting_the_stack() -> None:
    @monadic
    def depth(n: int) -> Any:
        if n == 0:
            return 0
        below = yield mcached("depth", n - 1, lambda: depth(n - 1))
        both = yield mbind(mreturn(below), lambda value: mreturn(value + 1))
        return both

    assert run_with_store(Recorder(), depth(20_000)) == 20_000


def test_errors_cross_nested_procedures_and_finally_runs() -> None:
    recorder = Recorder()

    @monadic
    def inner() -> Any:
        try:
            yield record("inner")
            yield 42
        finally:
            recorder.events.append("inner finally")

    @monadic
    def outer() -> Any:
        try:
            yield mbegin(record("before"), inner())
        except MonadError as error:
            return f"caught {error.value}"
        return "not caught"

    assert run_with_store(recorder, outer()) == "caught 42"
    assert recorder.events == ["before", "inner", "inner finally"]
