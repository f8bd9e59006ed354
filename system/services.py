"""Services: the building blocks of an operating system, and their folding.

This mirrors Guix's composition model (``gnu/services.scm``).  A *service
type* names a kind of service and says which other types it *extends*: each
:class:`ServiceExtension` pairs a target type with a procedure computing,
from a service's value, what it contributes to the target.  A *service* is
an instance of a type with a value.  The services of a system form a graph
whose edges go from a service to the one instance of each type it extends;
*folding* that graph towards a root (the ``system`` service by default)
computes each service's final value::

    folded(t) = t.kind.extend(t.value, t.kind.compose(
                    [ext.compute(folded(d).value) for each dependent d of t]))

where ``ext`` is the extension of ``d``'s type that targets ``t``'s type.  A
type without ``extend`` ignores its extensions.  Every extension must find
exactly one instance of its target type: none is a
:class:`MissingTargetServiceError`, several an
:class:`AmbiguousTargetServiceError`, with Guix's messages.

Service types declare no type for their values, so folding checks the
common mistakes itself: every item must be a :class:`Service`
(:func:`check_services`, also run by the operating-system record), an
extension of a type composing with :func:`concatenate` must be a list or
tuple, and an extension, ``compose`` or ``extend`` function that raises
(``sys.exit`` included), as a value of the wrong type makes it do, becomes
a :class:`ServiceError` naming the service type, the function's role and
what it raised.

Service types and services compare by identity, as Guix's records compared
with ``eq?``: two separately created types named alike are different types.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from store.errors import PyguixError

__all__ = [
    "NO_DEFAULT",
    "AmbiguousTargetServiceError",
    "MissingTargetServiceError",
    "MissingValueServiceError",
    "ModifyServicesError",
    "Service",
    "ServiceError",
    "ServiceExtension",
    "ServiceType",
    "check_services",
    "concatenate",
    "fold_services",
    "instantiate_missing_services",
    "modify_services",
    "service",
    "service_back_edges",
    "service_extension",
    "service_type",
    "services_of_type",
    "simple_service",
]


class _NoDefault:
    """The type of :data:`NO_DEFAULT`."""

    def __repr__(self) -> str:
        return "NO_DEFAULT"


NO_DEFAULT: Any = _NoDefault()
"""The default value of a service type that has none (Guix's
``&no-default-value``): ``service(kind)`` then needs a value."""


# ---------------------------------------------------------------------------
# Errors


class ServiceError(PyguixError):
    """Report a service graph that cannot be folded or a misused service."""


class MissingValueServiceError(ServiceError):
    """Report ``service(kind)`` for a type without a default value.

    :param kind: the service type.
    """

    def __init__(self, kind: ServiceType) -> None:
        super().__init__(
            f"no value specified for service of type '{kind.name}'",
            "pass a value: service(kind, value)",
        )
        self.kind = kind


class MissingTargetServiceError(ServiceError):
    """Report an extension, or a fold, whose target type has no instance.

    :param service: the extending service (``None`` for a fold's root).
    :param target_type: the type no service is an instance of.
    """

    def __init__(self, service: Service | None, target_type: ServiceType) -> None:
        if service is None:
            message = f"service of type '{target_type.name}' not found"
        else:
            message = (
                f"no target of type '{target_type.name}' "
                f"for service '{service.kind.name}'"
            )
        super().__init__(message, "add a service of that type to the services")
        self.service = service
        self.target_type = target_type


class AmbiguousTargetServiceError(ServiceError):
    """Report an extension, or a fold, whose target type has several
    instances.

    :param service: the extending service (``None`` for a fold's root).
    :param target_type: the type with more than one instance.
    """

    def __init__(self, service: Service | None, target_type: ServiceType) -> None:
        super().__init__(
            f"more than one target service of type '{target_type.name}'",
            "keep one instance of it, for example with modify_services",
        )
        self.service = service
        self.target_type = target_type


class ModifyServicesError(ServiceError):
    """Report a ``modify_services`` clause that cannot apply.

    :param kind: the service type the clause names.
    """

    def __init__(self, kind: ServiceType, message: str, hint: str) -> None:
        super().__init__(message, hint)
        self.kind = kind


# ---------------------------------------------------------------------------
# Records


@dataclass(frozen=True, eq=False)
class ServiceExtension:
    """How services of one type extend the instance of ``target`` (Guix's
    ``service-extension``)."""

    target: ServiceType
    """The extended type."""

    compute: Callable[[Any], Any]
    """Turns the extending service's value into the target's extension."""


@dataclass(frozen=True, eq=False)
class ServiceType:
    """A kind of service (Guix's ``<service-type>``), compared by identity."""

    name: str
    """A short name used in messages, such as ``etc``."""

    extensions: tuple[ServiceExtension, ...] = ()
    """The types it extends and how."""

    compose: Callable[[list[Any]], Any] | None = None
    """Turns the list of extensions it receives into one value; with
    :func:`concatenate`, each extension must be a list or a tuple."""

    extend: Callable[[Any, Any], Any] | None = None
    """``extend(value, composed)`` gives its value once extended; without it,
    extensions are ignored."""

    default_value: Any = NO_DEFAULT
    """The value of ``service(kind)``, or :data:`NO_DEFAULT`."""

    description: str = ""
    """What it is for, in a sentence or two."""

    def __repr__(self) -> str:
        return f"<service-type {self.name}>"


@dataclass(frozen=True, eq=False)
class Service:
    """An instance of a service type (Guix's ``<service>``)."""

    kind: ServiceType
    """Its type."""

    value: Any = field(default=None)
    """Its value, before extensions."""

    def __repr__(self) -> str:
        return f"<service {self.kind.name}>"


def service_extension(
    target: ServiceType, compute: Callable[[Any], Any]
) -> ServiceExtension:
    """Return an extension of ``target`` computed by ``compute``."""
    return ServiceExtension(target, compute)


def service_type(
    name: str,
    extensions: Iterable[ServiceExtension] = (),
    *,
    compose: Callable[[list[Any]], Any] | None = None,
    extend: Callable[[Any, Any], Any] | None = None,
    default_value: Any = NO_DEFAULT,
    description: str = "",
) -> ServiceType:
    """Return a new service type (Guix's ``service-type`` form)."""
    return ServiceType(
        name, tuple(extensions), compose, extend, default_value, description
    )


def service(kind: ServiceType, value: Any = NO_DEFAULT) -> Service:
    """Return an instance of ``kind`` with ``value``, or its default value.

    :raises MissingValueServiceError: when no value is given and ``kind`` has
        no default.
    :raises ServiceError: ``kind`` is not a service type.
    """
    _check_service_type(kind, "service(kind, value)")
    if value is NO_DEFAULT:
        if kind.default_value is NO_DEFAULT:
            raise MissingValueServiceError(kind)
        value = kind.default_value
    return Service(kind, value)


def simple_service(name: str, target: ServiceType, value: Any) -> Service:
    """Return a service extending ``target`` with ``value`` as it is, an
    instance of a fresh type ``name`` (Guix's ``simple-service``).

    :raises ServiceError: ``target`` is not a service type, or composes
        lists (:func:`concatenate`) and ``value`` is not a list or tuple.
    """
    _check_service_type(target, "simple_service(name, target, value)")
    if target.compose is concatenate and not isinstance(value, (list, tuple)):
        raise ServiceError(
            f"simple service '{name}' extends '{target.name}' with "
            f"{_shown(value)}, not a list",
            f"give a list of values: simple_service({name!r}, ..., [value])",
        )
    kind = service_type(
        name,
        [service_extension(target, lambda x: x)],
        description="This is a simple service.",
    )
    return Service(kind, value)


def concatenate(lists: Iterable[Iterable[Any]]) -> tuple[Any, ...]:
    """Return the items of ``lists`` in one tuple: the usual ``compose`` of
    a service type whose extensions are lists (as Guix's types use
    ``concatenate``); folding checks that each extension is one."""
    return tuple(item for items in lists for item in items)


def _check_service_type(kind: object, where: str) -> None:
    """Refuse ``kind`` if it is not a :class:`ServiceType`."""
    if not isinstance(kind, ServiceType):
        raise ServiceError(
            f"{where} needs a service type, not {_shown(kind)}",
            "give a service type, as log_collector_service_type",
        )


def _shown(value: object) -> str:
    """Return ``value`` for a message: its type and a short repr."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"a {type(value).__name__} ({text})"


def services_of_type(services: Iterable[Service], kind: ServiceType) -> list[Service]:
    """Return the instances of ``kind`` among ``services``, in order."""
    return [svc for svc in services if svc.kind is kind]


# ---------------------------------------------------------------------------
# modify-services


def modify_services(
    services: Iterable[Service],
    clauses: Mapping[ServiceType, Callable[[Any], Any]] | None = None,
    *,
    delete: Iterable[ServiceType] = (),
) -> list[Service]:
    """Return ``services`` with the value of every instance of each type in
    ``clauses`` replaced by ``clauses[type](value)``, and the instances of
    the types in ``delete`` removed (Guix's ``modify-services``).

    Deletions count as the earliest clauses, so a type both deleted and
    modified is an error, as Guix's modification of a type deleted by an
    earlier clause.  Clauses apply in their mapping's order.

    :raises ModifyServicesError: when a clause names a type absent from
        ``services``, or modifies a deleted type.
    """
    current = list(services)
    modifications = dict(clauses or {})
    deleted = list(delete)

    # Check every clause first, as Guix does before applying any.
    for kind in [*deleted, *modifications]:
        if not services_of_type(current, kind):
            raise ModifyServicesError(
                kind,
                f"modify-services: service '{kind.name}' not found in service list",
                "remove the clause, or add the service first",
            )
    for kind in modifications:
        if kind in deleted:
            raise ModifyServicesError(
                kind,
                f"modify-services: service '{kind.name}' was deleted by an earlier clause",
                "either delete the service or modify it, not both",
            )

    result = [svc for svc in current if svc.kind not in deleted]
    for kind, procedure in modifications.items():
        result = [
            Service(kind, procedure(svc.value)) if svc.kind is kind else svc
            for svc in result
        ]
    return result


# ---------------------------------------------------------------------------
# Instantiation and folding


def instantiate_missing_services(services: Iterable[Service]) -> list[Service]:
    """Return ``services`` followed by a default instance of each type that
    an extension targets and nothing instantiates, repeated until nothing is
    missing (Guix's ``instantiate-missing-services``).

    :raises MissingTargetServiceError: for a missing type without a default.
    :raises ServiceError: an item of ``services`` is not a service.
    """
    result = check_services(services)
    while True:
        present = {id(svc.kind) for svc in result}
        added: list[Service] = []
        for svc in result:
            for extension in svc.kind.extensions:
                target = extension.target
                if id(target) in present:
                    continue
                if target.default_value is NO_DEFAULT:
                    raise MissingTargetServiceError(svc, target)
                added.append(Service(target, target.default_value))
                present.add(id(target))
        if not added:
            return result
        result.extend(added)


def _unique_instance(
    services: Sequence[Service], target: ServiceType, extender: Service | None
) -> Service:
    """Return the one instance of ``target``, or raise naming ``extender``."""
    matches = services_of_type(services, target)
    if not matches:
        raise MissingTargetServiceError(extender, target)
    if len(matches) > 1:
        raise AmbiguousTargetServiceError(extender, target)
    return matches[0]


def service_back_edges(
    services: Sequence[Service],
) -> Callable[[Service], list[Service]]:
    """Return a procedure giving, for a service, the services that extend
    it, in the order of ``services`` (Guix's ``service-back-edges``).

    :raises MissingTargetServiceError: when an extension's target type has
        no instance.
    :raises AmbiguousTargetServiceError: when it has several.
    """
    edges: dict[int, list[Service]] = {}
    for svc in services:
        for extension in svc.kind.extensions:
            target = _unique_instance(services, extension.target, svc)
            edges.setdefault(id(target), []).append(svc)
    return lambda node: list(edges.get(id(node), []))


def fold_services(
    services: Iterable[Service], target_type: ServiceType | None = None
) -> Service:
    """Return the instance of ``target_type`` (default: the ``system``
    service type) with every extension reaching it, directly or through
    other services, applied (Guix's ``fold-services``).

    Each service is folded once, its dependents first; the extension a
    dependent contributes is computed from the dependent's folded value.

    :raises MissingTargetServiceError: when the root or an extension's
        target has no instance ("service of type 'X' not found" for the root).
    :raises AmbiguousTargetServiceError: when one has several instances.
    :raises ServiceError: an item is not a service, an extension of a type
        composing lists is not a list, or a function of a service type
        raised (the message names the type, the function and the error).
    """
    if target_type is None:
        from system.base import system_service_type

        target_type = system_service_type
    items = check_services(services)
    dependents = service_back_edges(items)
    root = _unique_instance(items, target_type, None)
    folded: dict[int, Service] = {}

    def fold(sink: Service) -> Service:
        done = folded.get(id(sink))
        if done is not None:
            return done
        extenders = dependents(sink)
        extensions = [
            _extension_value(extender, fold(extender).value, sink.kind)
            for extender in extenders
        ]
        result = sink
        if sink.kind.extend is not None:
            result = Service(sink.kind, _extended_value(sink, extensions, extenders))
        folded[id(sink)] = result
        return result

    return fold(root)


def check_services(services: Iterable[Service]) -> list[Service]:
    """Return ``services`` as a list, refusing an item that is not a
    service (a service type given without ``service(...)``, a string...).

    :raises ServiceError: naming the first such item.
    """
    items = list(services)
    for item in items:
        if not isinstance(item, Service) or not isinstance(item.kind, ServiceType):
            hint = "give service(kind, value) instances"
            if isinstance(item, ServiceType):
                hint = f"wrap the type '{item.name}' in service(kind, value)"
            raise ServiceError(f"{_shown(item)} in the services is not a service", hint)
    return items


def _extension_value(extender: Service, value: Any, target: ServiceType) -> Any:
    """Return what ``extender``, folded to ``value``, contributes to its
    instance of ``target``."""
    name = extender.kind.name
    compute = _extension_to(extender.kind, target).compute
    contribution = _call_service_function(
        compute,
        (value,),
        f"service '{name}' failed to extend '{target.name}': its extension function",
        f"check the value of service '{name}', {_shown(value)}",
    )
    if target.compose is concatenate and not isinstance(contribution, (list, tuple)):
        raise ServiceError(
            f"service '{name}' extends '{target.name}' with "
            f"{_shown(contribution)}, not a list",
            f"make the extension of '{target.name}' by '{name}' give a list",
        )
    return contribution


def _extended_value(
    sink: Service, extensions: list[Any], extenders: list[Service]
) -> Any:
    """Return the value of ``sink`` extended with ``extensions``."""
    kind = sink.kind
    assert kind.extend is not None
    names = ", ".join(f"'{extender.kind.name}'" for extender in extenders) or "none"
    hint = f"check the values its extensions give; they come from: {names}"
    composed = extensions
    if kind.compose is not None:
        composed = _call_service_function(
            kind.compose,
            (extensions,),
            f"service '{kind.name}' failed to compose its extensions: its compose "
            "function",
            hint,
        )
    return _call_service_function(
        kind.extend,
        (sink.value, composed),
        f"service '{kind.name}' failed to take its extensions: its extend function",
        hint,
    )


def _call_service_function(
    function: Callable[..., Any], arguments: tuple[Any, ...], what: str, hint: str
) -> Any:
    """Return ``function(*arguments)``, a function of a service type that
    may be the user's: what it raises (``sys.exit`` included) becomes a
    :class:`ServiceError` saying ``what`` raised it; pyguix errors pass."""
    try:
        return function(*arguments)
    except PyguixError:
        raise
    except (Exception, SystemExit) as error:  # noqa: BLE001 - the user's function
        detail = (
            f"SystemExit: {error.code}"
            if isinstance(error, SystemExit)
            else (f"{type(error).__name__}: {error}")
        )
        raise ServiceError(f"{what} raised {detail}", hint) from error


def _extension_to(kind: ServiceType, target: ServiceType) -> ServiceExtension:
    """Return the first extension of ``kind`` that targets ``target``."""
    for extension in kind.extensions:
        if extension.target is target:
            return extension
    raise AssertionError(f"{kind.name} does not extend {target.name}")
