"""Fixtures of the builder tests: small chains of real builds."""

from __future__ import annotations

import pytest
from helpers.builds import built

from derivations.derivation import Derivation
from store.local import LocalStore


@pytest.fixture
def chain(store: LocalStore) -> tuple[Derivation, Derivation]:
    """``dep``, and ``mid`` which refers to it, both built."""
    dep = built(store, "dep", "open(out, 'w').write('dep')")
    mid = built(store, "mid", "open(out, 'w').write(os.environ['in0'])", dep)
    return dep, mid
