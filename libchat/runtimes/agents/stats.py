"""Per agent program figures (turns, failures by reason, latency, first byte,
in flight), kept as plain numbers here and read by the web ``/metrics`` at
scrape time (libchat.doors.web.metrics), so the runtime needs no metrics
library and a scrape never changes them. Labels are program names and the
reasons of libchat.runtimes.agents.client, never anything a user or a key
could put there."""

from __future__ import annotations

from typing import Callable

import attrs

from libchat.histogram import Histogram

@attrs.define
class ProgramStats:
    runtime: str
    turns: int = 0            # finished turns, answered or not
    answered: int = 0
    retries: int = 0
    in_flight: int = 0
    failures: dict[str, int] = attrs.Factory(dict)   # reason -> count
    latency: Histogram = attrs.Factory(Histogram)
    first_byte: Histogram = attrs.Factory(Histogram)


class Turn:
    """One turn's timer."""

    def __init__(self, stats: ProgramStats, now: Callable[[], float]) -> None:
        self.stats, self.now, self.start = stats, now, now()
        self._first = False
        stats.in_flight += 1

    def first_byte(self) -> None:
        if not self._first:
            self._first = True
            self.stats.first_byte.observe(self.now() - self.start)

    def retried(self) -> None:
        self.stats.retries += 1

    def ended(self, failure: str | None) -> None:
        s = self.stats
        s.in_flight -= 1
        s.turns += 1
        if failure is None:
            s.answered += 1
            s.latency.observe(self.now() - self.start)
        else:
            s.failures[failure] = s.failures.get(failure, 0) + 1


class AgentStats:
    """Every agent program's figures (one table shared by the agent runtimes)."""

    def __init__(self, now: Callable[[], float]) -> None:
        self.now = now
        self.programs: dict[str, ProgramStats] = {}

    def turn(self, program: str, runtime: str = "") -> Turn:
        stats = self.programs.get(program)
        if stats is None:
            stats = self.programs[program] = ProgramStats(runtime)
        return Turn(stats, self.now)
