"""Tests of system profiles: manifest entries from packages, and profiles
really built: their union, manifest and etc/profile."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from builders.logs import read_log
from builders.scheduler import RealiseError, realise
from derivations.derivation import Derivation
from derivations.file_like import computed_file, file_append, plain_file
from derivations.gexp import gexp
from derivations.lowering import lower_object
from derivations.monad import run_with_store
from store.local import LocalStore
from system import profile_build
from system.operating_system import (
    load_operating_system,
    operating_system_directory,
)
from system.profiles import (
    ManifestEntry,
    Profile,
    ProfileError,
    SearchPath,
    package_manifest_entry,
    package_name_version,
    packages_manifest,
    profile,
)

SYSTEM = "x86_64-linux"
EXAMPLE = Path(__file__).resolve().parents[2] / "fixtures" / "os.py"


# ---------------------------------------------------------------------------
# A small S-expression reader, enough for manifests


_TOKEN = re.compile(r'\s*(?:(;[^\n]*)|(\()|(\))|"((?:[^"\\]|\\.)*)"|([^\s()"]+))')


class Symbol(str):
    """A symbol read from an S-expression."""


def read_sexp(text: str) -> Any:
    """Return the one S-expression of ``text``: lists, strings, symbols,
    integers, ``#t``/``#f`` as booleans."""
    stack: list[list[Any]] = [[]]
    position = 0
    while text[position:].strip():
        match = _TOKEN.match(text, position)
        assert match is not None, f"bad S-expression at offset {position}"
        position = match.end()
        comment, opening, closing, string, atom = match.groups()
        if comment is not None:
            continue
        if opening:
            stack.append([])
        elif closing:
            done = stack.pop()
            stack[-1].append(done)
        elif string is not None:
            stack[-1].append(re.sub(r"\\(.)", _unescape, string))
        else:
            stack[-1].append(_atom(atom))
    assert len(stack) == 1 and len(stack[0]) == 1, "unbalanced S-expression"
    return stack[0][0]


def _unescape(match: re.Match[str]) -> str:
    return {"n": "\n", "t": "\t", "r": "\r"}.get(match[1], match[1])


def _atom(text: str) -> Any:
    if text in ("#t", "#f"):
        return text == "#t"
    if re.fullmatch(r"-?[0-9]+", text):
        return int(text)
    return Symbol(text)


def manifest_entries(profile_dir: Path) -> list[list[Any]]:
    sexp = read_sexp((profile_dir / "manifest").read_text())
    assert sexp[0] == "manifest" and isinstance(sexp[0], Symbol)
    assert sexp[1] == [Symbol("version"), 4]
    assert sexp[2][0] == "packages"
    entries: list[list[Any]] = sexp[2][1]
    return entries


def fields(entry: list[Any]) -> dict[str, Any]:
    """Return the optional fields of a version 4 entry by name."""
    return {str(name): value for name, value in entry[4:]}


# ---------------------------------------------------------------------------
# Entries


@pytest.mark.parametrize(
    ("store_name", "expected"),
    [
        pytest.param("hello-2.12", ("hello", "2.12"), id="name-version"),
        pytest.param("example-tools", ("example-tools", ""), id="no-version"),
        pytest.param("gcc-toolchain-12.3.0", ("gcc-toolchain", "12.3.0"), id="hyphens"),
        pytest.param("font-x11-1.0-doc", ("font-x11", "1.0-doc"), id="digit-in-name"),
        pytest.param("foo-", ("foo-", ""), id="trailing-hyphen"),
        pytest.param("123", ("123", ""), id="digits-only"),
    ],
)
def test_package_name_version_splits_at_first_hyphen_digit(
    store_name: str, expected: tuple[str, str]
) -> None:
    assert package_name_version(store_name) == expected


