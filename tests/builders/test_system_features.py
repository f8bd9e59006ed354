"""``requiredSystemFeatures``: builds refused, as Nix 2.8 refuses them, on a
machine without the features; ``kvm`` brings ``/dev/kvm`` into the sandbox."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers.builds import python_derivation

from builders.build import BuildError, build_derivation
from builders.linux import namespaces_unavailable_reason
from builders.system_features import DEFAULT_FEATURES, machine_features
from store.local import LocalStore

pytestmark = pytest.mark.skipif(
    namespaces_unavailable_reason() is not None,
    reason=f"no namespaces here: {namespaces_unavailable_reason()}",
)

LIST_DEV = "open(out, 'w').write(' '.join(sorted(os.listdir('/dev'))))"


def test_the_machine_has_nixs_default_features() -> None:
    assert machine_features({}) >= DEFAULT_FEATURES
    assert machine_features({"PYGUIX_SYSTEM_FEATURES": "gpu  kvm"}) == {"gpu", "kvm"}


def test_a_missing_feature_refuses_the_build_with_nixs_message(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYGUIX_SYSTEM_FEATURES", "benchmark big-parallel nixos-test")
    env = {"requiredSystemFeatures": "foo big-parallel"}
    drv = python_derivation(store, "needs-foo", LIST_DEV, env=env)

    with pytest.raises(BuildError) as caught:
        build_derivation(store, drv)

    # The words of Nix 2.8 for the same derivation.
    assert caught.value.failure.reason == (
        f"a '{drv.system}' with features {{big-parallel, foo}} is required to "
        f"build '{drv.path}', but I am a '{drv.system}' with features "
        "{benchmark, big-parallel, nixos-test}"
    )
    assert "PYGUIX_SYSTEM_FEATURES" in (caught.value.failure.hint or "")
    assert not store.is_valid(drv.output_path())


def test_features_the_machine_has_let_the_build_run(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYGUIX_SYSTEM_FEATURES", "foo big-parallel")
    drv = python_derivation(
        store, "needs-foo", LIST_DEV, env={"requiredSystemFeatures": "foo"}
    )
    assert build_derivation(store, drv).built
    assert "kvm" not in Path(drv.output_path()).read_text().split()


@pytest.mark.skipif(
    not os.access("/dev/kvm", os.R_OK | os.W_OK), reason="no usable /dev/kvm here"
)
def test_kvm_brings_the_device_into_the_sandbox(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PYGUIX_SYSTEM_FEATURES", raising=False)
    drv = python_derivation(
        store, "needs-kvm", LIST_DEV, env={"requiredSystemFeatures": "kvm"}
    )
    build_derivation(store, drv)
    assert "kvm" in Path(drv.output_path()).read_text().split()
