"""What a builder sees is the same in every build, so its outputs are too.

Each test builds a gexp derivation whose builder writes down one property
that varies between hosts or runs unless the builder or its build-side
helpers fix it: the build directory, ids, host name, umask, PID, time zone,
``SOURCE_DATE_EPOCH``, string hashes and set order, bytecode caches, and the
order in which directories list their entries.  It is built twice (in two
fresh stores under different physical roots with the same store directory,
or rebuilt with ``check``), the outputs are compared bit for bit, and the
values themselves are checked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from builders.linux import namespaces_unavailable_reason
from builders.scheduler import realise
from derivations.derivation import Derivation
from derivations.file_like import computed_file, directory_union, program_file
from derivations.gexp import gexp, with_imported_modules
from derivations.lowering import lower_object
from derivations.monad import run_with_store
from store.local import LocalStore
from store.nar import hash_path

pytestmark = pytest.mark.skipif(
    namespaces_unavailable_reason() is not None,
    reason=f"builds need namespaces: {namespaces_unavailable_reason()}",
)

STORE_DIR = "/xyz/store"
"""The logical store directory of the chroot stores, under two roots."""

PROBE = computed_file(
    "probe",
    gexp(
        """
        import json, socket, time

        os.mkdir($out)
        facts = {
            "cwd": os.getcwd(),
            "uid": os.getuid(),
            "gid": os.getgid(),
            "host": socket.gethostname(),
            "umask": os.umask(0o022),
            "pid": os.getpid(),
            "utc_offset": time.localtime(0).tm_gmtoff,
            "source_date_epoch": os.environ.get("SOURCE_DATE_EPOCH"),
            "stamp": time.strftime(
                "%Y-%m-%d", time.localtime(int(os.environ["SOURCE_DATE_EPOCH"]))
            ),
            "hash": hash("pyguix"),
            "set_order": list({"alpha", "beta", "gamma", "delta", "epsilon"}),
            "dont_write_bytecode": sys.flags.dont_write_bytecode,
        }
        with open(os.path.join($out, "facts.json"), "w") as file:
            json.dump(facts, file, sort_keys=True)
        """
    ),
)

SHUFFLED_TREE = """
import random

# Create the entries in an order that changes from build to build.
names = [f"entry-{number:03d}" for number in range(120)]
random.SystemRandom().shuffle(names)
os.makedirs(os.path.join($out, "share", "$name"))
for name in names:
    with open(os.path.join($out, "share", "$name", name), "w") as file:
        file.write(name + "\\n")
with open(os.path.join($out, "share", "$name-index"), "w") as file:
    file.write("\\n".join(sorted(os.listdir(os.path.join($out, "share", "$name")))))