def test_entries_come_from_store_names() -> None:
    hello = plain_file("hello-2.12", "hi")
    path = "/pyguix/store/" + "a" * 32 + "-coreutils-9.1"
    entries = packages_manifest([hello, path, file_append(hello, "/bin"), hello])
    assert [(e.name, e.version, e.output) for e in entries] == [
        ("hello", "2.12", "out"),
        ("coreutils", "9.1", "out"),
        ("hello", "2.12", "out"),
    ]
    assert entries[0].item is hello and entries[1].item == path


def test_entry_takes_search_paths_attribute() -> None:
    class Package(str):
        search_paths = (SearchPath("XDG_DATA_DIRS", ("share",)),)

    package = Package("/pyguix/store/" + "b" * 32 + "-glib-2.70")
    entry = package_manifest_entry(package)
    assert entry.search_paths == Package.search_paths


def test_entry_rejects_what_is_not_a_package() -> None:
    with pytest.raises(ProfileError, match="has no store name") as info:
        package_manifest_entry(42)
    assert info.value.thing == 42


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        pytest.param(("1PATH", ("bin",)), "not a shell variable", id="variable"),
        pytest.param(("P", ('bin"',)), "quote", id="quote-in-file"),
        pytest.param(("P", ("$HOME",)), "quote", id="dollar-in-file"),
        pytest.param(("P", ()), "no files", id="no-files"),
        pytest.param(("P", ("bin",), ":", "socket"), "file type", id="type"),
    ],
)
def test_search_path_rejects_what_etc_profile_cannot_write(
    arguments: tuple[Any, ...], message: str
) -> None:
    with pytest.raises(ProfileError, match=message):
        SearchPath(*arguments)


def test_system_profile_entry_is_a_profile_of_the_packages() -> None:
    os_ = load_operating_system(EXAMPLE)[0]
    system = operating_system_directory(os_)
    entry = dict(system.entries)["profile"]
    assert isinstance(entry, Profile)
    assert [(e.name, e.version) for e in entry.entries] == [
        ("hello", "1.0"),
        ("example-tools", ""),
    ]
    bare = operating_system_directory(replace(os_, packages=()))
    assert dict(bare.entries)["profile"] == Profile("profile", ())


# ---------------------------------------------------------------------------
# Built profiles


def package(name: str, files: dict[str, str]) -> Any:
    """Return a package whose output holds ``files``, relative paths to
    their text, executable."""
    return computed_file(
        name,
        gexp(
            """
            for relative, text in sorted($files.items()):
                path = os.path.join($out, relative)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "w") as file:
                    file.write(text)
                os.chmod(path, 0o755)
            os.makedirs($out, exist_ok=True)
            """,
            files=files,
        ),
    )


HELLO = package("hello-2.12", {"bin/hello": "#!/bin/sh\necho hello\n"})
TOOLS = package(
    "tools",
    {
        "bin/tool": "#!/bin/sh\necho tool\n",
        "bin/same": "identical\n",
        "share/doc/tools/README": "tools\n",
        "etc/tools.conf": "x=1\n",
        "etc/profile": "echo not the profile's\n",
        "manifest": "not the profile's manifest\n",
    },
)
DATA = package(
    "data-1.0",
    {
        "bin/same": "identical\n",
        "bin/tool": "#!/bin/sh\necho other tool\n",
        "share/data/x": "x\n",
        "etc/ssl/certs/ca.pem": "cert\n",
    },
)
DATA_ENTRY = ManifestEntry(
    "data",
    "1.0",
    DATA,
    search_paths=(
        SearchPath("XDG_DATA_DIRS", ("share", "missing")),
        SearchPath("SSL_CERT_FILE", ("etc/ssl",), None, "regular", r"\.pem$"),
        SearchPath("NOTHING_HERE", ("lib/nothing",)),
    ),
)


