"""Tests of the service model: extensions, folding, and Guix's errors."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from system.services import (
    NO_DEFAULT,
    AmbiguousTargetServiceError,
    MissingTargetServiceError,
    MissingValueServiceError,
    ModifyServicesError,
    Service,
    ServiceError,
    fold_services,
    instantiate_missing_services,
    modify_services,
    service,
    service_back_edges,
    service_extension,
    service_type,
    simple_service,
)


def concatenate(lists: list[Any]) -> tuple[Any, ...]:
    return tuple(item for items in lists for item in items)


def make_graph() -> dict[str, Any]:
    """A root collecting strings, a middle type extending it, a leaf."""
    root = service_type(
        "root",
        compose=concatenate,
        extend=lambda value, more: (*value, *more),
        default_value=("root",),
    )
    middle = service_type(
        "middle",
        [service_extension(root, lambda value: [f"middle:{'+'.join(value)}"])],
        compose=concatenate,
        extend=lambda value, more: (*value, *more),
        default_value=(),
    )
    leaf = service_type("leaf", [service_extension(middle, lambda value: [value])])
    return {"root": root, "middle": middle, "leaf": leaf}


def test_fold_applies_extensions_of_folded_dependents() -> None:
    types = make_graph()
    services = [
        service(types["root"]),
        service(types["middle"], ("m",)),
        service(types["leaf"], "a"),
        service(types["leaf"], "b"),
    ]
    folded = fold_services(services, types["root"])
    assert folded.kind is types["root"]
    # The middle service is folded (gets a and b) before it extends the root.
    assert folded.value == ("root", "middle:m+a+b")


def test_fold_without_extend_ignores_extensions() -> None:
    root = service_type("inert", default_value=1)
    leaf = service_type("leaf", [service_extension(root, lambda v: v)])
    folded = fold_services([service(root), service(leaf, 5)], root)
    assert folded.value == 1


def test_fold_memoises_shared_dependents() -> None:
    calls: list[str] = []

    def record(label: str, value: int) -> int:
        calls.append(label)
        return value

    root = service_type(
        "root", compose=list, extend=lambda v, more: more, default_value=None
    )
    a = service_type(
        "a",
        [service_extension(root, lambda v: v)],
        compose=list,
        extend=lambda v, more: v + len(more),
    )
    shared = service_type(
        "shared",
        [
            service_extension(a, lambda v: record("a", v)),
            service_extension(root, lambda v: record("root", v)),
        ],
    )
    folded = fold_services([service(root), service(a, 10), service(shared, 1)], root)
    assert sorted(folded.value) == [1, 11]
    assert sorted(calls) == ["a", "root"]


def test_missing_target_names_both_types() -> None:
    types = make_graph()
    with pytest.raises(MissingTargetServiceError) as error:
        fold_services(
            [service(types["root"]), service(types["leaf"], "x")], types["root"]
        )
    assert str(error.value) == "no target of type 'middle' for service 'leaf'"
    assert error.value.target_type is types["middle"]
    assert error.value.service is not None and error.value.service.kind is types["leaf"]


def test_ambiguous_target() -> None:
    types = make_graph()
    services = [
        service(types["root"]),
        service(types["middle"]),
        service(types["middle"]),
        service(types["leaf"], "x"),
    ]
    with pytest.raises(AmbiguousTargetServiceError) as error:
        fold_services(services, types["root"])
    assert str(error.value) == "more than one target service of type 'middle'"


def test_duplicate_root_is_ambiguous() -> None:
    types = make_graph()
    with pytest.raises(
        AmbiguousTargetServiceError, match="more than one target service of type 'root'"
    ):
        fold_services([service(types["root"]), service(types["root"])], types["root"])


def test_missing_root() -> None:
    types = make_graph()
    with pytest.raises(MissingTargetServiceError) as error:
        fold_services([service(service_type("other"), 1)], types["root"])
    assert str(error.value) == "service of type 'root' not found"
    assert error.value.service is None


def test_duplicate_instances_of_an_unextended_type_are_allowed() -> None:
    # Like one getty per terminal: nothing targets the type, so no ambiguity.
    types = make_graph()
    tty = service_type("tty", [service_extension(types["middle"], lambda v: [v])])
    services = [
        service(types["root"]),
        service(types["middle"]),
        service(tty, "tty1"),
        service(tty, "tty2"),
    ]
    assert fold_services(services, types["root"]).value == ("root", "middle:tty1+tty2")


def test_back_edges_in_service_order() -> None:
    types = make_graph()
    middle = service(types["middle"])
    a, b = service(types["leaf"], "a"), service(types["leaf"], "b")
    edges = service_back_edges([b, service(types["root"]), middle, a])
    assert edges(middle) == [b, a]


def test_instantiate_missing_reaches_a_fixed_point() -> None:
    types = make_graph()
    leaf = service(types["leaf"], "x")
    services = instantiate_missing_services([leaf])
    kinds = [svc.kind.name for svc in services]
    assert kinds == ["leaf", "middle", "root"]
    assert services[1].value == () and services[2].value == ("root",)
    assert fold_services(services, types["root"]).value == ("root", "middle:x")


def test_instantiate_missing_without_default() -> None:
    target = service_type("needs-value", compose=list, extend=lambda v, m: v)
    leaf = service_type("leaf", [service_extension(target, lambda v: v)])
    with pytest.raises(
        MissingTargetServiceError,
        match="no target of type 'needs-value' for service 'leaf'",
    ):
        instantiate_missing_services([service(leaf, 1)])


def test_instantiate_keeps_existing_instances() -> None:
    types = make_graph()
    middle = service(types["middle"], ("mine",))
    services = instantiate_missing_services([service(types["leaf"], "x"), middle])
    assert [svc for svc in services if svc.kind is types["middle"]] == [middle]


def test_service_without_value_uses_default_or_fails() -> None:
    types = make_graph()
    assert service(types["root"]).value == ("root",)
    assert types["leaf"].default_value is NO_DEFAULT
    with pytest.raises(
        MissingValueServiceError, match="no value specified for service of type 'leaf'"
    ):
        service(types["leaf"])


def test_simple_service_extends_with_its_value() -> None:
    types = make_graph()
    extra = simple_service("extra", types["middle"], ["plain"])
    assert extra.kind.name == "extra"
    services = [service(types["root"]), service(types["middle"]), extra]
    assert fold_services(services, types["root"]).value == ("root", "middle:plain")


def test_types_compare_by_identity() -> None:
    a = service_type("same")
    b = service_type("same")
    assert a != b and a == a
    assert len({a, b}) == 2


def test_modify_services_changes_every_instance() -> None:
    types = make_graph()
    services = [
        service(types["leaf"], "a"),
        service(types["root"]),
        service(types["leaf"], "b"),
    ]
    result = modify_services(services, {types["leaf"]: str.upper})
    assert [svc.value for svc in result] == ["A", ("root",), "B"]
    assert all(isinstance(svc, Service) for svc in result)
    assert services[0].value == "a"


def test_modify_services_deletes() -> None:
    types = make_graph()
    services = [service(types["leaf"], "a"), service(types["root"])]
    result = modify_services(services, delete=[types["leaf"]])
    assert [svc.kind for svc in result] == [types["root"]]


def test_modify_services_missing_type() -> None:
    types = make_graph()
    with pytest.raises(ModifyServicesError) as error:
        modify_services([service(types["root"])], {types["leaf"]: str.upper})
    assert (
        str(error.value) == "modify-services: service 'leaf' not found in service list"
    )
    with pytest.raises(ModifyServicesError, match="service 'middle' not found"):
        modify_services([service(types["root"])], delete=[types["middle"]])


def test_modify_services_modifying_deleted_type() -> None:
    types = make_graph()
    services = [service(types["leaf"], "a")]
    with pytest.raises(
        ModifyServicesError, match="service 'leaf' was deleted by an earlier clause"
    ):
        modify_services(services, {types["leaf"]: str.upper}, delete=[types["leaf"]])


# ---------------------------------------------------------------------------
# Mistakes in the user's services: one ServiceError naming the type


def init_like() -> Any:
    """A root whose extensions are lists of strings, as the init's are."""
    from system.services import concatenate

    return service_type(
        "collector",
        compose=concatenate,
        extend=lambda value, more: tuple(item.upper() for item in (*value, *more)),
        default_value=(),
    )


