"""Tests of the init supervisor with real processes, signals and a PID namespace."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from system.init import RESPAWN_LIMIT, main
from system.init_spec import (
    InitSpecError,
    ServiceGraphError,
    load_spec,
    parse_spec,
    start_order,
)

REPO = Path(__file__).resolve().parents[2]

# One program plays every test service; its first argument picks the role.
SERVICE_PROGRAM = textwrap.dedent(
    """\
    import os, signal, sys, time

    def note(path, line):
        with open(path, "a") as stream:
            stream.write(line + "\\n")

    def write_atomically(path, text):
        with open(path + ".tmp", "w") as stream:
            stream.write(text)
        os.rename(path + ".tmp", path)

    def serve(path, name):
        def stop(signum, frame):
            note(path, "stop " + name)
            sys.exit(0)
        signal.signal(signal.SIGTERM, stop)
        while True:
            signal.pause()

    role, path, name = sys.argv[1], sys.argv[2], sys.argv[3]
    if role == "oneshot":
        note(path, "start " + name)
        time.sleep(0.3)
        note(path, "end " + name)
    elif role == "daemon":
        def stop(signum, frame):
            note(path, "stop " + name)
            sys.exit(0)
        signal.signal(signal.SIGTERM, stop)
        note(path, "start " + name)
        while True:
            signal.pause()
    elif role == "fail-once":
        note(path, name)
        if len(open(path).read().split()) == 1:
            sys.exit(1)
        while True:
            signal.pause()
    elif role == "crash":
        note(path, name)
        sys.exit(2)
    elif role == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        note(path, "up")
        while True:
            signal.pause()
    elif role == "orphan":
        middle = os.fork()
        if middle == 0:
            if os.fork() == 0:
                time.sleep(0.3)
                note(path + ".tmp", str(os.getpid()))
                os.rename(path + ".tmp", path)
            os._exit(0)
        os.waitpid(middle, 0)
        while True:
            signal.pause()
    elif role == "pid-file-late":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        note(path, "start " + name)
        time.sleep(0.4)
        note(path, "ready " + name)
        write_atomically(sys.argv[4], str(os.getpid()))
        serve(path, name)
    elif role == "forking":
        if os.fork() == 0:
            os.setsid()
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
            time.sleep(0.3)
            note(path, "ready " + name)
            write_atomically(sys.argv[4], f"{os.getpid()}\\n")
            serve(path, name)
        os._exit(0)
    elif role == "notify":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        fd = int(sys.argv[4])
        time.sleep(0.4)
        note(path, "ready " + name)
        os.write(fd, b"up and running\\n")
        os.close(fd)
        serve(path, name)
    elif role == "mute":
        note(path, "start " + name)
        serve(path, name)
    elif role == "escape":
        middle = os.fork()
        if middle == 0:
            if os.fork() == 0:
                os.setsid()
                note(path + ".tmp", str(os.getpid()))
                os.rename(path + ".tmp", path)
                while True:
                    signal.pause()
            os._exit(0)
        os.waitpid(middle, 0)
        while True:
            signal.pause()
    """
)


class Init:
    """A running init (``python -m system.init``) over a spec in ``tmp_path``."""

    def __init__(
        self,
        tmp_path: Path,
        services: list[dict[str, object]],
        wrapper: Sequence[str] = (),
    ) -> None:
        self.spec = tmp_path / "spec.json"
        self.spec.write_text(json.dumps({"services": services}))
        self.logs = tmp_path / "log"
        self.run = tmp_path / "run"
        self.stderr = tmp_path / "init.stderr"
        command = [
            *wrapper,
            sys.executable,
            "-m",
            "system.init",
            "--spec",
            str(self.spec),
            "--log-dir",
            str(self.logs),
            "--run-dir",
            str(self.run),
        ]
        with open(self.stderr, "wb") as stderr:
            self.process = subprocess.Popen(
                command, stderr=stderr, env=_environment(), cwd=tmp_path
            )

    def status(self) -> dict[str, object]:
        """Return the status file, or an empty dict before the first one."""
        try:
            document: dict[str, object] = json.loads(
                (self.run / "init.status").read_text()
            )
        except FileNotFoundError:
            return {}
        return document

    def service(self, name: str) -> dict[str, object]:
        """Return the status entry of service ``name``."""
        services = self.status().get("services", [])
        assert isinstance(services, list)
        return next(s for s in services if s["name"] == name)

    def log(self) -> str:
        """Return the init's own log."""
        return (self.logs / "init.log").read_text()

    def stop(self, signum: int = signal.SIGTERM, pid: int | None = None) -> int:
        """Send ``signum`` to the init and return its status, within 5 s."""
        os.kill(pid or self.process.pid, signum)
        return self.process.wait(timeout=5)

    def kill(self) -> None:
        """Kill the init if a test left it running."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def _environment() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {
        **os.environ,
        "PYTHONPATH": f"{REPO}{os.pathsep}{path}" if path else str(REPO),
    }


def wait_for(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    """Poll ``predicate`` until it holds, failing the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {predicate}"
        time.sleep(0.02)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def alive(pid: int) -> bool:
    """Tell whether ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def program(tmp_path: Path) -> Path:
    path = tmp_path / "service.py"
    path.write_text(SERVICE_PROGRAM)
    return path


@pytest.fixture
def inits() -> Iterator[list[Init]]:
    started: list[Init] = []
    yield started
    for init in started:
        init.kill()


def service(
    name: str, program: Path, role: str, path: Path, **fields: object
) -> dict[str, object]:
    """Return a spec entry running ``program`` in ``role``."""
    command = [sys.executable, str(program), role, str(path), name]
    return {"name": name, "command": command, **fields}


# ---------------------------------------------------------------------------
# Starting and stopping in order


def test_starts_in_dependency_order_and_stops_in_reverse(
    tmp_path: Path, program: Path, inits: list[Init]
) -> None:
    events = tmp_path / "events"
    services = [
        service("c", program, "daemon", events, requirement=["b"], respawn=True),
        service("b", program, "daemon", events, requirement=["setup"]),
        service("a", program, "oneshot", events, one_shot=True, provision=["setup"]),
    ]
    init = Init(tmp_path, services)
    inits.append(init)

    wait_for(
        lambda: init.status().get("state") == "running" and "start c" in lines(events)
    )
    wait_for(lambda: "start b" in lines(events))
    seen = lines(events)
    assert seen.index("start a") < seen.index("end a") < seen.index("start b")
    assert init.status()["start_order"] == ["a", "b", "c"]
    assert [init.service(n)["state"] for n in "abc"] == ["done", "running", "running"]
    log = init.log()
    assert log.index("started service 'a'") < log.index("one-shot service 'a' done")
    assert log.index("one-shot service 'a' done") < log.index("started service 'b'")
    assert log.index("started service 'b'") < log.index("started service 'c'")

    shown = subprocess.run(
        [sys.executable, "-m", "system.init", "--status", "--run-dir", str(init.run)],
        capture_output=True,
        text=True,
        env=_environment(),
        check=True,
    ).stdout
    assert "running" in shown.splitlines()[0]
    assert any(line.split()[:2] == ["c", "running"] for line in shown.splitlines())

    pids = [init.service(n)["pid"] for n in "bc"]
    assert init.stop() == 0
    assert [line for line in lines(events) if line.startswith("stop")] == [
        "stop c",
        "stop b",
    ]
    assert not any(alive(pid) for pid in pids if isinstance(pid, int))
    assert init.status()["state"] == "stopped"
    assert [init.service(n)["state"] for n in "abc"] == ["done", "stopped", "stopped"]


def test_sigint_stops_too_and_a_service_ignoring_its_signal_is_killed(
    tmp_path: Path, program: Path, inits: list[Init]
) -> None:
    marker = tmp_path / "stubborn"
    entry = service("stubborn", program, "stubborn", marker, stop_timeout=0.5)
    init = Init(tmp_path, [entry])
    inits.append(init)
    wait_for(lambda: lines(marker) == ["up"])
    pid = init.service("stubborn")["pid"]

    assert init.stop(signal.SIGINT) == 0
    assert isinstance(pid, int) and not alive(pid)
    assert "still running 0.5 s after SIGTERM; killing it" in init.log()
    assert init.service("stubborn")["term_signal"] == signal.SIGKILL


def test_stop_during_boot_stops_the_one_shot_and_starts_nothing_more(
    tmp_path: Path, program: Path, inits: list[Init]
) -> None:
    events = tmp_path / "events"
    services = [
        service("slow", program, "daemon", events, one_shot=True),
        service("later", program, "daemon", events, requirement=["slow"]),
    ]
    init = Init(tmp_path, services)
    inits.append(init)
    wait_for(lambda: lines(events) == ["start slow"])
    assert init.status()["state"] == "starting"

    assert init.stop() == 0
    assert lines(events) == ["start slow", "stop slow"]
    assert init.service("later")["state"] == "waiting"
    assert init.service("slow")["state"] == "stopped"


@pytest.mark.skipif(os.getuid() != 0, reason="switching users needs root")
def test_runs_services_with_their_environment_directory_user_and_log(
    tmp_path: Path, inits: list[Init]
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    shell = 'echo "$GREETING $HOME $(id -u) $(pwd)"'
    services: list[dict[str, object]] = [
        {
            "name": "who",
            "command": ["sh", "-c", shell],
            "one_shot": True,
            "environment": {"GREETING": "hello"},
            "directory": str(work),
            "user": "nobody",
            "log_file": "custom/who.log",
        },
        {"name": "ghost", "command": ["true"], "user": "no-such-user-here"},
        {"name": "nowhere", "command": ["true"], "directory": str(tmp_path / "none")},
    ]
    init = Init(tmp_path, services)
    inits.append(init)
    wait_for(lambda: init.status().get("state") == "running")

    nobody = pwd.getpwnam("nobody")
    output = (init.logs / "custom" / "who.log").read_text()
    assert output == f"hello {nobody.pw_dir} {nobody.pw_uid} {work}\n"
    assert init.service("who")["state"] == "done"
    assert "user: no account 'no-such-user-here'" in str(
        init.service("ghost")["reason"]
    )
    assert "chdir: '" in str(init.service("nowhere")["reason"])
    assert init.stop() == 0


# ---------------------------------------------------------------------------
# Respawning and failures


def test_respawns_daemons_and_gives_up_on_crash_loops(
    tmp_path: Path, program: Path, inits: list[Init]
) -> None:
    flaky_runs, crash_runs, events = (
        tmp_path / "flaky",
        tmp_path / "crash",
        tmp_path / "events",
    )
    services: list[dict[str, object]] = [
        service("flaky", program, "fail-once", flaky_runs, respawn=True),
        service("crash", program, "crash", crash_runs, respawn=True),
        service("broken", program, "crash", tmp_path / "broken", one_shot=True),
        service("needs-broken", program, "daemon", events, requirement=["broken"]),
        service("needs-needs", program, "daemon", events, requirement=["needs-broken"]),
        {"name": "missing", "command": ["/nonexistent/program"]},
    ]
    init = Init(tmp_path, services)
    inits.append(init)

    wait_for(lambda: init.status().get("state") == "running")
    wait_for(lambda: init.service("crash")["state"] == "failed")
    wait_for(
        lambda: init.service("flaky")["restarts"] == 1 and len(lines(flaky_runs)) == 2
    )
    assert init.service("flaky")["state"] == "running"
    assert init.service("crash")["restarts"] == RESPAWN_LIMIT
    assert len(lines(crash_runs)) == RESPAWN_LIMIT + 1
    assert "is respawning too fast" in init.log()

    broken = init.service("broken")
    assert (broken["state"], broken["exit_code"]) == ("failed", 2)
    assert init.service("needs-broken")["state"] == "skipped"
    assert (
        init.service("needs-needs")["reason"] == "requirement 'needs-broken' is skipped"
    )
    assert not events.exists()
    missing = init.service("missing")
    assert missing["state"] == "failed"
    assert "exec: '/nonexistent/program': No such file or directory" in str(
        missing["reason"]
    )

    time.sleep(0.3)
    assert len(lines(crash_runs)) == RESPAWN_LIMIT + 1
    assert init.stop() == 0


# ---------------------------------------------------------------------------
# Orphans


def test_reaps_orphans_as_a_subreaper_and_ends_detached_ones(
    tmp_path: Path, program: Path, inits: list[Init]
) -> None:
    grandchild_file, detached_file = tmp_path / "grandchild", tmp_path / "detached"
    services = [
        service("forker", program, "orphan", grandchild_file),
        service("detacher", program, "escape", detached_file),
    ]
    init = Init(tmp_path, services)
    inits.append(init)

    wait_for(lambda: grandchild_file.exists() and detached_file.exists())
    grandchild = int(grandchild_file.read_text())
    wait_for(lambda: f"reaped orphan process {grandchild} " in init.log())
    assert not Path(f"/proc/{grandchild}").exists()
    detached = int(detached_file.read_text())
    assert alive(detached)

    assert init.stop() == 0
    assert not Path(f"/proc/{detached}").exists()
    assert f"sent SIGTERM to leftover processes [{detached}]" in init.log()


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True
    )
    return probe.returncode == 0


@pytest.mark.skipif(not _unshare_works(), reason="cannot unshare a PID namespace here")
def test_reaps_orphans_and_everything_left_as_pid_1(
    tmp_path: Path, program: Path, inits: list[Init]
) -> None:
    grandchild_file, events = tmp_path / "grandchild", tmp_path / "events"
    services = [
        service("forker", program, "orphan", grandchild_file),
        service("daemon", program, "daemon", events, requirement=["forker"]),
        service("detacher", program, "escape", tmp_path / "detached"),
    ]
    init = Init(tmp_path, services, ["unshare", "--pid", "--fork", "--mount-proc"])
    inits.append(init)

    wait_for(
        lambda: (
            init.status().get("pid") == 1
            and grandchild_file.exists()
            and (tmp_path / "detached").exists()
        )
    )
    grandchild = int(grandchild_file.read_text())
    wait_for(lambda: f"reaped orphan process {grandchild} " in init.log())
    unshare = init.process.pid
    (host_pid,) = map(
        int, Path(f"/proc/{unshare}/task/{unshare}/children").read_text().split()
    )
    inside = _descendants(host_pid)
    assert len(inside) == 4 and all(alive(pid) for pid in inside)

    assert init.stop(pid=host_pid) == 0
    assert lines(events) == ["start daemon", "stop daemon"]
    assert "sent SIGTERM to leftover processes [-1]" in init.log()
    assert not any(Path(f"/proc/{pid}").exists() for pid in [host_pid, *inside])


def _descendants(pid: int) -> list[int]:
    """Return every descendant of ``pid`` (host PIDs), zombies included."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in map(int, (task / "children").read_text().split()):
            found += [child, *_descendants(child)]
    return found