class Built:
    """Profiles built in one store for the module."""

    def __init__(self, root: Path) -> None:
        self.store = LocalStore(str(root / "store"), str(root / "state"))

    def derivation(self, thing: Any) -> Derivation:
        drv = run_with_store(self.store, lower_object(thing), system=SYSTEM)
        assert isinstance(drv, Derivation)
        return drv

    def build(self, thing: Any) -> tuple[Path, str]:
        drv = self.derivation(thing)
        realise(self.store, [drv.path], jobs=1)
        return Path(self.store.physical(drv.output_path("out"))), drv.path

    def log(self, drv_path: str) -> str:
        return (read_log(self.store.state_dir, drv_path) or b"").decode()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    result = Built(tmp_path_factory.mktemp("profiles"))
    yield result
    result.store.close()


@pytest.fixture(scope="module")
def full(built: Built) -> tuple[Path, str]:
    return built.build(profile("profile", [HELLO, TOOLS, DATA_ENTRY, HELLO]))


def item(built: Built, thing: Any) -> str:
    return str(built.derivation(thing).output_path("out"))


def test_profile_links_the_packages_files(built: Built, full: tuple[Path, str]) -> None:
    out, _ = full
    hello, tools = item(built, HELLO), item(built, TOOLS)
    assert os.readlink(out / "bin" / "hello") == hello + "/bin/hello"
    assert os.readlink(out / "share" / "doc") == tools + "/share/doc"
    assert (out / "bin").is_dir() and not (out / "bin").is_symlink()
    assert (out / "share" / "data" / "x").read_text() == "x\n"
    assert os.readlink(out / "etc" / "tools.conf") == tools + "/etc/tools.conf"
    assert sorted(os.listdir(out)) == ["bin", "etc", "manifest", "share"]


def test_profile_collision_keeps_first_and_names_both(
    built: Built, full: tuple[Path, str]
) -> None:
    out, drv_path = full
    tools, data = item(built, TOOLS), item(built, DATA)
    assert os.readlink(out / "bin" / "tool") == tools + "/bin/tool"
    log = built.log(drv_path)
    assert (
        f"packages 'tools' and 'data' both provide 'bin/tool', differently: "
        f"linking '{tools}/bin/tool', not '{data}/bin/tool'"
    ) in log
    assert "bin/same" not in log, "identical files are no collision"


def test_manifest_lists_entries_in_order(built: Built, full: tuple[Path, str]) -> None:
    out, _ = full
    entries = manifest_entries(out)
    assert [entry[:4] for entry in entries] == [
        ["hello", "2.12", "out", item(built, HELLO)],
        ["tools", "", "out", item(built, TOOLS)],
        ["data", "1.0", "out", item(built, DATA)],
    ]
    assert fields(entries[0]) == {}
    assert fields(entries[2])["search-paths"] == [
        ["XDG_DATA_DIRS", ["share", "missing"], ":", Symbol("directory"), False],
        ["SSL_CERT_FILE", ["etc/ssl"], False, Symbol("regular"), r"\.pem$"],
        ["NOTHING_HERE", ["lib/nothing"], ":", Symbol("directory"), False],
    ]


def test_etc_profile_exports_search_paths(built: Built, full: tuple[Path, str]) -> None:
    out, _ = full
    text = (out / "etc" / "profile").read_text()
    exports = [line for line in text.splitlines() if line.startswith("export")]
    store_out = str(out)  # the store is not relocated: logical = physical
    assert exports == [
        f'export PATH="${{GUIX_PROFILE:-{store_out}}}/bin${{PATH:+:}}$PATH"',
        f'export XDG_DATA_DIRS="${{GUIX_PROFILE:-{store_out}}}/share'
        '${XDG_DATA_DIRS:+:}$XDG_DATA_DIRS"',
        f'export SSL_CERT_FILE="${{GUIX_PROFILE:-{store_out}}}/etc/ssl/certs/ca.pem"',
    ]
    assert "not the profile's" not in text
    assert (out / "manifest").read_text().startswith(";; The manifest")