@pytest.mark.parametrize(
    ("item", "message"),
    [
        pytest.param(
            "junk", r"a str \('junk'\) in the services is not a service", id="str"
        ),
        pytest.param(
            service_type("bare"),
            r"a ServiceType \(<service-type bare>\) in the services is not a service",
            id="type-without-service",
        ),
    ],
)
def test_non_service_in_services(item: Any, message: str) -> None:
    from system.operating_system import OperatingSystem

    with pytest.raises(ServiceError, match=message):
        OperatingSystem(host_name="box", services=[item])
    with pytest.raises(ServiceError, match=message):
        fold_services([service(init_like()), item], init_like())


def test_extension_function_that_raises_names_type_and_error() -> None:
    root = init_like()
    leaf = service_type(
        "leaf", [service_extension(root, lambda value: 1 / 0)], default_value=1
    )
    with pytest.raises(ServiceError) as caught:
        fold_services([service(root), service(leaf)], root)
    assert caught.value.message == (
        "service 'leaf' failed to extend 'collector': its extension function "
        "raised ZeroDivisionError: division by zero"
    )
    assert caught.value.hint == "check the value of service 'leaf', a int (1)"


def test_wrong_value_type_is_a_service_error() -> None:
    root = init_like()
    leaf = service_type("leaf", [service_extension(root, lambda config: [config.name])])
    with pytest.raises(ServiceError, match="service 'leaf' failed to extend"):
        fold_services([service(root), service(leaf, "notaconfig")], root)


