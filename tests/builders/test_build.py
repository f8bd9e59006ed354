"""Build single derivations for real: Python builders run by the host's
interpreter in the sandbox, their outputs checked and registered."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from helpers.builds import python_derivation as pydrv
from helpers.host import host_processes_with

from builders.build import BuildError, BuildOptions, build_derivation
from builders.linux import namespaces_unavailable_reason
from derivations.create import derivation
from derivations.derivation import Derivation
from store.hash import Hash
from store.local import LocalStore

pytestmark = pytest.mark.skipif(
    namespaces_unavailable_reason() is not None,
    reason=f"no namespaces here: {namespaces_unavailable_reason()}",
)


def failure_of(store: LocalStore, drv: Derivation, **options: Any) -> BuildError:
    with pytest.raises(BuildError) as caught:
        build_derivation(store, drv, BuildOptions(**options))
    for path in drv.output_paths().values():
        assert not store.is_valid(path)
        assert not os.path.lexists(store.physical(path))
    return caught.value


def test_build_registers_output_with_deriver_and_hash(store: LocalStore) -> None:
    drv = pydrv(store, "hello", "open(out, 'w').write('hello\\n')")

    result = build_derivation(store, drv)

    out = drv.output_path()
    assert result.built and result.outputs == {"out": out}
    assert Path(out).read_text() == "hello\n"
    assert os.stat(out).st_mode & 0o777 == 0o444
    info = store.query_path_info(out)
    assert info is not None and info.deriver == drv.path
    assert info.nar_hash.algorithm == "sha256" and info.references == frozenset()
    assert store.query_derivation_outputs(drv.path) == {"out": out}
    again = build_derivation(store, drv)
    assert not again.built


def test_builder_environment_is_exactly_nixs(store: LocalStore) -> None:
    code = """
    import json, socket
    os.mkdir(out)
    with open(out + '/env.json', 'w') as f:
        json.dump({'env': dict(os.environ), 'cwd': os.getcwd(), 'uid': os.getuid(),
                   'host': socket.gethostname(), 'umask': os.umask(0)}, f)
    """
    drv = pydrv(store, "env", code, env={"MINE": "1"})
    build_derivation(store, drv, BuildOptions(cores=3))

    seen = json.loads(Path(drv.output_path(), "env.json").read_text())
    env, top = seen["env"], "/tmp/pyguix-build-env.drv-0"
    assert set(env) == {
        "PATH", "HOME", "NIX_STORE", "NIX_BUILD_CORES", "NIX_BUILD_TOP", "TMPDIR",
        "TEMPDIR", "TMP", "TEMP", "PWD", "NIX_LOG_FD", "TERM", "MINE", "out",
    }  # fmt: skip
    assert env["PATH"] == "/path-not-set" and env["HOME"] == "/homeless-shelter"
    assert env["NIX_STORE"] == store.store_dir and env["NIX_BUILD_CORES"] == "3"
    assert env["TMPDIR"] == env["NIX_BUILD_TOP"] == env["PWD"] == top == seen["cwd"]
    assert env["out"] == drv.output_path() and env["MINE"] == "1"
    assert (seen["uid"], seen["host"], seen["umask"]) == (1000, "localhost", 0o022)


def test_references_are_scanned_among_inputs_and_outputs(store: LocalStore) -> None:
    lib = pydrv(store, "lib", "open(out, 'w').write('lib')")
    unused = pydrv(store, "unused", "open(out, 'w').write('unused')")
    build_derivation(store, lib)
    build_derivation(store, unused)
    code = """
    lib = os.environ['lib']
    os.mkdir(out)
    open(out + '/uses', 'w').write(os.environ['in0'] + '\\n' + lib)
    os.mkdir(lib)
    open(lib + '/self', 'w').write(lib)
    """
    user = pydrv(store, "user", code, [lib, unused], outputs=["out", "lib"])
    # The builder names 'unused' in its environment but not in its output.
    build_derivation(store, user)

    out, own_lib = user.output_path("out"), user.output_path("lib")
    assert store.query_references(out) == {lib.output_path(), own_lib}
    assert store.query_references(own_lib) == {own_lib}


def test_failed_build_leaves_nothing_and_reports_status_and_tail(
    store: LocalStore,
) -> None:
    code = """
    open(out, 'w').write('partial')
    for i in range(30): print('line', i)
    sys.exit(7)
    """
    error = failure_of(store, pydrv(store, "fails", code))

    failure = error.failure
    assert failure.builder_status == 7 and failure.kind == "builder"
    assert failure.log_tail[-1] == "line 29" and len(failure.log_tail) == 10
    assert "exited with status 7" in error.message and "> line 29" in error.message
    assert failure.log_path and os.path.exists(failure.log_path)
    assert error.exit_status == 100
    assert not [n for n in os.listdir(store.real_store_dir) if n.startswith(".tmp-")]


def test_keep_failed_keeps_build_directory_and_partial_output(
    store: LocalStore,
) -> None:
    code = "open('note', 'w').write('here'); open(out, 'w').write('half'); sys.exit(1)"
    error = failure_of(store, pydrv(store, "kept", code), keep_failed=True)

    kept = error.failure.kept
    assert kept is not None and kept in (error.hint or "")
    assert Path(kept, "note").read_text() == "here"
    assert Path(kept + ".out").read_text() == "half"
    shutil.rmtree(kept)
    os.unlink(kept + ".out")


def test_missing_output_fails(store: LocalStore) -> None:
    drv = pydrv(store, "two", "open(out, 'w').write('x')", outputs=["out", "doc"])
    error = failure_of(store, drv)
    assert error.failure.kind == "output" and "'doc'" in error.message


@pytest.mark.parametrize("option", ["allowed", "disallowed"])
def test_reference_restrictions_are_enforced(store: LocalStore, option: str) -> None:
    dep = pydrv(store, "dep", "open(out, 'w').write('dep')")
    build_derivation(store, dep)
    code = "open(out, 'w').write(os.environ['in0'])"
    restriction: dict[str, Any] = (
        {"allowed_references": ["out"]}
        if option == "allowed"
        else {"disallowed_references": [dep.output_path()]}
    )
    drv = pydrv(store, "refs", code, [dep], **restriction)
    error = failure_of(store, drv)
    assert error.failure.kind == "references"
    assert dep.output_path() in error.message

    fine = pydrv(store, "refs-ok", code, [dep], allowed_references=[dep.output_path()])
    build_derivation(store, fine)
    assert store.query_references(fine.output_path()) == {dep.output_path()}


def denied(code: str) -> str:
    """Wrap ``code`` so the builder exits 3 when it raises OSError."""
    return (
        "try:\n"
        + textwrap.indent(textwrap.dedent(code), "    ")
        + "\nexcept OSError as error:\n    print('denied:', error)\n    sys.exit(3)\n"
        + "open(out, 'w').write('escaped')\n"
    )


def assert_denied(store: LocalStore, drv: Derivation) -> None:
    error = failure_of(store, drv)
    assert error.failure.builder_status == 3, error.message
    assert error.failure.log_tail[-1].startswith("denied:")


def test_build_cannot_read_host_files_outside_its_inputs(
    store: LocalStore, tmp_path: Path
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("host data")
    code = denied(f"open({str(secret)!r}).read()")
    assert_denied(store, pydrv(store, "read-host", code))


def test_build_has_no_network(store: LocalStore) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        code = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), 2)"
        assert_denied(store, pydrv(store, "network", denied(code)))

        # A fixed-output derivation shares the host's network.
        fixed = pydrv(
            store,
            "fetch",
            code + "\nopen(out, 'w').write('connected')",
            hash=Hash("sha256", hashlib.sha256(b"connected").digest()),
        )
        build_derivation(store, fixed)
        assert Path(fixed.output_path()).read_text() == "connected"


def test_build_cannot_write_into_the_store(store: LocalStore) -> None:
    dep = pydrv(store, "dep", "os.mkdir(out)")
    other = pydrv(store, "other", "os.mkdir(out)")
    build_derivation(store, dep)
    build_derivation(store, other)

    into_input = denied("open(os.environ['in0'] + '/added', 'w')")
    assert_denied(store, pydrv(store, "write-input", into_input, [dep]))
    file = pydrv(store, "file", "open(out, 'w').write('original')")
    build_derivation(store, file)
    code = """
    path = os.environ['in0']
    try:
        os.chmod(path, 0o644)
    except OSError:
        pass
    open(path, 'a').write('changed')
    """
    assert_denied(store, pydrv(store, "write-file", denied(code), [file]))
    replace = denied("os.unlink(os.environ['in0'])")
    assert_denied(store, pydrv(store, "replace-file", replace, [file]))
    assert Path(file.output_path()).read_text() == "original"
    into_other = denied(f"open({other.output_path() + '/added'!r}, 'w')")
    assert_denied(store, pydrv(store, "write-other", into_other))
    stray = pydrv(store, "stray", "open(os.environ['NIX_STORE'] + '/stray', 'w')")
    failure_of(store, stray)
    assert not os.path.exists(os.path.join(store.real_store_dir, "stray"))
    assert os.listdir(dep.output_path()) == []


def test_build_cannot_see_host_processes(store: LocalStore) -> None:
    code = denied(
        f"""
        if not os.path.exists('/proc/{os.getpid()}/cmdline'):
            raise OSError('no such process')
        if b'pytest' not in open('/proc/{os.getpid()}/cmdline', 'rb').read():
            raise OSError('another process')
        """
    )
    assert_denied(store, pydrv(store, "processes", code))


def test_fixed_output_with_wrong_hash_is_rejected_with_both_hashes(
    store: LocalStore,
) -> None:
    declared = Hash("sha256", hashlib.sha256(b"expected").digest())
    got = Hash("sha256", hashlib.sha256(b"actual").digest())
    drv = pydrv(store, "fixed", "open(out, 'w').write('actual')", hash=declared)

    error = failure_of(store, drv)

    assert error.failure.kind == "hash" and error.exit_status == 102
    assert declared.to_string("base32") in error.message
    assert got.to_string("base32") in error.message


def test_fixed_output_records_its_content_address(store: LocalStore) -> None:
    declared = Hash("sha256", hashlib.sha256(b"data").digest())
    drv = pydrv(store, "fixed-ok", "open(out, 'w').write('data')", hash=declared)
    build_derivation(store, drv)
    info = store.query_path_info(drv.output_path())
    assert info is not None and info.ca == f"fixed:sha256:{declared.to_base32()}"


def test_timeout_kills_the_build_and_its_children(store: LocalStore) -> None:
    token = uuid.uuid4().hex
    code = f"""
    import time
    for _ in range(2):
        if os.fork() == 0:
            time.sleep(60)
    print('children started', {token!r}, flush=True)
    time.sleep(60)
    """
    start = time.monotonic()
    error = failure_of(store, pydrv(store, "slow", code), timeout=1.5)

    assert error.failure.kind == "timeout" and error.exit_status == 101
    assert time.monotonic() - start < 20
    assert error.failure.log_tail[-1].startswith("children started")
    deadline = time.monotonic() + 5
    while host_processes_with(token) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert host_processes_with(token) == []


def test_max_silent_time_kills_a_quiet_build(store: LocalStore) -> None:
    code = "import time\nprint('hi', flush=True)\ntime.sleep(60)"
    error = failure_of(store, pydrv(store, "quiet", code), max_silent_time=1)
    assert error.failure.kind == "silent"


def test_build_in_a_chroot_store(nix_store: LocalStore) -> None:
    base = pydrv(nix_store, "base", "os.mkdir(out); open(out + '/f', 'w').write('b')")
    code = "open(out, 'w').write(open(os.environ['in0'] + '/f').read() + os.environ['in0'])"
    top = pydrv(nix_store, "top", code, [base])
    build_derivation(nix_store, base)
    build_derivation(nix_store, top)

    physical = Path(nix_store.physical(top.output_path()))
    assert top.output_path().startswith("/nix/store/")
    assert physical.read_text() == "b" + base.output_path()
    assert nix_store.query_references(top.output_path()) == {base.output_path()}
    assert not os.path.exists(top.output_path())


def test_builtin_fetchurl_fetches_a_file_url_checked_by_hash(
    store: LocalStore, tmp_path: Path
) -> None:
    source = tmp_path / "source.txt"
    source.write_bytes(b"fetched bytes\n")
    digest = hashlib.sha256(b"fetched bytes\n").digest()
    env = {"url": source.as_uri()}
    drv = derivation(
        store, "src", "builtin:fetchurl", env=env, hash=Hash("sha256", digest)
    )

    build_derivation(store, drv)

    assert Path(drv.output_path()).read_bytes() == b"fetched bytes\n"
    info = store.query_path_info(drv.output_path())
    assert (
        info is not None and info.ca is not None and info.ca.startswith("fixed:sha256:")
    )

    wrong = derivation(
        store, "src2", "builtin:fetchurl", env=env, hash=Hash("sha256", bytes(32))
    )
    error = failure_of(store, wrong)
    assert error.failure.kind == "hash"
    assert Hash("sha256", digest).to_string("base32") in error.message


def test_export_references_graph_writes_the_closure(store: LocalStore) -> None:
    dep = pydrv(store, "dep", "open(out, 'w').write('dep')")
    mid = pydrv(store, "mid", "open(out, 'w').write(os.environ['in0'])", [dep])
    build_derivation(store, dep)
    build_derivation(store, mid)
    code = "open(out, 'w').write(open('graph').read())"
    user = pydrv(
        store, "user", code, [mid], references_graphs=[("graph", mid.output_path())]
    )

    build_derivation(store, user)

    expected: list[str] = []
    for item in sorted([dep.output_path(), mid.output_path()]):
        refs = [dep.output_path()] if item == mid.output_path() else []
        expected += [item, "", str(len(refs)), *refs]
    assert Path(user.output_path()).read_text().splitlines() == expected


def test_derivation_for_another_system_is_refused(store: LocalStore) -> None:
    drv = pydrv(store, "alien", "open(out, 'w')", system="riscv64-linux")
    error = failure_of(store, drv)
    assert error.failure.kind == "setup" and "'riscv64-linux'" in error.message
