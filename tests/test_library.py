"""The program library: lookups read the last scan; a timer rescans (docs/protocol.md §6)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from libchat.core.library import ProgramLibrary

from .helpers import make_program


@pytest.fixture
def clock() -> Clock:
    return Clock()


def started(library: ProgramLibrary, clock: Clock) -> Any:
    timer = library.rescanner(clock)
    timer.startService()
    return timer


def test_resolve_never_touches_the_disk(tmp_path: Path, clock: Clock,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    make_program(tmp_path, "echo", keywords=["echo"])
    library = ProgramLibrary([tmp_path], now=clock.seconds)
    timer = started(library, clock)

    def no_disk(*_: Any, **__: Any) -> Any:
        raise AssertionError("the disk was read during a lookup")

    for name in ("iterdir", "is_dir", "is_file", "read_text", "stat", "resolve"):
        monkeypatch.setattr(Path, name, no_disk)
    clock.rightNow += 3600.0  # time passes, but no timer fires: lookups alone
    for _ in range(3):
        assert library.resolve("echo this").name == "echo"  # type: ignore[union-attr]
        assert library.get("echo") is not None and library.resolve("nothing") is None
    monkeypatch.undo()
    timer.stopService()


def test_a_new_program_directory_is_found_within_five_seconds(tmp_path: Path,
                                                              clock: Clock) -> None:
    make_program(tmp_path, "echo", keywords=["echo"])
    library = ProgramLibrary([tmp_path])
    timer = started(library, clock)
    assert set(library.programs()) == {"echo"}
    make_program(tmp_path, "weather", keywords=["weather"])
    clock.advance(4.9)
    assert library.resolve("weather today") is None
    clock.advance(0.1)
    assert library.resolve("weather today").name == "weather"  # type: ignore[union-attr]
    timer.stopService()


def test_a_removed_program_is_gone_after_the_next_rescan(tmp_path: Path, clock: Clock) -> None:
    d = make_program(tmp_path, "echo", keywords=["echo"])
    library = ProgramLibrary([tmp_path])
    timer = started(library, clock)
    (d / "echo.js").unlink()
    assert library.get("echo") is not None
    clock.advance(5)
    assert library.get("echo") is None
    timer.stopService()


def test_no_rescans_after_stop(tmp_path: Path, clock: Clock) -> None:
    library = ProgramLibrary([tmp_path])
    timer = started(library, clock)
    timer.stopService()
    make_program(tmp_path, "echo")
    clock.advance(60)
    assert library.get("echo") is None and clock.getDelayedCalls() == []


def test_an_unreadable_directory_is_logged_and_rescans_go_on(
        tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch, logged: Any) -> None:
    logged.allow("cannot read")
    make_program(tmp_path, "echo")
    library = ProgramLibrary([tmp_path])
    real = Path.iterdir

    def denied(self: Path) -> Any:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "iterdir", denied)
    timer = started(library, clock)
    assert library.programs() == {}
    assert any("cannot read" in str(e.get("log_format")) for e in logged.events)
    monkeypatch.setattr(Path, "iterdir", real)
    clock.advance(5)
    assert set(library.programs()) == {"echo"}
    timer.stopService()


def test_a_library_never_scanned_scans_at_its_first_lookup(tmp_path: Path) -> None:
    make_program(tmp_path, "echo")
    assert set(ProgramLibrary([tmp_path]).programs()) == {"echo"}
