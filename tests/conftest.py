"""Shared fixtures. Every test fails if it logged an error it did not expect."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
from twisted.logger import globalLogPublisher, LogLevel

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "programs"
FIXTURES = ROOT / "tests" / "programs"


class LogCapture:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.allowed: list[str] = []

    def __call__(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def errors(self) -> list[dict[str, Any]]:
        found = []
        for e in self.events:
            bad = e.get("log_failure") is not None or e.get("log_level") in (
                LogLevel.critical,) or e.get("isError")
            if bad and not any(a in str(e.get("log_format", "")) + str(e.get("log_failure", ""))
                               for a in self.allowed):
                found.append(e)
        return found

    def allow(self, text: str) -> None:
        """This test expects an error whose format or failure mentions ``text``."""
        self.allowed.append(text)

    def matching(self, **fields: Any) -> list[dict[str, Any]]:
        return [e for e in self.events if all(e.get(k) == v for k, v in fields.items())]


@pytest.fixture(autouse=True)
def logged() -> Iterator[LogCapture]:
    capture = LogCapture()
    globalLogPublisher.addObserver(capture)
    try:
        yield capture
    finally:
        globalLogPublisher.removeObserver(capture)
    errors = capture.errors()
    if errors:
        from twisted.logger import formatEvent
        pytest.fail("unexpected logged errors:\n" + "\n".join(
            formatEvent(e) + "\n" + (e["log_failure"].getTraceback() if e.get("log_failure")
                                     else "") for e in errors))
