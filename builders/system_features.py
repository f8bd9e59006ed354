"""System features: what a build may require of the machine (Nix's
``requiredSystemFeatures`` and ``system-features``).

A derivation lists the features it needs in ``requiredSystemFeatures``
(space-separated, or a list of strings with structured attributes); the
build is refused unless the machine has them all, with Nix 2.8's message.
The machine's features are ``PYGUIX_SYSTEM_FEATURES`` (space-separated)
when it is set, else Nix's defaults: ``benchmark``, ``big-parallel`` and
``nixos-test``, plus ``kvm`` when ``/dev/kvm`` can be read and written.

A build that requires ``kvm`` gets ``/dev/kvm`` in its sandbox.  (Nix 2.8
binds it into every build on a machine with the feature; pyguix only into
those that ask for it.)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from builders.structured_attrs import strings_attr
from derivations.derivation import Derivation

__all__ = [
    "DEFAULT_FEATURES",
    "KVM_DEVICE",
    "machine_features",
    "missing_features",
    "required_features",
]

DEFAULT_FEATURES = frozenset({"benchmark", "big-parallel", "nixos-test"})
"""Nix's default ``system-features``, besides ``kvm``."""

KVM_DEVICE = "/dev/kvm"


def machine_features(environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """Return the features this machine offers builds."""
    environ = os.environ if environ is None else environ
    if "PYGUIX_SYSTEM_FEATURES" in environ:
        return frozenset(environ["PYGUIX_SYSTEM_FEATURES"].split())
    kvm = {"kvm"} if os.access(KVM_DEVICE, os.R_OK | os.W_OK) else set()
    return DEFAULT_FEATURES | kvm


def required_features(drv: Derivation, attrs: Mapping[str, Any] | None) -> set[str]:
    """Return the features ``drv`` requires (``attrs``: its structured
    attributes, if it has them)."""
    if attrs is not None:
        return set(strings_attr(drv, attrs, "requiredSystemFeatures"))
    return set(drv.env.get("requiredSystemFeatures", "").split())


def missing_features(
    drv: Derivation, required: set[str], machine: frozenset[str]
) -> str | None:
    """Return Nix's message refusing ``drv``, which requires ``required``,
    on a machine with ``machine`` features, or ``None`` when it has them
    all."""
    if required <= machine:
        return None
    return (
        f"a '{drv.system}' with features {_braced(required)} is required to "
        f"build '{drv.path}', but I am a '{drv.system}' with features "
        f"{_braced(machine)}"
    )


def _braced(features: set[str] | frozenset[str]) -> str:
    return "{" + ", ".join(sorted(features)) + "}"
