"""Tests of the operating-system record and its system directory, with the
example of fixtures/os.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from derivations.derivation import Derivation
from derivations.file_like import FileUnion, computed_file, plain_file
from derivations.gexp import gexp
from derivations.lowering import lower_object
from derivations.monad import run_with_store
from store.local import LocalStore
from system.accounts import AccountError, UserAccount, group_text, passwd_text
from system.base import (
    etc_service_type,
    host_name_service_type,
    kernel_service_type,
    profile_service_type,
)
from system.file_systems import FileSystem
from system.init_services import InitService, init_service_type
from system.operating_system import (
    DUMMY_KERNEL,
    OperatingSystem,
    OperatingSystemError,
    OperatingSystemFileError,
    check_host_name,
    load_operating_system,
    operating_system_boot_file_system_specs,
    operating_system_derivation,
    operating_system_directory,
    operating_system_init_services,
    operating_system_profile,
    operating_system_services,
    operating_system_user_accounts,
)
from system.profiles import Profile
from system.services import (
    AmbiguousTargetServiceError,
    ServiceError,
    service,
    simple_service,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "fixtures" / "os.py"
SYSTEM = "x86_64-linux"


@pytest.fixture(scope="module")
def example() -> OperatingSystem:
    return load_operating_system(EXAMPLE)[0]


def entries(union: Any) -> dict[str, Any]:
    assert isinstance(union, FileUnion)
    return dict(union.entries)


def lower(store: LocalStore, thing: Any) -> Any:
    return run_with_store(store, lower_object(thing), system=SYSTEM)


def test_example_defines_system_and_mappings() -> None:
    os_, mappings = load_operating_system(EXAMPLE)
    assert os_.host_name == "pyguix-example"
    assert [m.target for m in mappings] == ["/srv/fixtures"]
    assert not mappings[0].writable


def test_system_directory_entries(example: OperatingSystem) -> None:
    system = entries(operating_system_directory(example))
    assert sorted(system) == [
        "activate",
        "boot",
        "etc",
        "kernel",
        "locale",
        "parameters",
        "profile",
        "services.json",
    ]
    etc = entries(system["etc"])
    assert {
        "hosts",
        "hostname",
        "timezone",
        "os-release",
        "nsswitch.conf",
        "fstab",
    } <= set(etc)
    assert (
        etc["hosts"].content
        == "127.0.0.1 localhost pyguix-example\n::1 localhost pyguix-example\n"
    )
    assert etc["timezone"].content == "Europe/Paris\n"


def test_accounts_of_example(example: OperatingSystem) -> None:
    accounts = operating_system_user_accounts(example)
    passwd = passwd_text(accounts).splitlines()
    assert passwd[0] == "root:x:0:0:System administrator:/root:/bin/sh"
    assert "alice:x:1000:100:Alice:/home/alice:/bin/sh" in passwd
    assert "bob:x:1042:100:Bob:/home/bob:/bin/sh" in passwd
    group = group_text(accounts).splitlines()
    assert "users:x:100:" in group
    assert any(
        line.startswith("wheel:x:") and line.endswith(":alice") for line in group
    )
    assert any(line.startswith("staff:x:") for line in group)


def test_init_services_of_example(example: OperatingSystem) -> None:
    names = [svc.name for svc in operating_system_init_services(example)]
    assert set(names) == {
        "log-collector",
        "httpd",
        "boot-stamp",
        "heartbeat",
        "term-tty1",
        "loopback",
        "file-system-dev-shm",
        "file-system-sys-kernel-debug",
        "file-system-pyguix-store",
        "file-system-home",
        "file-system-var-cache",
    }
    assert names.index("loopback") < names.index("httpd")
    assert names.index("log-collector") < names.index("heartbeat")


def test_services_are_instantiated_once(example: OperatingSystem) -> None:
    kinds = [svc.kind.name for svc in operating_system_services(example)]
    for core in ("system", "boot", "activation", "init", "etc", "accounts", "profile"):
        assert kinds.count(core) == 1, core


def test_profile_gathers_packages_of_services(example: OperatingSystem) -> None:
    extra = plain_file("extra-package", "x")
    os_ = replace(
        example,
        services=(
            *example.services,
            simple_service("more", profile_service_type, [extra]),
        ),
    )
    packages = operating_system_profile(os_)
    assert packages[-1] is extra and len(packages) == len(example.packages) + 1
    profile = entries(operating_system_directory(os_))["profile"]
    assert isinstance(profile, Profile)
    assert extra in [entry.item for entry in profile.entries]


def test_boot_file_system_specs(example: OperatingSystem) -> None:
    os_ = replace(
        example,
        file_systems=(
            *example.file_systems,
            FileSystem("none", "/run/early", "tmpfs", needed_for_boot=True),
        ),
    )
    specs = operating_system_boot_file_system_specs(os_, "/pyguix/store")
    # "/" is mounted by whoever boots; the store file system is a bind mount.
    assert [spec[1] for spec in specs] == ["/run/early"]


def test_no_root_file_system() -> None:
    with pytest.raises(
        ServiceError, match="operating system 'box' has no root file system"
    ):
        operating_system_directory(OperatingSystem(host_name="box"))


ROOTED = {"file_systems": [FileSystem("/dev/sda1", "/", "ext4")]}


@pytest.mark.parametrize(
    "name",
    ["localhost", "web-1", "a.b.c", "x" * 63, ".".join(["a" * 63] * 3 + ["b" * 61])],
)
def test_valid_host_names(name: str) -> None:
    check_host_name(name)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("", id="empty"),
        pytest.param("a b/c", id="space-and-slash"),
        pytest.param("a\nb", id="newline"),
        pytest.param("-web", id="leading-hyphen"),
        pytest.param("web-", id="trailing-hyphen"),
        pytest.param("a..b", id="empty-label"),
        pytest.param("under_score", id="underscore"),
        pytest.param("x" * 64, id="label-of-64"),
        pytest.param(".".join(["a" * 63] * 4), id="more-than-253"),
    ],
)
def test_invalid_host_name_is_refused_when_lowered(name: str) -> None:
    with pytest.raises(OperatingSystemError, match="invalid host name"):
        operating_system_directory(OperatingSystem(host_name=name, **ROOTED))


def test_account_problems_are_refused_when_lowered() -> None:
    os_ = OperatingSystem(
        host_name="box",
        users=[UserAccount("alice"), UserAccount("alice", home_directory="/a2")],
        **ROOTED,
    )
    with pytest.raises(AccountError, match="user 'alice' is declared more than once"):
        operating_system_directory(os_)


def test_init_service_user_must_be_declared() -> None:
    def with_user(user: str) -> OperatingSystem:
        job = InitService(provision=("job",), command=("/bin/true",), user=user)
        extra = simple_service("job", init_service_type, [job])
        return OperatingSystem(host_name="box", services=[extra], **ROOTED)

    operating_system_directory(with_user("nobody"))
    with pytest.raises(
        OperatingSystemError,
        match="init service 'job' runs as user 'nobodyknows', which no account",
    ):
        operating_system_directory(with_user("nobodyknows"))


def test_hosts_file_replaces_generated_hosts() -> None:
    hosts = plain_file("hosts", "10.0.0.1 box\n")
    os_ = OperatingSystem(
        host_name="box",
        file_systems=[FileSystem("/dev/sda1", "/", "ext4")],
        hosts_file=hosts,
    )
    assert entries(entries(operating_system_directory(os_))["etc"])["hosts"] is hosts


def test_lowers_like_its_directory(store: LocalStore, example: OperatingSystem) -> None:
    drv = run_with_store(store, operating_system_derivation(example), system=SYSTEM)
    assert isinstance(drv, Derivation) and drv.path.endswith("-system.drv")
    assert lower(store, example).path == drv.path
    # A gexp referring to the system expands to the system directory.
    script = lower(store, computed_file("uses-os", gexp("print($os)\n", os=example)))
    assert drv.path in script.input_derivations
    builder = Path(store.physical(script.args[-1])).read_text()
    assert repr(drv.output_path("out")) in builder


def test_derivation_is_deterministic_across_processes(tmp_path: Path) -> None:
    program = (
        "import sys\n"
        "from derivations.monad import run_with_store\n"
        "from store.local import LocalStore\n"
        "from system.operating_system import load_operating_system, operating_system_derivation\n"
        "os_, _ = load_operating_system(sys.argv[1])\n"
        "store = LocalStore(sys.argv[2], sys.argv[3])\n"
        "print(run_with_store(store, operating_system_derivation(os_), system='x86_64-linux').path)\n"
    )
    paths = []
    for state in ("state-a", "state-b"):
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                program,
                str(EXAMPLE),
                str(tmp_path / "store"),
                str(tmp_path / state),
            ],
            capture_output=True,
            text=True,
            check=False,
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": "random"},
        )
        assert result.returncode == 0, result.stderr
        paths.append(result.stdout.strip())
    assert paths[0] == paths[1] and paths[0].endswith("-system.drv")


def test_load_operating_system_errors(tmp_path: Path) -> None:
    with pytest.raises(OperatingSystemFileError, match="does not exist"):
        load_operating_system(tmp_path / "missing.py")
    bad = tmp_path / "bad.py"
    bad.write_text("os_description = 42\n")
    with pytest.raises(
        OperatingSystemFileError, match="does not define 'operating_system'"
    ):
        load_operating_system(bad)


def test_operating_system_freezes_sequences() -> None:
    os_ = OperatingSystem(host_name="box", packages=[plain_file("a", "a")])
    assert isinstance(os_.packages, tuple)
    hash(os_)
    assert replace(os_, timezone="UTC") != os_


def test_build_example_system_directory(
    store: LocalStore, example: OperatingSystem
) -> None:
    scheduler = pytest.importorskip("builders.scheduler")
    drv = run_with_store(store, operating_system_derivation(example), system=SYSTEM)
    scheduler.realise(store, [drv.path], jobs=1)
    system = Path(store.physical(drv.output_path("out")))
    assert sorted(os.listdir(system)) == [
        "activate",
        "boot",
        "etc",
        "kernel",
        "locale",
        "parameters",
        "profile",
        "services.json",
    ]
    assert os.access(system / "boot", os.X_OK) and os.access(
        system / "activate", os.X_OK
    )
    assert (
        (system / "etc" / "hosts")
        .read_text()
        .startswith("127.0.0.1 localhost pyguix-example")
    )
    assert (system / "etc" / "hostname").read_text() == "pyguix-example\n"
    assert (system / "locale" / "LOCALE").read_text() == "en_US.utf8\n"
    assert os.path.isdir(system / "kernel")
    assert os.path.islink(system / "profile" / "bin" / "hello")
    assert (system / "profile" / "share" / "www" / "site" / "index.html").exists()
    activate = (system / "activate").read_text()
    assert "alice:x::100:Alice:/home/alice:/bin/sh" in activate
    spec = json.loads((system / "services.json").read_text())
    names = [entry["name"] for entry in spec["services"]]
    assert names.index("loopback") < names.index("httpd")
    httpd = spec["services"][names.index("httpd")]
    assert httpd["command"][0].startswith(store.store_dir) and httpd["requirement"] == [
        "loopback"
    ]
    # The init's own parser accepts what the system layer writes.
    init_spec = pytest.importorskip("system.init_spec")
    parsed = init_spec.load_spec(str(system / "services.json"))
    assert [s.name for s in parsed.services] == names


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        pytest.param(
            service(host_name_service_type, "again"),
            "duplicate 'hostname' entry for /etc",
            id="second-host-name",
        ),
        pytest.param(
            service(kernel_service_type, DUMMY_KERNEL),
            "duplicate 'kernel' entry for the system directory",
            id="second-kernel",
        ),
    ],
)
def test_duplicate_instances_of_unextended_types(
    example: OperatingSystem, extra: Any, message: str
) -> None:
    os_ = replace(example, services=(*example.services, extra))
    with pytest.raises(ServiceError, match=message):
        operating_system_directory(os_)


def test_duplicate_instance_of_an_extended_type(example: OperatingSystem) -> None:
    os_ = replace(example, services=(*example.services, service(etc_service_type)))
    with pytest.raises(
        AmbiguousTargetServiceError, match="more than one target service of type 'etc'"
    ):
        operating_system_directory(os_)
