"""Make real derivations whose builders are small Python programs."""

from __future__ import annotations

import textwrap
from collections.abc import Iterable
from typing import Any

from builders.bootstrap import interpreter_executable
from derivations.create import derivation
from derivations.derivation import Derivation
from store.local import LocalStore

__all__ = ["python_derivation"]


def python_derivation(
    store: LocalStore,
    name: str,
    code: str,
    inputs: Iterable[Derivation] = (),
    env: dict[str, str] | None = None,
    **options: Any,
) -> Derivation:
    """Make a derivation whose builder runs ``code``; input ``i`` is ``$inI``.

    ``code`` sees ``os``, ``sys`` and ``out`` (the ``out`` output's path).
    """
    inputs = list(inputs)
    variables = {f"in{i}": d.output_path() for i, d in enumerate(inputs)}
    variables.update(env or {})
    prologue = "import os, sys\nout = os.environ.get('out')\n"
    return derivation(
        store,
        name,
        interpreter_executable(),
        ["-S", "-c", prologue + textwrap.dedent(code)],
        env=variables,
        inputs=inputs,
        **options,
    )


def built(store: LocalStore, name: str, code: str, *inputs: Derivation) -> Derivation:
    """Make and build the derivation whose builder runs ``code``."""
    from builders.build import build_derivation

    drv = python_derivation(store, name, code, inputs)
    build_derivation(store, drv)
    return drv
