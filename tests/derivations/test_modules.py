"""Tests of the module closure and the module tree put on builders' paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from derivations.modules import (
    ModuleError,
    module_tree_digest,
    source_module_closure,
    write_module_tree,
)


def test_closure_of_a_real_module_keeps_project_imports_only() -> None:
    closure = source_module_closure(["derivations.lowering"])
    for needed in (
        "derivations",
        "derivations.lowering",
        "derivations.gexp",
        "derivations.modules",
        "derivations.monad",
        "derivations.create",
        "store",
        "store.errors",
        "store.paths",
    ):
        assert needed in closure
    assert not any(
        name.split(".")[0] in {"os", "msgpack", "hashlib", "typing"} for name in closure
    )
    assert list(closure) == sorted(closure)


def make_project(root: Path) -> None:
    """Write a small project with absolute, relative and nested imports."""
    files = {
        "store/__init__.py": "",
        "store/a.py": "import os\nfrom . import b\nfrom .sub import c as see\n",
        "store/b.py": "import msgpack\ndef f():\n    import store.d\n",
        "store/sub/__init__.py": "from ..e import x\n",
        "store/sub/c.py": "from store import b\n",
        "store/d.py": "",
        "store/e.py": "x = 1\n",
        "store/unused.py": "",
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_relative_and_nested_imports_are_followed(tmp_path: Path) -> None:
    make_project(tmp_path)
    closure = source_module_closure(["store.a"], tmp_path)
    assert closure == (
        "store",
        "store.a",
        "store.b",
        "store.d",
        "store.e",
        "store.sub",
        "store.sub.c",
    )


def test_module_outside_the_project_is_refused() -> None:
    with pytest.raises(ModuleError, match="'json'"):
        source_module_closure(["json"])


def test_missing_project_module_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModuleError, match="'store.nothing'.*no source file"):
        source_module_closure(["store.nothing"], tmp_path)


def test_module_tree_layout_and_digest(tmp_path: Path) -> None:
    make_project(tmp_path / "src")
    closure = source_module_closure(["store.sub.c"], tmp_path / "src")
    out = tmp_path / "tree"
    write_module_tree(closure, str(out), tmp_path / "src")
    written = sorted(str(path.relative_to(out)) for path in out.rglob("*.py"))
    assert written == [
        "store/__init__.py",
        "store/b.py",
        "store/d.py",
        "store/e.py",
        "store/sub/__init__.py",
        "store/sub/c.py",
    ]
    assert not os.access(out / "store" / "b.py", os.X_OK)

    before = module_tree_digest(closure, tmp_path / "src")
    (tmp_path / "src" / "store" / "d.py").write_text("changed = True\n")
    assert module_tree_digest(closure, tmp_path / "src") != before