# ---------------------------------------------------------------------------
# Readiness


def test_dependents_wait_for_a_pid_file_naming_a_live_process(
    tmp_path: Path, program: Path, inits: list[Init]
) -> None:
    events, pid_file = tmp_path / "events", tmp_path / "slow.pid"
    pid_file.write_text(str(os.getpid()))
    slow = service("slow", program, "pid-file-late", events)
    slow["command"] = [*slow["command"], str(pid_file)]  # type: ignore[misc]
    slow["readiness"] = {"pid_file": str(pid_file), "timeout": 5}
    services = [slow, service("after", program, "daemon", events, requirement=["slow"])]
    init = Init(tmp_path, services)
    inits.append(init)

    wait_for(lambda: lines(events) == ["start slow"])
    assert init.status()["state"] == "starting"
    assert init.service("slow")["state"] == "starting"
    assert init.service("after")["state"] == "waiting"
    assert init.service("slow")["readiness"] == {
        "pid_file": str(pid_file),
        "timeout": 5.0,
    }

    wait_for(lambda: "start after" in lines(events))
    assert lines(events) == ["start slow", "ready slow", "start after"]
    assert init.status()["state"] == "running"
    slow_status = init.service("slow")
    assert slow_status["state"] == "running"
    assert slow_status["pid"] == int(pid_file.read_text())
    log = init.log()
    assert log.index("service 'slow' is ready") < log.index("started service 'after'")
    assert init.stop() == 0


