"""Owner calls held while the router pauses a runtime (``pauseEvents``).

Runtimes without processes (agents, remote programs, operators) report to
the router by calling it; while the router is paused (an upstream is full)
those calls wait here, in order, and run on ``resumeEvents``.
"""

from __future__ import annotations

from collections import deque
from typing import Callable


class HeldCalls:
    def __init__(self) -> None:
        self._paused = False
        self._held: deque[Callable[[], None]] = deque()

    def pauseEvents(self) -> None:
        self._paused = True

    def resumeEvents(self) -> None:
        self._paused = False
        while self._held and not self._paused:
            self._held.popleft()()

    def _report(self, call: Callable[[], None]) -> None:
        """Call the owner now, or on resume while paused (in order)."""
        if self._paused:
            self._held.append(call)
        else:
            call()
