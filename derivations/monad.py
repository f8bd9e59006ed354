"""The store monad: lazy computations over a store connection.

Guix's ``%store-monad`` (``guix/monads.scm``, ``guix/store.scm``) is the
state monad whose state is the store connection: a monadic value is a
procedure of the store, and nothing happens until ``run-with-store`` runs
it.  Guix writes sequences of binds with ``mlet*``; Python has no macros,
so a *monadic procedure* here is a generator function decorated with
:func:`monadic`.  It yields monadic values and receives their results::

    @monadic
    def hello_file(greeting):
        system = yield current_system()
        path = yield text_file("hello", f"{greeting} from {system}\\n")
        return path

    path = run_with_store(store, hello_file("hi"), system="x86_64-linux")

Calling ``hello_file("hi")`` runs none of its body: it returns an
:class:`MValue`.  Parameters such as the current system are read when the
chain runs, through :func:`current_system`, never when it is built, so the
same value lowers differently under another ``system=``.

Memoisation follows Guix's ``mcached``: :func:`mcached` keys a computation
on a value (compared with ``==``) plus extra keys, in a cache that belongs
to the store object and so outlives one :func:`run_with_store`, as Guix
copies its connection caches back into the caller's connection.
"""

from __future__ import annotations

import functools
import platform
import weakref
from collections.abc import Callable, Generator, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, ParamSpec, TypeVar

from store.errors import PyguixError

__all__ = [
    "MValue",
    "MonadError",
    "RunState",
    "current_state",
    "current_store",
    "current_system",
    "current_target_system",
    "host_system",
    "lift",
    "mapm",
    "mbegin",
    "mbind",
    "mcached",
    "monadic",
    "mreturn",
    "munless",
    "mwhen",
    "run_with_store",
    "sequence",
    "store_lift",
    "text_file",
]

T = TypeVar("T")
U = TypeVar("U")
T_co = TypeVar("T_co", covariant=True)
P = ParamSpec("P")

MonadicGenerator = Generator["MValue[Any]", Any, T]


class MonadError(PyguixError):
    """Report a monadic procedure that yielded something not monadic."""

    def __init__(self, procedure: str, value: object) -> None:
        super().__init__(
            f"monadic procedure '{procedure}' yielded {value!r}, not a monadic value",
            "yield only monadic values (for a plain value, wrap it in mreturn)",
        )
        self.procedure = procedure
        self.value = value


@dataclass
class RunState:
    """What a monadic value sees when it runs."""

    store: Any
    """The store connection."""

    system: str
    """The system to build for, such as ``x86_64-linux``."""

    target: str | None = None
    """The system to cross-build for, or ``None``."""

    caches: dict[Hashable, dict[Hashable, Any]] = field(default_factory=dict)
    """Named memoisation tables, shared by every run on the same store."""


class MValue(Generic[T_co]):
    """A monadic value: a computation that yields a ``T_co`` when run.

    A value is either a *leaf*, a procedure of the run state, or made of
    *steps*: a generator function whose generators yield monadic values
    (see :func:`monadic`), run by the trampoline of :func:`_drive`.
    """

    __slots__ = ("_run", "_label", "_steps")

    def __init__(
        self,
        run: Callable[[RunState], T_co] | None = None,
        label: str = "mvalue",
        steps: Callable[[], MonadicGenerator[T_co]] | None = None,
    ) -> None:
        assert (run is None) != (steps is None), "give run or steps"
        self._run = run
        self._label = label
        self._steps = steps

    def run(self, state: RunState) -> T_co:
        """Run the computation in ``state``; prefer :func:`run_with_store`."""
        if self._steps is not None:
            return _drive(self._label, self._steps(), state)
        assert self._run is not None
        return self._run(state)

    def __repr__(self) -> str:
        return f"<MValue {self._label}>"


def mreturn(value: T) -> MValue[T]:
    """Return a monadic value that yields ``value`` (Guix's ``return``)."""
    return MValue(lambda state: value, "return")


