"""The builder's environment, without building: structured attributes."""

from __future__ import annotations

import hashlib
import json

import pytest

from builders.environment import builder_environment, files_to_pass
from builders.structured_attrs import StructuredAttrsError
from derivations.create import derivation
from derivations.derivation import Derivation
from store.hash import Hash
from store.local import LocalStore

HOST = {"http_proxy": "http://proxy", "ftp_proxy": "ftp://proxy"}


def fetcher(store: LocalStore, attrs: object, env: dict[str, str]) -> Derivation:
    """A structured fixed-output derivation with ``attrs`` as its ``__json``."""
    variables = {"__json": json.dumps(attrs), **env}
    digest = Hash("sha256", hashlib.sha256(b"").digest())
    return derivation(store, "fetch", "/bin/fetch", env=variables, hash=digest)


def test_structured_fixed_output_takes_impure_variables_from_its_json(
    store: LocalStore,
) -> None:
    env = {"impureEnvVars": "ftp_proxy", "passAsFile": "visible", "visible": "x"}
    drv = fetcher(store, {"impureEnvVars": ["http_proxy", "absent"]}, env)

    seen = builder_environment(drv, store.store_dir, "/build", 1, host_env=HOST)

    assert seen["http_proxy"] == "http://proxy"
    assert "ftp_proxy" not in seen and "absent" not in seen
    assert not {"out", "__json", "visible", "visiblePath"} & set(seen)
    assert files_to_pass(drv) == {}


def test_impure_variables_that_are_no_list_are_refused(store: LocalStore) -> None:
    drv = fetcher(store, {"impureEnvVars": "http_proxy"}, {})
    with pytest.raises(StructuredAttrsError, match="'impureEnvVars' of .* list"):
        builder_environment(drv, store.store_dir, "/build", 1, host_env=HOST)
