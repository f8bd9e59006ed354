"""Kill (SIGKILL) a real ``pyguix build`` of a DAG as its 1st, 6th or 11th
build begins, the whole process group at once (a crash or a power cut seen
from the store) or the scheduler alone, then check that the store is sound: ``store verify
--check-contents`` is clean, every valid output is complete, nothing runs
on, and building again finishes the DAG with the right contents."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.builds import python_derivation
from helpers.host import host_processes_with

from builders.linux import namespaces_unavailable_reason
from derivations.derivation import Derivation
from store.local import LocalStore

pytestmark = pytest.mark.skipif(
    namespaces_unavailable_reason() is not None,
    reason=f"no namespaces here: {namespaces_unavailable_reason()}",
)

# Each builder writes a little, sleeps a little, then writes the rest, so
# that a kill can land in the middle of a build as well as between builds.
CODE = """
import time
os.mkdir(out)
open(out + '/first', 'w').write(os.environ['tag'])
time.sleep(0.05)
open(out + '/second', 'w').write(' '.join(os.environ.get(f'in{i}', '') for i in range(2)))
"""


def layered_dag(store: LocalStore, marker: str) -> list[Derivation]:
    """Four layers of four derivations, each depending on two below; the
    builders' command lines hold ``marker``, to find them on the host."""
    below: list[Derivation] = []
    every = []
    for layer in range(4):
        row = []
        for index in range(4):
            inputs = [below[index], below[(index + 1) % 4]] if below else []
            tag = f"{marker}-{layer}-{index}"
            code = f"{CODE}\n# {marker}\n"
            row.append(python_derivation(store, tag, code, inputs, env={"tag": tag}))
        every += row
        below = row
    return every


def pyguix(tmp_path: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pyguix",
        "--store-dir",
        str(tmp_path / "store"),
        "--state-dir",
        str(tmp_path / "state"),
        *args,
    ]


def check_sound(tmp_path: Path, drvs: list[Derivation]) -> None:
    """Verify the store and the contents of every valid output."""
    verify = subprocess.run(
        pyguix(tmp_path, "store", "verify", "--check-contents"),
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stderr

    store = LocalStore(str(tmp_path / "store"), str(tmp_path / "state"))
    try:
        for drv in drvs:
            out = drv.output_path()
            if store.is_valid(out):
                assert Path(out, "first").read_text() == drv.env["tag"]
                assert Path(out, "second").exists()
    finally:
        store.close()


@pytest.mark.parametrize("group", [True, False], ids=["everything", "scheduler"])
@pytest.mark.parametrize("started", [1, 6, 11])
def test_a_killed_build_leaves_a_sound_store_and_resumes(
    tmp_path: Path, store: LocalStore, started: int, group: bool
) -> None:
    marker = f"crash{started}{'g' if group else 's'}"
    drvs = layered_dag(store, marker)
    targets = [drv.path for drv in drvs[-4:]]

    # Kill the build once its STARTED-th build has begun: the whole group,
    # or the scheduler alone (its workers are orphaned).
    build = subprocess.Popen(
        pyguix(tmp_path, "build", "-j", "2", *targets),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert build.stderr is not None
    for line in build.stderr:
        if line.startswith(f"[{started}/"):
            break
    if group:
        os.killpg(build.pid, signal.SIGKILL)
    else:
        build.kill()
    build.wait()
    build.stderr.close()

    # Orphaned workers finish or die with their sandboxes; wait for them.
    deadline = time.monotonic() + 20
    while host_processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert host_processes_with(marker) == []

    check_sound(tmp_path, drvs)
    assert not all(store.is_valid(drv.output_path()) for drv in drvs)

    # Building again completes the DAG.
    again = subprocess.run(
        pyguix(tmp_path, "build", *targets), capture_output=True, text=True, check=False
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout.split() == [drv.output_path() for drv in drvs[-4:]]
    check_sound(tmp_path, drvs)
