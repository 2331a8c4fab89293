"""A reactor stall probe for the benchmark (``LIBCHAT_LAG_PROBE=<file>``).

A timer asks to run every ``interval`` seconds; how late it actually runs is
how long the reactor was busy with something else (a blocking
``spawnProcess``, a long callback) beyond that moment. Every lateness above
``threshold`` is appended to the file as ``<CLOCK_MONOTONIC seconds> <ms>
<cpu ms>`` (the load generator reads the same clock, so a stall can be placed
inside or outside a storm). ``cpu ms`` is the CPU time the reactor thread
used over the same interval: a stall with as much CPU is the reactor's own
work (a blocking call, a long callback); one without is the thread waiting
for a CPU or blocked in the kernel (other processes on a busy machine, or a
``posix_spawn`` waiting for its child's exec). It costs ~1,000 wakeups a second, so it is off unless the
environment variable names a file, and only the benchmark's storm servers
set it. Granularity: a stall shorter than ``interval`` may go unseen; a
reported lateness is a lower bound of the stall it hit.
"""

from __future__ import annotations

import os
import time
from typing import IO, Any

from twisted.application import service
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

ENV = "LIBCHAT_LAG_PROBE"


class LagProbe(service.Service):
    log = Logger()

    def __init__(self, reactor: Any, path: str, interval: float = 0.001,
                 threshold: float = 0.001, monotonic: Any = time.monotonic) -> None:
        self.reactor = reactor
        self.path = path
        self.interval = interval
        self.threshold = threshold
        # the reactor's clock may be wall time: lateness is measured on the
        # monotonic clock the load generator also reads
        self.monotonic = monotonic
        self._due = 0.0
        self._cpu = 0.0
        self._call: IDelayedCall | None = None
        self._out: IO[str] | None = None
        self._lines: list[str] = []
        self._flushed = 0.0

    def startService(self) -> None:
        super().startService()
        self._out = open(self.path, "a", encoding="ascii")
        self.log.info("reactor lag probe writing stalls over {ms} ms to {path}",
                      ms=self.threshold * 1000, path=self.path)
        self._arm()

    def _arm(self) -> None:
        self._due = self.monotonic() + self.interval
        self._cpu = time.thread_time()
        self._call = self.reactor.callLater(self.interval, self._tick)

    def _tick(self) -> None:
        now = self.monotonic()
        late = now - self._due
        if late > self.threshold:
            cpu = time.thread_time() - self._cpu
            self._lines.append(f"{self._due:.6f} {late * 1000:.3f} {cpu * 1000:.3f}\n")
        if self._lines and now - self._flushed > 0.5:
            self._flush(now)
        self._arm()

    def _flush(self, now: float) -> None:
        if self._out is not None:
            self._out.write("".join(self._lines))
            self._out.flush()
        self._lines = []
        self._flushed = now

    def stopService(self) -> None:
        super().stopService()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self._flush(self.monotonic())
        if self._out is not None:
            self._out.close()
            self._out = None


def from_environment(reactor: Any) -> LagProbe | None:
    """The probe when ``LIBCHAT_LAG_PROBE`` names a file, else None."""
    path = os.environ.get(ENV)
    return LagProbe(reactor, path) if path else None