def test_extension_giving_a_non_list_to_a_concatenating_type() -> None:
    root = init_like()
    leaf = service_type("leaf", [service_extension(root, lambda value: value)])
    with pytest.raises(
        ServiceError,
        match=r"service 'leaf' extends 'collector' with a str .*not a list",
    ):
        fold_services([service(root), service(leaf, "abc")], root)


def test_simple_service_with_a_non_list() -> None:
    with pytest.raises(
        ServiceError,
        match=r"simple service 's' extends 'collector' with a str \('notalist'\), not a list",
    ):
        simple_service("s", init_like(), "notalist")


def test_extend_function_that_raises_names_the_extenders() -> None:
    root = init_like()
    with pytest.raises(ServiceError) as caught:
        fold_services([service(root), simple_service("s", root, [42])], root)
    assert caught.value.message == (
        "service 'collector' failed to take its extensions: its extend function "
        "raised AttributeError: 'int' object has no attribute 'upper'"
    )
    assert caught.value.hint is not None and "'s'" in caught.value.hint


def test_sys_exit_in_an_extension_is_a_service_error() -> None:
    root = init_like()
    leaf = service_type(
        "leaf", [service_extension(root, lambda value: sys.exit(3))], default_value=1
    )
    with pytest.raises(ServiceError, match="raised SystemExit: 3"):
        fold_services([service(root), service(leaf)], root)


def test_service_of_something_else_than_a_type() -> None:
    with pytest.raises(
        ServiceError, match=r"service\(kind, value\) needs a service type"
    ):
        service("http-server", 1)  # type: ignore[arg-type]
    with pytest.raises(
        ServiceError, match=r"simple_service\(name, target, value\) needs"
    ):
        simple_service("s", "init", [])  # type: ignore[arg-type]
