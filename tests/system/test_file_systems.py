"""Tests of file systems, mappings and their specs."""

from __future__ import annotations

import pytest

from derivations.gexp import gexp, plain_repr
from system.file_systems import (
    CONTAINER_FILE_SYSTEMS,
    FileSystem,
    FileSystemError,
    FileSystemMapping,
    check_mappings,
    file_system_mapping_to_bind_mount,
    file_system_needed_for_boot,
    file_system_to_spec,
    network_file_mappings,
    spec_to_file_system,
    specification_to_file_system_mapping,
    store_mapping,
)


@pytest.mark.parametrize(
    ("spec", "source", "target"),
    [
        pytest.param("/srv/data", "/srv/data", "/srv/data", id="same-path"),
        pytest.param("/srv/data=/data", "/srv/data", "/data", id="renamed"),
        pytest.param("/a=b=/c", "/a", "b=/c", id="first-equal-splits"),
    ],
)
def test_specification_to_mapping(spec: str, source: str, target: str) -> None:
    mapping = specification_to_file_system_mapping(spec, writable=True)
    assert mapping == FileSystemMapping(source, target, True)
    assert not specification_to_file_system_mapping(spec, writable=False).writable


@pytest.mark.parametrize(
    "spec", ["", "=/x", "/x="], ids=["empty", "no-source", "no-target"]
)
def test_specification_rejects_empty_parts(spec: str) -> None:
    with pytest.raises(FileSystemError, match="invalid file system mapping"):
        specification_to_file_system_mapping(spec, writable=False)


def test_mapping_to_bind_mount() -> None:
    ro = file_system_mapping_to_bind_mount(FileSystemMapping("/src", "/dst"))
    assert (ro.device, ro.mount_point, ro.type) == ("/src", "/dst", "none")
    assert ro.flags == ("bind-mount", "read-only")
    assert ro.create_mount_point and not ro.check
    rw = file_system_mapping_to_bind_mount(FileSystemMapping("/src", "/dst", True))
    assert rw.flags == ("bind-mount",)


def test_store_and_network_mappings() -> None:
    assert store_mapping("/pyguix/store") == FileSystemMapping(
        "/pyguix/store", "/pyguix/store", False
    )
    mappings = {m.target: m for m in network_file_mappings()}
    assert sorted(mappings) == [
        "/etc/hosts",
        "/etc/nsswitch.conf",
        "/etc/resolv.conf",
        "/etc/services",
    ]
    assert [t for t, m in mappings.items() if m.writable] == ["/etc/resolv.conf"]
    assert all(m.source == m.target for m in mappings.values())


def test_container_file_systems() -> None:
    points = [fs.mount_point for fs in CONTAINER_FILE_SYSTEMS]
    assert points == ["/dev/pts", "/dev/shm", "/dev/mqueue"]
    assert all(fs.needed_for_boot for fs in CONTAINER_FILE_SYSTEMS)
    assert CONTAINER_FILE_SYSTEMS[0].options == "newinstance,ptmxmode=0666,mode=620"


def test_spec_round_trip_and_embedding() -> None:
    fs = FileSystem(
        device="tmpfs",
        mount_point="/var/cache",
        type="tmpfs",
        flags=("no-exec", "no-suid"),
        options="mode=0755",
        mount_may_fail=True,
        needed_for_boot=True,
        create_mount_point=True,
    )
    spec = file_system_to_spec(fs)
    assert spec == [
        "tmpfs",
        "/var/cache",
        "tmpfs",
        ["no-exec", "no-suid"],
        "mode=0755",
        True,
        True,
        True,
        True,
    ]
    assert spec_to_file_system(spec) == fs
    # Plain data: a gexp embeds it, and the text evaluates back to it.
    text = plain_repr(spec)
    assert eval(text) == spec
    assert gexp("specs = $specs", specs=[spec]).references


def test_spec_with_wrong_arity() -> None:
    with pytest.raises(FileSystemError, match="does not have 9 fields"):
        spec_to_file_system(["tmpfs", "/tmp"])


def test_invalid_flag_and_relative_mount_point() -> None:
    with pytest.raises(FileSystemError, match="invalid file system flag 'noexec'"):
        FileSystem("tmpfs", "/tmp", "tmpfs", flags=("noexec",))
    with pytest.raises(FileSystemError, match="is not absolute"):
        FileSystem("tmpfs", "tmp", "tmpfs")


def test_needed_for_boot() -> None:
    store = "/pyguix/store"
    assert file_system_needed_for_boot(
        FileSystem("x", "/x", "tmpfs", needed_for_boot=True), store
    )
    assert not file_system_needed_for_boot(FileSystem("x", "/x", "tmpfs"), store)
    # Under the store prefix and not a bind mount: needed, as in Guix.
    assert file_system_needed_for_boot(FileSystem("/dev/sdb", store, "ext4"), store)
    assert not file_system_needed_for_boot(
        FileSystem("/data", store, "none", flags=("bind-mount",)), store
    )


STORE_DIR = "/pyguix/store"


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        pytest.param("/", "the container's root is a fresh tmpfs", id="root"),
        pytest.param("//", "the container's root is a fresh tmpfs", id="root-slashes"),
        pytest.param(STORE_DIR, "the store '/pyguix/store' is mapped", id="store"),
        pytest.param(
            STORE_DIR + "/x/", "the store '/pyguix/store' is mapped", id="in-store"
        ),
        pytest.param("/proc", "the container runtime mounts '/proc' itself", id="proc"),
        pytest.param(
            "/sys/fs", "the container runtime mounts '/sys' itself", id="under-sys"
        ),
        pytest.param("/dev", "the container runtime mounts '/dev' itself", id="dev"),
        pytest.param(
            "/x/../dev/shm",
            "the container runtime mounts '/dev' itself",
            id="dotdot-to-dev",
        ),
    ],
)
def test_reserved_mapping_targets_are_refused(target: str, reason: str) -> None:
    with pytest.raises(
        FileSystemError, match=f"cannot map '/src' onto '{target}': {reason}"
    ):
        check_mappings([FileSystemMapping("/src", target)], STORE_DIR)


def test_two_mappings_onto_one_target_are_refused() -> None:
    mappings = [FileSystemMapping("/a", "/e", True), FileSystemMapping("/b", "/e/")]
    with pytest.raises(
        FileSystemError, match="'/b' and '/a' are both mapped onto '/e'"
    ):
        check_mappings(mappings, STORE_DIR)


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        pytest.param(
            FileSystemMapping("rel", "/x"),
            "mapping source 'rel' is not absolute",
            id="source",
        ),
        pytest.param(
            FileSystemMapping("/a", "x"),
            "mapping target 'x' is not absolute",
            id="target",
        ),
    ],
)
def test_relative_mapping_paths_are_refused(
    mapping: FileSystemMapping, message: str
) -> None:
    with pytest.raises(FileSystemError, match=message):
        check_mappings([mapping], STORE_DIR)


def test_ordinary_mappings_pass() -> None:
    check_mappings(
        [
            FileSystemMapping("/srv", "/srv"),
            FileSystemMapping("/x", "/store-elsewhere", True),
            FileSystemMapping("/y", "/devices"),
            FileSystemMapping("/z", "/srv/inner"),
        ],
        STORE_DIR,
    )