"""


def chroot_store(tmp_path: Path, root: str) -> LocalStore:
    return LocalStore(STORE_DIR, "/xyz/var", root=str(tmp_path / root))


@pytest.fixture
def two_stores(tmp_path: Path) -> Iterator[tuple[LocalStore, LocalStore]]:
    first, second = chroot_store(tmp_path, "a"), chroot_store(tmp_path, "b")
    yield first, second
    first.close()
    second.close()


def build(store: LocalStore, thing: Any) -> Derivation:
    drv = run_with_store(store, lower_object(thing))
    assert isinstance(drv, Derivation)
    realise(store, [drv.path])
    return drv


def nar_hash(store: LocalStore, path: str) -> str:
    info = store.query_path_info(path)
    assert info is not None
    return info.nar_hash.to_string("base32")


def host_hash(text: str) -> int:
    """Return ``hash(text)`` as the interpreter computes it with seed 0."""
    done = subprocess.run(
        [sys.executable, "-S", "-c", f"print(hash({text!r}))"],
        env={"PYTHONHASHSEED": "0"},
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


def test_builders_see_the_same_world_under_two_store_roots(
    two_stores: tuple[LocalStore, LocalStore],
) -> None:
    first, second = two_stores
    drv_a, drv_b = build(first, PROBE), build(second, PROBE)
    out = drv_a.output_path()

    assert drv_a.path == drv_b.path and out == drv_b.output_path()
    assert first.physical(out) != second.physical(out)
    assert nar_hash(first, out) == nar_hash(second, out)

    facts = json.loads(Path(first.physical(out), "facts.json").read_text())
    assert facts["cwd"] == "/tmp/pyguix-build-probe.drv-0"  # no random part
    assert (facts["uid"], facts["gid"], facts["pid"]) == (1000, 100, 1)
    assert (facts["host"], facts["umask"]) == ("localhost", 0o022)
    assert facts["utc_offset"] == 0  # no /etc/localtime, no TZ: UTC
    assert facts["source_date_epoch"] == "1" and facts["stamp"] == "1970-01-01"
    assert facts["hash"] == host_hash("pyguix")  # PYTHONHASHSEED=0
    assert facts["dont_write_bytecode"] == 1
    assert os.lstat(Path(first.physical(out), "facts.json")).st_mtime == 1


def test_rebuilds_of_the_probe_are_bit_identical(tmp_path: Path) -> None:
    store = chroot_store(tmp_path, "root")
    drv = build(store, PROBE)

    result = realise(store, [drv.path], check=True, rounds=3)

    assert [(c.drv_path, c.rounds, c.skipped) for c in result.checked] == [
        (drv.path, 3, None)
    ]
    assert not os.path.lexists(store.physical(drv.output_path()) + "-check")
    store.close()


def test_creation_order_reaches_no_output(tmp_path: Path) -> None:
    # Two trees whose entries are created in a random order each build, and
    # the union of both, which lists them: rebuilds agree with the first.
    store = chroot_store(tmp_path, "root")
    trees = [
        computed_file(f"tree-{name}", gexp(SHUFFLED_TREE.replace("$name", name)))
        for name in ("left", "right")
    ]
    union = directory_union("shuffled-union", trees)
    drv = build(store, union)
    drvs = [build(store, tree).path for tree in trees]

    result = realise(store, [*drvs, drv.path], check=True, rounds=2)

    assert sorted(c.drv_path for c in result.checked) == sorted([*drvs, drv.path])
    share = Path(store.physical(drv.output_path()), "share")
    assert sorted(p.name for p in share.iterdir()) == [
        "left",
        "left-index",
        "right",
        "right-index",
    ]
    left = os.readlink(share / "left-index")
    index = Path(store.physical(left)).read_text().splitlines()
    assert index == [f"entry-{number:03d}" for number in range(120)]
    store.close()


IMPORTER = with_imported_modules(
    ["store.base32"],
    gexp(
        """
        import shutil
        from store import base32

        # Import a module of the tree, then copy the tree as it is now.
        tree = os.path.dirname(os.path.dirname(base32.__file__))
        shutil.copytree(tree, $out)
        """
    ),
)


def caches_under(path: str) -> list[str]:
    return [
        os.path.join(directory, name)
        for directory, names, _ in os.walk(path)
        for name in names
        if name == "__pycache__"
    ]


def test_importing_modules_leaves_no_bytecode_cache(tmp_path: Path) -> None:
    store = chroot_store(tmp_path, "root")
    drv = build(store, computed_file("module-copy", IMPORTER))
    out = store.physical(drv.output_path())

    assert (Path(out) / "store" / "base32.py").is_file()
    assert caches_under(out) == []
    [tree] = [s for s in drv.input_sources if s.endswith("-module-import")]
    assert caches_under(store.physical(tree)) == []
    realise(store, [drv.path], check=True)
    store.close()


def test_scripts_run_by_root_do_not_write_into_the_store(tmp_path: Path) -> None:
    # A script imports from its module tree; run on the host (as root here,
    # who may write into read-only directories) it must not leave
    # __pycache__ there, which would change a valid store item.
    store = LocalStore(str(tmp_path / "store"), str(tmp_path / "state"))
    script = program_file(
        "encode",
        with_imported_modules(
            ["store.base32"],
            gexp("from store import base32\n\nprint(base32.encode(b'pyguix'))\n"),
        ),
    )
    drv = build(store, script)
    [tree] = [
        s
        for s in store.query_references(drv.output_path())
        if s.endswith("-module-import")
    ]

    done = subprocess.run(
        [drv.output_path()], capture_output=True, text=True, check=True
    )

    assert done.stdout.strip()
    assert caches_under(tree) == []
    assert hash_path(tree)[0].to_string("base32") == nar_hash(store, tree)
    store.close()