def source_profile(out: Path, env: dict[str, str]) -> dict[str, str]:
    """Return PATH, XDG_DATA_DIRS and SSL_CERT_FILE after /bin/sh sources
    the profile's etc/profile."""
    script = '. "$0"; printf "%s\\n" "$PATH" "$XDG_DATA_DIRS" "$SSL_CERT_FILE"'
    result = subprocess.run(
        ["/bin/sh", "-c", script, str(out / "etc" / "profile")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    path, data, cert = result.stdout.splitlines()
    return {"PATH": path, "XDG_DATA_DIRS": data, "SSL_CERT_FILE": cert}


def test_sourced_etc_profile_puts_profile_bin_first(full: tuple[Path, str]) -> None:
    out, _ = full
    values = source_profile(out, {"PATH": "/usr/bin:/bin"})
    assert values["PATH"] == f"{out}/bin:/usr/bin:/bin"
    assert values["XDG_DATA_DIRS"] == f"{out}/share"
    assert Path(values["SSL_CERT_FILE"]).read_text() == "cert\n"
    found = subprocess.run(
        ["/bin/sh", "-c", f'. "{out}/etc/profile"; hello'],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert found.stdout == "hello\n"


def test_sourced_etc_profile_honours_guix_profile(full: tuple[Path, str]) -> None:
    out, _ = full
    values = source_profile(out, {"PATH": "/bin", "GUIX_PROFILE": "/run/p"})
    assert values["PATH"] == "/run/p/bin:/bin"
    assert values["SSL_CERT_FILE"] == "/run/p/etc/ssl/certs/ca.pem"


def test_empty_profile_has_manifest_and_etc_profile(built: Built) -> None:
    out, _ = built.build(profile("profile", []))
    assert sorted(os.listdir(out)) == ["etc", "manifest"]
    assert manifest_entries(out) == []
    text = (out / "etc" / "profile").read_text()
    assert text.startswith("#") and "export" not in text
    assert source_profile(out, {"PATH": "/bin"})["PATH"] == "/bin"


def test_conflicting_entries_fail_naming_both(built: Built) -> None:
    other = package("hello-2.13", {"bin/hello": "#!/bin/sh\necho hi\n"})
    renamed = ManifestEntry("hello", "2.13", other)
    with pytest.raises(RealiseError) as info:
        built.build(profile("profile", [HELLO, renamed]))
    (failure,) = info.value.result.failed.values()
    log = "\n".join(failure.log_tail)
    assert (
        f"conflicting entries for 'hello:out': '{item(built, HELLO)}' "
        f"and '{item(built, other)}'"
    ) in log


def test_union_rejects_file_colliding_with_directory(tmp_path: Path) -> None:
    (tmp_path / "a" / "lib").mkdir(parents=True)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "lib").write_text("a file\n")
    with pytest.raises(SystemExit, match="'lib' is a file in some of 'a', 'b'"):
        profile_build.union_build(
            str(tmp_path / "out"),
            [str(tmp_path / "a"), str(tmp_path / "b")],
            ["a", "b"],
        )


def test_manifest_text_escapes_strings() -> None:
    entry = ('a"b\\c', "1\n", "out", "/s/x", ())
    text = profile_build.manifest_text([entry])
    assert read_sexp(text)[2][1][0][:2] == ['a"b\\c', "1\n"]
    assert '"a\\"b\\\\c" "1\\n"' in text


def test_build_profile_makes_linked_etc_a_directory(tmp_path: Path) -> None:
    item = tmp_path / "item-1.0"
    (item / "etc").mkdir(parents=True)
    (item / "etc" / "motd").write_text("hi\n")
    (item / "manifest").write_text("theirs\n")
    out = tmp_path / "profile"
    profile_build.build_profile(str(out), [("item", "1.0", "out", str(item), ())])
    assert (out / "etc").is_dir() and not (out / "etc").is_symlink()
    assert os.readlink(out / "etc" / "motd") == str(item / "etc" / "motd")
    assert (out / "etc" / "profile").read_text().startswith("# Source this file")
    assert manifest_entries(out) == [["item", "1.0", "out", str(item)]]
    assert (item / "manifest").read_text() == "theirs\n"