def test_a_forking_daemon_is_supervised_and_stopped_through_its_pid_file(
    tmp_path: Path, program: Path, inits: list[Init]
) -> None:
    events = tmp_path / "events"

    def forking(name: str) -> dict[str, object]:
        entry = service(name, program, "forking", events)
        pid_file = str(tmp_path / f"{name}.pid")
        entry["command"] = [*entry["command"], pid_file]  # type: ignore[misc]
        entry["readiness"] = {"pid_file": pid_file, "timeout": 5}
        return entry

    services = [
        forking("forker"),
        forking("doomed"),
        service("after", program, "daemon", events, requirement=["forker"]),
    ]
    init = Init(tmp_path, services)
    inits.append(init)

    wait_for(lambda: "start after" in lines(events))
    wait_for(lambda: init.service("doomed")["state"] == "running")
    assert lines(events).index("ready forker") < lines(events).index("start after")
    daemon = int((tmp_path / "forker.pid").read_text())
    assert init.service("forker")["pid"] == daemon
    assert alive(daemon)
    assert "launcher exited with code 0; waiting for pid file" in init.log()

    doomed = int((tmp_path / "doomed.pid").read_text())
    os.kill(doomed, signal.SIGKILL)
    wait_for(lambda: init.service("doomed")["state"] == "failed")
    assert init.service("doomed")["term_signal"] == signal.SIGKILL

    assert init.stop() == 0
    assert not alive(daemon)
    assert "stop forker" in lines(events)
    assert f"stopping service 'forker' (pid {daemon})" in init.log()
    assert "leftover" not in init.log()
    assert init.service("forker")["state"] == "stopped"


