"""Progress reporters: the plain lines, the live display, the choice."""

from __future__ import annotations

import io
import os
import re
import sys

import pytest

from builders.progress import (
    BuildReporter,
    LiveReporter,
    PlainReporter,
    format_duration,
    make_reporter,
)

FOO = "/pyguix/store/0abcdfghijklmnpqrsvwxyz01234567-foo.drv"
BAR = "/pyguix/store/1abcdfghijklmnpqrsvwxyz01234567-bar.drv"


def run_session(reporter: BuildReporter) -> None:
    reporter.plan([FOO, BAR])
    reporter.build_started(FOO, "foo")
    reporter.build_started(BAR, "bar")
    reporter.build_log_line(FOO, "compiling [foo] 1/1")
    reporter.build_finished(FOO, True, 1.23)
    reporter.message("note: keeping the failed build in /tmp/b")
    reporter.build_finished(BAR, False, 0.25)
    reporter.done()


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.04, "0.0s"), (12.34, "12.3s"), (125, "2m05s"), (3720, "1h02m")],
    ids=["tiny", "seconds", "minutes", "hours"],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_base_reporter_accepts_every_event_silently() -> None:
    run_session(BuildReporter())


def test_plain_reporter_lines() -> None:
    stream = io.StringIO()

    run_session(PlainReporter(stream))

    lines = stream.getvalue().splitlines()
    assert lines[:6] == [
        "these 2 derivations will be built:",
        f"  {FOO}",
        f"  {BAR}",
        "[1/2] building foo...",
        "[2/2] building bar...",
        "built foo in 1.2s",
    ]
    assert lines[6:8] == [
        "note: keeping the failed build in /tmp/b",
        f"build of '{BAR}' failed after 0.2s",
    ]
    assert re.fullmatch(r"built 1 derivation, 1 failed, in \d+\.\ds", lines[8])
    assert len(lines) == 9


def test_plain_reporter_streams_logs_when_asked() -> None:
    stream = io.StringIO()

    run_session(PlainReporter(stream, print_logs=True))

    assert "foo> compiling [foo] 1/1" in stream.getvalue().splitlines()


def test_plain_reporter_without_plan_and_substitutes() -> None:
    stream = io.StringIO()
    reporter = PlainReporter(stream)

    reporter.plan([], ["/pyguix/store/2abcdfghijklmnpqrsvwxyz01234567-src"])
    reporter.build_started(FOO, "foo")
    reporter.done()
    quiet = io.StringIO()
    PlainReporter(quiet).done()

    assert stream.getvalue().splitlines()[:3] == [
        "this path will be fetched:",
        "  /pyguix/store/2abcdfghijklmnpqrsvwxyz01234567-src",
        "[1/1] building foo...",
    ]
    assert quiet.getvalue() == ""


def test_make_reporter_is_plain_off_a_terminal() -> None:
    reporter = make_reporter(io.StringIO(), verbose=True)

    assert isinstance(reporter, PlainReporter) and reporter.print_logs


def test_make_reporter_is_plain_on_a_terminal_without_rich(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "rich", None)
    monkeypatch.setenv("TERM", "xterm")
    leader, follower = os.openpty()
    with os.fdopen(follower, "w") as terminal:
        assert isinstance(make_reporter(terminal), PlainReporter)
    os.close(leader)


def test_make_reporter_is_plain_on_a_dumb_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TERM", "dumb")
    leader, follower = os.openpty()
    with os.fdopen(follower, "w") as terminal:
        assert isinstance(make_reporter(terminal), PlainReporter)
    os.close(leader)


def test_make_reporter_is_live_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("rich")
    monkeypatch.setenv("TERM", "xterm")
    leader, follower = os.openpty()
    with os.fdopen(follower, "w") as terminal:
        reporter = make_reporter(terminal)
        assert isinstance(reporter, LiveReporter)
        reporter.done()
    os.close(leader)


def live_console() -> tuple[object, io.StringIO]:
    console_module = pytest.importorskip("rich.console")
    out = io.StringIO()
    console = console_module.Console(
        file=out, force_terminal=True, width=100, color_system=None
    )
    return console, out


def test_live_reporter_prints_events_and_summary() -> None:
    console, out = live_console()

    run_session(LiveReporter(console=console, print_logs=True))

    text = out.getvalue()
    assert f"  {FOO}" in text
    assert "foo> compiling [foo] 1/1" in text
    assert "built foo in 1.2s" in text
    assert f"build of '{BAR}' failed after 0.2s" in text
    assert re.search(r"built 1 derivation, 1 failed, in \d+\.\ds", text)


def test_live_display_shows_done_total_and_running_builds() -> None:
    console, _ = live_console()
    reporter = LiveReporter(console=console, max_rows=2)
    reporter.plan([FOO, BAR, "c.drv", "d.drv"])
    for drv, name in [(FOO, "foo"), (BAR, "bar"), ("c.drv", "cc"), ("d.drv", "dd")]:
        reporter.build_started(drv, name)
    reporter.build_finished("d.drv", True, 0.1)

    snapshot, screen = live_console()
    snapshot.print(reporter)  # type: ignore[attr-defined]
    reporter.done()

    rows = screen.getvalue().splitlines()
    assert rows[0] == "[1/4 built, 3 running]"
    assert re.fullmatch(r"  building foo +\d+\.\ds", rows[1])
    assert re.fullmatch(r"  building bar +\d+\.\ds", rows[2])
    assert rows[3:] == ["  and 1 more"]


def test_live_reporter_starts_no_thread() -> None:
    pytest.importorskip("rich")
    import io
    import threading

    from rich.console import Console

    from builders.progress import LiveReporter

    console = Console(file=io.StringIO(), force_terminal=True, width=80)
    reporter = LiveReporter(console=console)
    before = threading.active_count()
    reporter.plan(["/s/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x.drv"])
    reporter.build_started("/s/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x.drv", "x")
    reporter.refresh()
    assert threading.active_count() == before
    reporter.build_finished("/s/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x.drv", True, 0.1)
    reporter.done()
    assert "building x" in console.file.getvalue()