def mbind(mvalue: MValue[T], procedure: Callable[[T], MValue[U]]) -> MValue[U]:
    """Run ``mvalue``, pass its result to ``procedure``, run what it returns
    (Guix's ``>>=``)."""

    def steps() -> MonadicGenerator[U]:
        result = yield mvalue
        final: U = yield procedure(result)
        return final

    return MValue(steps=steps, label="bind")


def _drive(name: str, generator: MonadicGenerator[T], state: RunState) -> T:
    """Run ``generator``, feeding each yielded monadic value's result back.

    A trampoline: the generators of nested monadic values are run from an
    explicit stack, not by recursion, so chains of lowerings as deep as the
    graph of objects do not exhaust Python's stack.  An exception raised by
    a step, or left by a nested generator, is thrown into the generator that
    yielded it, so a ``try`` around a ``yield`` works as expected.
    """
    stack: list[tuple[str, MonadicGenerator[Any]]] = [(name, generator)]
    value: Any = None
    error: BaseException | None = None
    while True:
        label, current = stack[-1]
        try:
            step = current.send(value) if error is None else current.throw(error)
        except StopIteration as stop:
            stack.pop()
            if not stack:
                result: T = stop.value
                return result
            value, error = stop.value, None
            continue
        except BaseException as raised:
            stack.pop()
            if not stack:
                raise
            value, error = None, raised
            continue
        value, error = _step(label, current, step, state, stack)
        if not stack:
            assert error is not None
            raise error


def _step(
    label: str,
    current: MonadicGenerator[Any],
    step: object,
    state: RunState,
    stack: list[tuple[str, MonadicGenerator[Any]]],
) -> tuple[Any, BaseException | None]:
    """Run the leaf ``step`` or push its generator on ``stack``; return the
    value or error to give ``current`` next."""
    if not isinstance(step, MValue):
        current.close()
        stack.pop()
        return None, MonadError(label, step)
    if step._steps is not None:
        stack.append((step._label, step._steps()))
        return None, None
    try:
        assert step._run is not None
        return step._run(state), None
    except BaseException as error:
        return None, error


def monadic(
    procedure: Callable[P, MonadicGenerator[T]],
) -> Callable[P, MValue[T]]:
    """Turn a generator function into a monadic procedure, Python's ``mlet*``.

    Each ``x = yield mvalue`` binds ``x`` to the result of ``mvalue``; the
    generator's return value is the procedure's result.  Exceptions raised
    while running a yielded value are thrown into the generator, so a
    ``try`` around a ``yield`` works as expected.
    """
    name = getattr(procedure, "__qualname__", repr(procedure))

    @functools.wraps(procedure)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> MValue[T]:
        return MValue(steps=lambda: procedure(*args, **kwargs), label=name)

    return wrapper


def sequence(mvalues: Iterable[MValue[T]]) -> MValue[list[T]]:
    """Run ``mvalues`` in order and yield the list of their results."""
    items = list(mvalues)

    def steps() -> MonadicGenerator[list[T]]:
        results: list[T] = []
        for item in items:
            results.append((yield item))
        return results

    return MValue(steps=steps, label="sequence")


def mapm(procedure: Callable[[U], MValue[T]], items: Iterable[U]) -> MValue[list[T]]:
    """Map the monadic ``procedure`` over ``items``, in order (Guix's ``mapm``)."""
    values = list(items)

    def steps() -> MonadicGenerator[list[T]]:
        results: list[T] = []
        for item in values:
            results.append((yield procedure(item)))
        return results

    return MValue(steps=steps, label="mapm")


def mbegin(first: MValue[Any], *rest: MValue[Any]) -> MValue[Any]:
    """Run every value in order and yield the last one's result."""

    def steps() -> MonadicGenerator[Any]:
        result = yield first
        for mvalue in rest:
            result = yield mvalue
        return result

    return MValue(steps=steps, label="mbegin")