def test_dependents_wait_for_a_newline_on_the_notification_fd(
    tmp_path: Path, program: Path, inits: list[Init]
) -> None:
    events = tmp_path / "events"
    notifier = service("notifier", program, "notify", events)
    notifier["command"] = [*notifier["command"], "5"]  # type: ignore[misc]
    notifier["readiness"] = {"notify_fd": 5, "timeout": 5}
    services = [
        notifier,
        service("after", program, "daemon", events, requirement=["notifier"]),
    ]
    init = Init(tmp_path, services)
    inits.append(init)

    wait_for(lambda: init.status().get("state") == "starting")
    assert init.service("notifier")["state"] == "starting"
    assert init.service("after")["state"] == "waiting"
    wait_for(lambda: "start after" in lines(events))
    assert lines(events) == ["ready notifier", "start after"]
    assert init.service("notifier")["state"] == "running"
    assert init.stop() == 0
    assert "stop notifier" in lines(events)


def test_a_daemon_not_ready_in_time_fails_and_its_dependents_are_skipped(
    tmp_path: Path, program: Path, inits: list[Init]
) -> None:
    events, pid_file = tmp_path / "events", tmp_path / "never.pid"
    closer = ["sh", "-c", "exec 3>&-; sleep 5"]
    services: list[dict[str, object]] = [
        service(
            "mute",
            program,
            "mute",
            events,
            readiness={"notify_fd": 3, "timeout": 0.5},
        ),
        service("needs-mute", program, "daemon", events, requirement=["mute"]),
        service("needs-needs", program, "daemon", events, requirement=["needs-mute"]),
        service(
            "no-pid-file",
            program,
            "mute",
            events,
            readiness={"pid_file": str(pid_file), "timeout": 0.5},
        ),
        service(
            "quitter",
            program,
            "crash",
            tmp_path / "crash",
            readiness={"notify_fd": 3, "timeout": 5},
        ),
        {"name": "closer", "command": closer, "readiness": {"notify_fd": 3}},
        {"name": "far", "command": ["true"], "readiness": {"notify_fd": 2**30}},
    ]
    init = Init(tmp_path, services)
    inits.append(init)

    wait_for(lambda: init.status().get("state") == "running")
    mute = init.service("mute")
    assert mute["state"] == "failed"
    assert mute["reason"] == "no readiness notification on fd 3 within 0.5 s"
    assert init.service("needs-mute")["reason"] == "requirement 'mute' is failed"
    assert init.service("needs-needs")["state"] == "skipped"
    assert init.service("no-pid-file")["reason"] == (
        f"pid file '{pid_file}' did not name a live process within 0.5 s"
    )
    assert init.service("quitter")["reason"] == (
        "exited with code 2 before it was ready"
    )
    assert init.service("closer")["reason"] == (
        "it closed notification fd 3 without writing a newline"
    )
    assert "descriptors: cannot pass fd 1073741824: " in str(
        init.service("far")["reason"]
    )
    # Each failed daemon gets its stop signal; they note it in any order.
    wait_for(lambda: {"stop mute", "stop no-pid-file"} <= set(lines(events)))
    assert "start needs-mute" not in lines(events)

    assert init.stop() == 0
    assert [init.service(n)["state"] for n in ("mute", "closer")] == [
        "failed",
        "failed",
    ]


