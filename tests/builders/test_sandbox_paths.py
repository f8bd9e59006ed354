"""``--sandbox-path``: host paths bound read-only into builds, as Nix's
``sandbox-paths``; parsing, refusals, and real builds that need them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.builds import python_derivation

from builders.linux import namespaces_unavailable_reason
from builders.sandbox_paths import SandboxPath, SandboxPathError
from derivations.create import derivation
from store.local import LocalStore

STORE = "/pyguix/store"


# -- Parsing -------------------------------------------------------------------


def test_a_path_is_bound_at_the_same_place(tmp_path: Path) -> None:
    assert SandboxPath.from_spec(str(tmp_path), STORE) == SandboxPath(
        str(tmp_path), str(tmp_path), optional=False
    )


def test_target_equals_source_and_the_optional_mark(tmp_path: Path) -> None:
    parsed = SandboxPath.from_spec(f"/etc/greeting={tmp_path}/", STORE)
    assert parsed == SandboxPath("/etc/greeting", str(tmp_path), optional=False)
    missing = SandboxPath.from_spec(f"/dev/kvm={tmp_path}/nothing?", STORE)
    assert missing == SandboxPath("/dev/kvm", f"{tmp_path}/nothing", optional=True)


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("bin", "relative path 'bin'"),
        ("/bin=usr/bin", "relative path 'usr/bin'"),
        ("/", "would hide"),
        ("/tmp", "would hide"),
        ("/proc=/bin", "would hide"),
        ("/dev/=/bin", "would hide"),
        (f"{STORE}=/bin", "would hide"),
        ("/pyguix=/bin", "would hide"),
        (f"{STORE}/x=/bin", "would hide"),
        ("/no/such/path", "'/no/such/path' does not exist"),
    ],
)
def test_bad_entries_are_refused_with_the_reason(spec: str, says: str) -> None:
    with pytest.raises(SandboxPathError) as error:
        SandboxPath.from_spec(spec, STORE)
    assert says in error.value.message


# -- Builds --------------------------------------------------------------------

needs_namespaces = pytest.mark.skipif(
    namespaces_unavailable_reason() is not None,
    reason=f"no namespaces here: {namespaces_unavailable_reason()}",
)


def build(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``pyguix build ARGS`` on the store of the ``store`` fixture."""
    where = [
        "--store-dir",
        str(tmp_path / "store"),
        "--state-dir",
        str(tmp_path / "state"),
    ]
    command = [sys.executable, "-m", "pyguix", *where, "build", *args]
    return subprocess.run(command, capture_output=True, text=True, check=False)


@needs_namespaces
@pytest.mark.skipif(not os.path.exists("/bin/sh"), reason="the host has no /bin/sh")
def test_a_shell_builder_runs_once_the_host_shell_is_bound(
    tmp_path: Path, store: LocalStore
) -> None:
    drv = derivation(store, "shell-made", "/bin/sh", ["-c", "echo made by sh > $out"])

    # Without the host's shell, the builder cannot start.
    refused = build(tmp_path, drv.path)
    assert refused.returncode != 0
    assert "/bin/sh" in refused.stderr

    # Bound with its libraries, as Nix's sandbox-paths would give them.
    host = ["/bin", "/lib", "/lib64?", "/usr"]
    options = [option for path in host for option in ("--sandbox-path", path)]
    built = build(tmp_path, *options, drv.path)
    assert built.returncode == 0, built.stderr
    assert Path(built.stdout.strip()).read_text() == "made by sh\n"


@needs_namespaces
def test_a_bound_file_is_read_only_and_missing_optional_ones_are_skipped(
    tmp_path: Path, store: LocalStore
) -> None:
    greeting = tmp_path / "greeting"
    greeting.write_text("hello from the host\n")
    drv = python_derivation(
        store,
        "reads-host-file",
        """
        text = open('/etc/greeting').read()
        try:
            open('/etc/greeting', 'a').write('changed')
            text += 'writable'
        except OSError:
            text += 'read-only'
        open(out, 'w').write(text)
        """,
    )
    built = build(
        tmp_path,
        "--sandbox-path",
        f"/etc/greeting={greeting}",
        "--sandbox-path",
        f"/dev/kvm={tmp_path}/no-such-device?",
        drv.path,
    )
    assert built.returncode == 0, built.stderr
    assert Path(built.stdout.strip()).read_text() == "hello from the host\nread-only"
    assert greeting.read_text() == "hello from the host\n"


def test_a_refused_entry_stops_before_any_build(
    tmp_path: Path, store: LocalStore
) -> None:
    drv = python_derivation(store, "never", "open(out, 'w').write('x')")
    refused = build(tmp_path, "--sandbox-path", "relative/path", drv.path)
    assert refused.returncode == 1
    assert "sandbox path entry 'relative/path' names a relative path" in refused.stderr
    assert not os.path.exists(drv.output_path())
