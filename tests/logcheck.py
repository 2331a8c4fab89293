"""Every test fails if it logged an error it did not expect.

Two ways in, one check (``LogCapture``): plain pytest tests get the autouse
``logged`` fixture (``tests/conftest.py``); trial ``SynchronousTestCase``
classes, which pytest runs natively but which get no fixtures, mix in
``LogCheckMixin`` (before the TestCase base). Trial's own machinery also fails
such a case on a logged Failure; a test expecting one flushes it with
``self.flushLoggedErrors(SomeError)`` (and allows its text here).
"""

from __future__ import annotations

from typing import Any

from twisted.logger import ILogObserver, LogLevel, formatEvent, globalLogPublisher
from zope.interface import implementer


@implementer(ILogObserver)
class LogCapture:
    """A log observer keeping every event, and the texts a test allows.

    An error is a logged Failure, an event at level error or critical, or a
    legacy ``isError`` event. (Level error is named on purpose: a legacy
    observer such as trial's marks those ``isError`` in place, so without it the
    check would depend on which observers happen to be installed.)
    """

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.allowed: list[str] = []

    def __call__(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def errors(self) -> list[dict[str, Any]]:
        found = []
        for e in self.events:
            bad = e.get("log_failure") is not None or e.get("log_level") in (
                LogLevel.error, LogLevel.critical) or e.get("isError")
            if bad and not any(a in str(e.get("log_format", "")) + str(e.get("log_failure", ""))
                               for a in self.allowed):
                found.append(e)
        return found

    def allow(self, text: str) -> None:
        """The test expects an error whose format or failure mentions ``text``."""
        self.allowed.append(text)

    def report(self, errors: list[dict[str, Any]]) -> str:
        return "unexpected logged errors:\n" + "\n".join(
            formatEvent(e) + "\n" + (e["log_failure"].getTraceback() if e.get("log_failure")
                                     else "") for e in errors)


class LogCheckMixin:
    """setUp observes the global log; the last cleanup fails on unexpected errors.

    The check is the first cleanup added, so it runs after every other cleanup
    (servers stopped, processes killed) and sees what they logged too.
    """

    _log_capture: LogCapture

    def setUp(self) -> Any:
        self._log_capture = LogCapture()
        globalLogPublisher.addObserver(self._log_capture)
        self.addCleanup(self._check_logged)  # type: ignore[attr-defined]
        return super().setUp()  # type: ignore[misc]

    @property
    def logged(self) -> list[dict[str, Any]]:
        """Every event logged since setUp."""
        return self._log_capture.events

    def allow_log(self, text: str) -> None:
        """This test expects an error whose format or failure mentions ``text``."""
        self._log_capture.allow(text)

    def _check_logged(self) -> None:
        globalLogPublisher.removeObserver(self._log_capture)
        errors = self._log_capture.errors()
        if errors:
            self.fail(self._log_capture.report(errors))  # type: ignore[attr-defined]