def test_sigterm_while_a_daemon_is_not_ready_stops_it_at_once(
    tmp_path: Path, program: Path, inits: list[Init]
) -> None:
    events = tmp_path / "events"
    mute = service(
        "mute", program, "mute", events, readiness={"notify_fd": 4, "timeout": 20}
    )
    init = Init(tmp_path, [mute])
    inits.append(init)
    wait_for(lambda: lines(events) == ["start mute"])
    assert init.status()["state"] == "starting"

    started = time.monotonic()
    assert init.stop() == 0
    # Well before the readiness timeout: the init did not wait for it.
    assert time.monotonic() - started < 15
    assert lines(events) == ["start mute", "stop mute"]
    assert init.service("mute")["state"] == "stopped"


# ---------------------------------------------------------------------------
# Bad specs


def _command() -> list[str]:
    return ["/bin/true"]


BAD_SPECS = {
    "not-json": ("{services: []}", "not JSON"),
    "no-services": (json.dumps({"service": []}), "services: expected a list"),
    "missing-command": (
        json.dumps({"services": [{"name": "a"}]}),
        "services[0].command: expected a non-empty list",
    ),
    "misspelt-key": (
        json.dumps(
            {"services": [{"name": "a", "command": _command(), "requirements": ["b"]}]}
        ),
        "services[0].requirements: unknown key",
    ),
    "bad-signal": (
        json.dumps(
            {
                "services": [
                    {"name": "a", "command": _command(), "stop_signal": "SIGNOPE"}
                ]
            }
        ),
        'services[0].stop_signal: "SIGNOPE" is not a signal name',
    ),
    "respawning-one-shot": (
        json.dumps(
            {
                "services": [
                    {
                        "name": "a",
                        "command": _command(),
                        "one_shot": True,
                        "respawn": True,
                    }
                ]
            }
        ),
        "services[0].respawn: a one-shot service cannot respawn",
    ),
    "bad-notify-fd": (
        json.dumps(
            {
                "services": [
                    {"name": "a", "command": _command(), "readiness": {"notify_fd": 1}}
                ]
            }
        ),
        "services[0].readiness.notify_fd: expected a descriptor number of 3 or more",
    ),
    "unknown-readiness": (
        json.dumps(
            {"services": [{"name": "a", "command": _command(), "readiness": "up"}]}
        ),
        'services[0].readiness: "up" is not a readiness',
    ),
    "one-shot-readiness": (
        json.dumps(
            {
                "services": [
                    {
                        "name": "a",
                        "command": _command(),
                        "one_shot": True,
                        "readiness": {"pid_file": "/run/a.pid"},
                    }
                ]
            }
        ),
        "services[0].readiness: a one-shot service is ready when it exits 0",
    ),
    "unknown-requirement": (
        json.dumps(
            {"services": [{"name": "a", "command": _command(), "requirement": ["db"]}]}
        ),
        "services[0].requirement: service 'a' requires 'db', which no service provides",
    ),
    "cycle": (
        json.dumps(
            {
                "services": [
                    {"name": "a", "command": _command(), "requirement": ["c"]},
                    {"name": "b", "command": _command(), "requirement": ["a"]},
                    {"name": "c", "command": _command(), "requirement": ["b"]},
                ]
            }
        ),
        "requirement cycle: 'a' -> 'b' -> 'c' -> 'a'",
    ),
    "provided-twice": (
        json.dumps(
            {
                "services": [
                    {"name": "a", "command": _command(), "provision": ["web"]},
                    {"name": "b", "command": _command(), "provision": ["web"]},
                ]
            }
        ),
        "services[1].provision: 'web' is provided by both 'a' and 'b'",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_bad_spec_is_a_clear_error_with_status_1(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, expected = BAD_SPECS[case]
    spec = tmp_path / "spec.json"
    spec.write_text(text)

    status = main(
        ["--spec", str(spec), "--log-dir", str(tmp_path), "--run-dir", str(tmp_path)]
    )

    assert status == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: invalid init spec '{spec}'")
    assert expected in err
    assert not (tmp_path / "init.log").exists()


def test_every_problem_is_reported_at_once() -> None:
    text = json.dumps(
        {
            "services": [
                {"name": "", "command": []},
                {"name": "b", "command": ["x"], "respawn": 1},
            ]
        }
    )
    with pytest.raises(InitSpecError) as caught:
        parse_spec(text, "spec.json")
    assert [p.field for p in caught.value.problems] == [
        "services[0].name",
        "services[0].command",
        "services[1].respawn",
    ]
    assert caught.value.field == "services[0].name"


def test_graph_errors_name_the_services(tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(
            {
                "services": [
                    {"name": "ok", "command": ["x"]},
                    {"name": "web", "command": ["x"], "requirement": ["db"]},
                    {"name": "db", "command": ["x"], "requirement": ["web"]},
                ]
            }
        )
    )
    with pytest.raises(ServiceGraphError) as caught:
        start_order(load_spec(str(spec)))
    assert caught.value.services == ("web", "db")
    assert caught.value.field == "services[1].requirement"


def test_start_order_follows_requirements_then_file_order() -> None:
    entries = [
        {"name": "web", "command": ["x"], "requirement": ["net", "db"]},
        {"name": "log", "command": ["x"]},
        {"name": "db", "command": ["x"], "requirement": ["net"]},
        {"name": "loopback", "command": ["x"], "provision": ["net"], "one_shot": True},
    ]
    spec = parse_spec(json.dumps({"services": entries}))
    assert start_order(spec) == ("log", "loopback", "db", "web")


def test_missing_spec_file_fails_through_the_module_entry_point(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.json"
    done = subprocess.run(
        [sys.executable, "-m", "system.init", "--spec", str(missing)],
        capture_output=True,
        text=True,
        env=_environment(),
    )
    assert done.returncode == 1
    assert done.stderr.startswith(
        f"error: invalid init spec '{missing}': cannot read it"
    )


def test_status_without_an_init_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--status", "--run-dir", str(tmp_path)]) == 1
    assert "no init status at" in capsys.readouterr().err
