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
    """A monadic value: a computation that yields a ``T_co`` when run."""

    __slots__ = ("_run", "_label")

    def __init__(self, run: Callable[[RunState], T_co], label: str = "mvalue") -> None:
        self._run = run
        self._label = label

    def run(self, state: RunState) -> T_co:
        """Run the computation in ``state``; prefer :func:`run_with_store`."""
        return self._run(state)

    def __repr__(self) -> str:
        return f"<MValue {self._label}>"


def mreturn(value: T) -> MValue[T]:
    """Return a monadic value that yields ``value`` (Guix's ``return``)."""
    return MValue(lambda state: value, "return")


def mbind(mvalue: MValue[T], procedure: Callable[[T], MValue[U]]) -> MValue[U]:
    """Run ``mvalue``, pass its result to ``procedure``, run what it returns
    (Guix's ``>>=``)."""

    def run(state: RunState) -> U:
        return procedure(mvalue.run(state)).run(state)

    return MValue(run, "bind")


def _drive(name: str, generator: MonadicGenerator[T], state: RunState) -> T:
    """Run ``generator``, feeding each yielded monadic value's result back."""
    try:
        step = next(generator)
        while True:
            if not isinstance(step, MValue):
                generator.close()
                raise MonadError(name, step)
            try:
                result = step.run(state)
            except BaseException as error:
                step = generator.throw(error)
            else:
                step = generator.send(result)
    except StopIteration as stop:
        value: T = stop.value
        return value


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
        def run(state: RunState) -> T:
            return _drive(name, procedure(*args, **kwargs), state)

        return MValue(run, name)

    return wrapper


def sequence(mvalues: Iterable[MValue[T]]) -> MValue[list[T]]:
    """Run ``mvalues`` in order and yield the list of their results."""
    items = list(mvalues)
    return MValue(lambda state: [item.run(state) for item in items], "sequence")


def mapm(procedure: Callable[[U], MValue[T]], items: Iterable[U]) -> MValue[list[T]]:
    """Map the monadic ``procedure`` over ``items``, in order (Guix's ``mapm``)."""
    values = list(items)
    return MValue(lambda state: [procedure(item).run(state) for item in values], "mapm")


def mbegin(first: MValue[Any], *rest: MValue[Any]) -> MValue[Any]:
    """Run every value in order and yield the last one's result."""

    def run(state: RunState) -> Any:
        result = first.run(state)
        for mvalue in rest:
            result = mvalue.run(state)
        return result

    return MValue(run, "mbegin")


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

    def run(state: RunState) -> T:
        entries = state.caches.setdefault(table, {})
        if key in entries:
            cached: T = entries[key]
            return cached
        value = make().run(state)
        entries[key] = value
        return value

    return MValue(run, f"mcached {table}")


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