def mwhen(condition: object, mvalue: MValue[T]) -> MValue[T | None]:
    """Run ``mvalue`` when ``condition`` is true, else yield ``None``."""
    return mvalue if condition else mreturn(None)


def munless(condition: object, mvalue: MValue[T]) -> MValue[T | None]:
    """Run ``mvalue`` when ``condition`` is false, else yield ``None``."""
    return mreturn(None) if condition else mvalue


def lift(procedure: Callable[P, T]) -> Callable[P, MValue[T]]:
    """Make a plain procedure monadic: its call is deferred until run."""

    @functools.wraps(procedure)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> MValue[T]:
        return MValue(lambda state: procedure(*args, **kwargs), procedure.__name__)

    return wrapper


def store_lift(procedure: Callable[..., T]) -> Callable[..., MValue[T]]:
    """Make a procedure whose first argument is the store monadic
    (Guix's ``store-lift``)."""

    @functools.wraps(procedure)
    def wrapper(*args: Any, **kwargs: Any) -> MValue[T]:
        return MValue(
            lambda state: procedure(state.store, *args, **kwargs), procedure.__name__
        )

    return wrapper


def current_state() -> MValue[RunState]:
    """Yield the whole run state."""
    return MValue(lambda state: state, "current-state")


def current_store() -> MValue[Any]:
    """Yield the store connection."""
    return MValue(lambda state: state.store, "current-store")


def current_system() -> MValue[str]:
    """Yield the system being built for, read when the chain runs."""
    return MValue(lambda state: state.system, "current-system")


def current_target_system() -> MValue[str | None]:
    """Yield the cross-compilation target, or ``None``."""
    return MValue(lambda state: state.target, "current-target-system")


def mcached(table: Hashable, key: Hashable, make: Callable[[], MValue[T]]) -> MValue[T]:
    """Yield the cached result for ``key`` in ``table``, or run ``make()``
    and remember its result (Guix's ``mcached``, compared with ``==``).

    The key should include whatever changes the result, such as the system.
    """

    def steps() -> MonadicGenerator[T]:
        state = yield current_state()
        entries = state.caches.setdefault(table, {})
        if key in entries:
            cached: T = entries[key]
            return cached
        value: T = yield make()
        entries[key] = value
        return value

    return MValue(steps=steps, label=f"mcached {table}")


def text_file(
    name: str, text: str | bytes, references: Iterable[str] = ()
) -> MValue[Any]:
    """Yield the store path of ``text`` added as ``name`` with ``references``
    (Guix's monadic ``text-file``), memoised per store connection."""
    refs = tuple(sorted(set(references)))

    def add() -> MValue[Any]:
        return MValue(lambda state: state.store.add_text(name, text, refs), "add-text")

    return mcached("add-text", (name, text, refs), add)


_STORE_CACHES: weakref.WeakKeyDictionary[Any, dict[Hashable, dict[Hashable, Any]]]
_STORE_CACHES = weakref.WeakKeyDictionary()


def _caches_of(store: Any) -> dict[Hashable, dict[Hashable, Any]]:
    """Return the memoisation tables that belong to ``store``."""
    try:
        return _STORE_CACHES.setdefault(store, {})
    except TypeError:
        # XXX: a store that cannot be weakly referenced gets fresh caches on
        # each run, which costs repeated lowering but never wrong results.
        return {}


def host_system() -> str:
    """Return the system of this machine in Nix's form, such as ``x86_64-linux``."""
    machine = platform.machine().lower()
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    return f"{machine}-{platform.system().lower()}"


def run_with_store(
    store: Any,
    mvalue: MValue[T],
    *,
    system: str | None = None,
    target: str | None = None,
) -> T:
    """Run ``mvalue`` against ``store`` and return its result (Guix's
    ``run-with-store``).

    :param system: the system to build for; the host's by default.
    :param target: the system to cross-build for, if any.
    """
    state = RunState(store, system or host_system(), target, _caches_of(store))
    return mvalue.run(state)
