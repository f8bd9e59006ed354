"""Kill (SIGKILL) a real 'pyguix store add' of a large item at several points,
then check that verify is clean and that no half-written item is valid; and
add one item from two processes at once.  Kill processes adding texts one by
one, in ``add_texts`` and in a batch the same way: a batch is valid whole or
not at all.

Pause points are real code paths in store.local (``pause_point``): the adder
prints ``paused NAME`` and sleeps when ``PYGUIX_PAUSE_AT=NAME``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from store import nar
from store.local import LocalStore
from store.verify import verify_store

SIZE = 32 * 1024 * 1024


@pytest.fixture(scope="module")
def big_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tree with a 32 MiB file and a few small ones."""
    root = tmp_path_factory.mktemp("big") / "big-item"
    (root / "sub").mkdir(parents=True)
    block = os.urandom(1024 * 1024)
    with open(root / "large", "wb") as file:
        for index in range(SIZE // len(block)):
            file.write(bytes([index]) + block[1:])
    for index in range(20):
        (root / "sub" / f"f{index}").write_text(f"small {index}\n")
    return root


def adder(
    tmp_path: Path, source: Path, pause: str | None = None
) -> subprocess.Popen[str]:
    """Start 'pyguix store add SOURCE' on the store under ``tmp_path``."""
    env = {**os.environ, "PYGUIX_PAUSE_SECONDS": "60"}
    env.pop("PYGUIX_PAUSE_AT", None)
    if pause:
        env["PYGUIX_PAUSE_AT"] = pause
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pyguix",
            "--store-dir",
            str(tmp_path / "store"),
            "--state-dir",
            str(tmp_path / "state"),
            "store",
            "add",
            str(source),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def wait_for_pause(child: subprocess.Popen[str], point: str) -> None:
    assert child.stderr is not None
    line = child.stderr.readline()
    assert line == f"paused {point}\n", line


def check_consistent(tmp_path: Path, source: Path) -> tuple[LocalStore, str, bool]:
    """Open the store (running its recovery), check verify is clean, and
    check that the item is either valid and complete or absent."""
    store = LocalStore(str(tmp_path / "store"), str(tmp_path / "state"))
    report = verify_store(store, check_contents=True)
    assert report.problems == [], report.problems
    path = str(store.add_path(str(source), dry_run=True))
    valid = store.is_valid(path)
    if valid:
        info = store.query_path_info(path)
        assert info is not None
        assert nar.hash_path(store.physical(path)) == (info.nar_hash, info.nar_size)
    else:
        assert not os.path.lexists(store.physical(path))
    return store, path, valid


@pytest.mark.parametrize(
    ("point", "valid_after"),
    [
        ("locked", False),
        ("after-write", False),
        ("before-rename", False),
        ("before-register", False),
        ("after-register", True),
    ],
)
def test_kill_at_pause_point(
    tmp_path: Path, big_tree: Path, point: str, valid_after: bool
) -> None:
    child = adder(tmp_path, big_tree, point)
    wait_for_pause(child, point)
    child.send_signal(signal.SIGKILL)
    child.wait()

    store, path, valid = check_consistent(tmp_path, big_tree)
    assert valid == valid_after
    assert store.add_path(str(big_tree)) == store.parse_path(path)
    assert verify_store(store, check_contents=True).problems == []


@pytest.mark.parametrize("delay", [0.05, 0.15, 0.3, 0.6])
def test_kill_after_delay(tmp_path: Path, big_tree: Path, delay: float) -> None:
    child = adder(tmp_path, big_tree)
    time.sleep(delay)
    child.send_signal(signal.SIGKILL)
    child.wait()
    check_consistent(tmp_path, big_tree)


def test_two_processes_add_the_same_item(tmp_path: Path, big_tree: Path) -> None:
    first = adder(tmp_path, big_tree, "after-write")
    wait_for_pause(first, "after-write")
    second = adder(tmp_path, big_tree)

    # The second waits for the first one's path lock...
    time.sleep(1.0)
    assert second.poll() is None
    first.send_signal(signal.SIGKILL)
    first.wait()

    # ...then, the lock free, adds the item itself.
    out, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    store, path, valid = check_consistent(tmp_path, big_tree)
    assert valid and out.strip() == path


def test_two_processes_racing_both_succeed(tmp_path: Path, big_tree: Path) -> None:
    children = [adder(tmp_path, big_tree) for _ in range(2)]
    outputs = [child.communicate(timeout=60) for child in children]
    assert [child.returncode for child in children] == [0, 0], outputs
    assert outputs[0][0] == outputs[1][0]
    store, path, valid = check_consistent(tmp_path, big_tree)
    assert valid


# -- Texts: one at a time, in add_texts, in a batch -----------------------------

CHAIN = """
import hashlib
from store.paths import make_text_path

def chain(store_dir, count):
    items, paths, previous = [], [], []
    for index in range(count):
        name, text = f"item-{index}", f"item {index} after {previous}\\n" * 20
        items.append((name, text, previous))
        digest = hashlib.sha256(text.encode()).digest()
        paths.append(str(make_text_path(name, digest, previous, store_dir)))
        previous = [paths[-1]]
    return items, paths
"""

TEXT_ADDER = (
    CHAIN
    + """
import sys
from store.local import LocalStore

store_dir, state_dir, mode, count = sys.argv[1:5]
store = LocalStore(store_dir, state_dir)
items, _ = chain(store.store_dir, int(count))
if mode == "single":
    for item in items:
        store.add_text(*item)
elif mode == "texts":
    store.add_texts(items)
else:
    with store.batch():
        for item in items:
            store.add_text(*item)
"""
)


def text_adder(
    tmp_path: Path, mode: str, count: int, pause: str | None = None
) -> subprocess.Popen[str]:
    """Start a process adding a chain of ``count`` texts, as ``mode`` says."""
    env = {**os.environ, "PYGUIX_PAUSE_SECONDS": "60"}
    env.pop("PYGUIX_PAUSE_AT", None)
    if pause:
        env["PYGUIX_PAUSE_AT"] = pause
    store_dir, state_dir = str(tmp_path / "store"), str(tmp_path / "state")
    return subprocess.Popen(
        [sys.executable, "-c", TEXT_ADDER, store_dir, state_dir, mode, str(count)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def check_texts(tmp_path: Path, count: int) -> list[bool]:
    """Reopen the store, check verify is clean and every text of the chain
    is valid and complete or absent; return which are valid."""
    namespace: dict[str, Any] = {}
    exec(CHAIN, namespace)
    store = LocalStore(str(tmp_path / "store"), str(tmp_path / "state"))
    assert verify_store(store, check_contents=True).problems == []
    _, paths = namespace["chain"](store.store_dir, count)
    valid = store.query_valid(paths)
    for path in paths:
        assert os.path.lexists(store.physical(path)) == (path in valid)
    leftovers = [n for n in os.listdir(store.real_store_dir) if n.startswith(".")]
    assert leftovers == []
    return [path in valid for path in paths]


@pytest.mark.parametrize(
    ("mode", "point", "valid_after"),
    [
        ("texts", "locked", False),
        ("texts", "after-write", False),
        ("texts", "before-register", False),
        ("texts", "after-register", False),
        ("texts", "before-commit", False),
        ("texts", "after-commit", True),
        ("batch", "before-rename", False),
        ("batch", "after-register", False),
        ("batch", "before-commit", False),
        ("batch", "after-commit", True),
        ("single", "after-write", False),
        ("single", "before-rename", False),
        ("single", "before-register", False),
        ("single", "after-register", True),
    ],
)
def test_kill_text_adder_at_pause_point(
    tmp_path: Path, mode: str, point: str, valid_after: bool
) -> None:
    count = 40
    child = text_adder(tmp_path, mode, count, point)
    wait_for_pause(child, point)
    child.send_signal(signal.SIGKILL)
    child.wait()

    valid = check_texts(tmp_path, count)
    if mode == "single":
        # Killed while adding the first text.
        assert valid == [valid_after] + [False] * (count - 1)
    else:
        assert valid == [valid_after] * count


@pytest.mark.parametrize("delay", [0.4, 0.8, 1.2])
def test_kill_batch_after_delay_is_all_or_nothing(tmp_path: Path, delay: float) -> None:
    count = 2000
    child = text_adder(tmp_path, "texts", count)
    time.sleep(delay)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert len(set(check_texts(tmp_path, count))) == 1


def test_kill_single_adds_after_delay_leaves_a_prefix(tmp_path: Path) -> None:
    count = 2000
    child = text_adder(tmp_path, "single", count)
    time.sleep(0.8)
    child.send_signal(signal.SIGKILL)
    child.wait()
    valid = check_texts(tmp_path, count)
    assert valid == sorted(valid, reverse=True)
