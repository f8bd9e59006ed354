"""The environment a builder runs in, exactly as Nix's and Guix's daemons set it.

Spec: Nix 2.8 ``DerivationGoal::initEnv`` (``libstore/build/local-derivation-goal.cc``)
and the Guix daemon's copy of it (``nix/libstore/build.cc``).  Nothing of the
caller's environment is inherited, except for fixed-output derivations, which
get the host's values of the variables named in ``impureEnvVars``.  In order,
later entries winning:

1. ``PATH=/path-not-set``, ``HOME=/homeless-shelter`` (both point nowhere,
   so a builder cannot find host programs or write a home directory),
   ``NIX_STORE`` (the logical store directory), ``NIX_BUILD_CORES``;
2. the derivation's own variables, which include each output name bound to
   its path (``out=/pyguix/store/...``), except those ``passAsFile`` names
   (below), and none at all for a derivation with structured attributes
   (below);
3. for a fixed-output derivation, the ``impureEnvVars`` the host has;
4. ``NIX_BUILD_TOP``, ``TMPDIR``, ``TEMPDIR``, ``TMP``, ``TEMP`` and ``PWD``,
   all the build directory as the builder sees it;
5. ``NIX_LOG_FD=2`` and ``TERM=xterm-256color``.

Each output's placeholder (Nix's ``hashPlaceholder``, what
``builtins.placeholder`` gives) is replaced by the output's path wherever
it appears, names and values, and in the ``passAsFile`` files, as Nix
rewrites the builder's environment, arguments and files.

**passAsFile.**  A variable named in ``passAsFile`` (a space-separated
list) is not passed itself: its value is written to the file
``.attr-<h>`` of the build directory, where ``<h>`` is the base-32 SHA-256
of the variable's name (:func:`pass_as_file_name`), and ``<name>Path``
holds that file's path as the builder sees it.  The caller writes the files
(:func:`files_to_pass`).  Names are applied in sorted order, as Nix's loop
over the environment does, so a variable of the derivation called
``<name>Path`` wins over the file's.

**Structured attributes.**  A derivation whose environment has ``__json``
(Nix's ``__structuredAttrs``) passes nothing through the environment, and
``passAsFile`` does not apply: its builder reads ``.attrs.json`` and
``.attrs.sh`` in the build directory instead (:mod:`builders.structured_attrs`,
written by :mod:`builders.build`), and ``impureEnvVars`` is a list of
strings in ``__json``.

No locale variable is set, as in Nix: the sandbox holds no locale data, so
every build gets the C locale whatever the host uses.

**Determinism.**  What varies between hosts is fixed by the sandbox
(:mod:`builders.sandbox`), not here: the build directory is
``/tmp/pyguix-build-NAME.drv-0`` in every build, the builder is uid 1000,
gid 100 and PID 1 on host ``localhost`` with umask 022, and no
``/etc/localtime`` nor ``TZ`` is there, so local time is UTC; the store
sets every mtime to 1.  The variables a Python builder needs to be
deterministic (``PYTHONHASHSEED=0``, ``PYTHONDONTWRITEBYTECODE=1``,
``SOURCE_DATE_EPOCH=1``, ``LC_ALL=C.UTF-8``) are the derivation's own, set
by :func:`derivations.lowering.gexp_to_derivation` as Guix's build systems
set ``SOURCE_DATE_EPOCH``, so they show in the ``.drv`` and this
environment stays Nix's.  ``NIX_BUILD_CORES`` is the one host value every
builder sees, as in Nix.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping

from builders.structured_attrs import (
    parse_structured_attrs,
    rewrite_placeholders,
    strings_attr,
)
from derivations.derivation import Derivation
from store import base32

__all__ = [
    "builder_environment",
    "files_to_pass",
    "pass_as_file_name",
    "resolve_cores",
]


def resolve_cores(cores: int) -> int:
    """Return the ``NIX_BUILD_CORES`` value for ``--cores``: 0 means all CPUs."""
    return cores if cores > 0 else (os.cpu_count() or 1)


def pass_as_file_name(name: str) -> str:
    """Return the build directory's file that holds variable ``name`` when
    ``passAsFile`` names it: ``.attr-`` and the base-32 SHA-256 of ``name``.

    >>> pass_as_file_name("foo")
    '.attr-1bp7cri8hplaz6hbz0v4f0nl44rl84q1sg25kgwqzipzd1mv89ic'
    """
    return ".attr-" + base32.encode(hashlib.sha256(name.encode()).digest())


def files_to_pass(drv: Derivation) -> dict[str, str]:
    """Return the files ``passAsFile`` asks for: file name to contents.

    Only variables the derivation has count, as in Nix; a derivation with
    structured attributes has none.
    """
    if "__json" in drv.env:
        return {}
    names = set(drv.env.get("passAsFile", "").split())
    outputs = drv.output_paths()
    return {
        pass_as_file_name(name): rewrite_placeholders(value, outputs)
        for name, value in drv.env.items()
        if name in names
    }


def builder_environment(
    drv: Derivation,
    store_dir: str,
    build_top: str,
    cores: int,
    host_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Return the whole environment of the builder of ``drv``.

    :param store_dir: the logical store directory.
    :param build_top: the build directory as the builder sees it.
    :param cores: the ``--cores`` value; 0 means every CPU.
    :param host_env: where fixed-output derivations find their
        ``impureEnvVars`` (default: ``os.environ``).
    :raises StructuredAttrsError: for a ``__json`` that is not an object, or
        whose ``impureEnvVars`` is not a list of strings.
    """
    attrs = parse_structured_attrs(drv)
    env = {
        "PATH": "/path-not-set",
        "HOME": "/homeless-shelter",
        "NIX_STORE": store_dir,
        "NIX_BUILD_CORES": str(resolve_cores(cores)),
    }

    if attrs is None:
        env.update(_derivation_variables(drv, build_top))

    # Only a fixed-output build may see host variables, and only those named.
    if drv.is_fixed_output():
        host = os.environ if host_env is None else host_env
        if attrs is None:
            impure = drv.env.get("impureEnvVars", "").split()
        else:
            impure = strings_attr(drv, attrs, "impureEnvVars")
        for name in impure:
            if name in host:
                env[name] = host[name]

    for name in ("NIX_BUILD_TOP", "TMPDIR", "TEMPDIR", "TMP", "TEMP", "PWD"):
        env[name] = build_top
    env["NIX_LOG_FD"] = "2"
    env["TERM"] = "xterm-256color"

    # builtins.placeholder: each output's placeholder stands for its path.
    outputs = drv.output_paths()
    return {
        rewrite_placeholders(name, outputs): rewrite_placeholders(value, outputs)
        for name, value in env.items()
    }


def _derivation_variables(drv: Derivation, build_top: str) -> dict[str, str]:
    """Return the variables of a derivation without structured attributes;
    those named in ``passAsFile`` become ``<name>Path``, naming their file."""
    env = {}
    passed = set(drv.env.get("passAsFile", "").split())
    for name in sorted(drv.env):
        if name in passed:
            env[name + "Path"] = f"{build_top}/{pass_as_file_name(name)}"
        else:
            env[name] = drv.env[name]
    return env
