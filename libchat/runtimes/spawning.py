"""Bounded spawning, so that a storm of new dialogs never stalls routing.

Measured (bench/RESULTS.md): with 100 Node programs started at once on two
cores, each ``spawnProcess`` blocks the reactor ~45 ms instead of ~1.6 ms,
because posix_spawn waits for its child's ``exec`` while the CPUs are busy
booting the other 99 Node processes; the reactor is then stuck for seconds.
The cure is to let only a few instances boot at a time and to spawn at most
one per reactor turn, so the reactor routes messages between spawns. The
total time to start them all barely changes: booting Node is CPU-bound, and
two cores boot two at a time whatever the queue does.

Since issue 14 the spawn itself happens in a launcher process
(:mod:`libchat.runtimes.node.launcher`), so a spawn no longer blocks the
reactor; the gate still bounds how many Nodes boot at once (CPU), and an
instance's socket is made only when its slot is granted.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime


class SpawnGate:
    """Runs spawn functions with at most ``limit`` instances booting at once.

    An instance holds its slot from its spawn until :meth:`release` (it
    connected, exited, or was stopped) or for ``hold`` seconds at most, so a
    program that never connects cannot block every other start. Requests
    marked ``urgent`` (a dialog is waiting) go before pre-starts (the warm
    pool). ``limit`` 0 means unbounded: every spawn happens at once, as
    Twisted alone would do it.
    """

    def __init__(self, clock: IReactorTime, limit: int, hold: float = 1.0) -> None:
        self.clock = clock
        self.limit = limit
        self.hold = hold
        self._booting: dict[Hashable, IDelayedCall] = {}
        self._urgent: deque[tuple[Hashable, Callable[[], Any]]] = deque()
        self._later: deque[tuple[Hashable, Callable[[], Any]]] = deque()
        self._turn: IDelayedCall | None = None

    def booting(self) -> int:
        return len(self._booting)

    def queued(self) -> int:
        return len(self._urgent) + len(self._later)

    def request(self, key: Hashable, spawn: Callable[[], Any], urgent: bool = True) -> None:
        """Call ``spawn()`` now if a slot is free and nobody waits, else later."""
        if self.limit <= 0:
            spawn()
            return
        if len(self._booting) < self.limit and not self.queued():
            self._start(key, spawn)
            return
        (self._urgent if urgent else self._later).append((key, spawn))
        self._kick()

    def release(self, key: Hashable) -> None:
        """``key`` booted, died or was cancelled: free its slot or its place."""
        timer = self._booting.pop(key, None)
        if timer is not None and timer.active():
            timer.cancel()
        for q in (self._urgent, self._later):
            for item in q:
                if item[0] == key:
                    q.remove(item)
                    break
        self._kick()

    def close(self) -> None:
        """Forget everything queued and cancel every timer (server stopping)."""
        self._urgent.clear()
        self._later.clear()
        for timer in self._booting.values():
            if timer.active():
                timer.cancel()
        self._booting.clear()
        if self._turn is not None and self._turn.active():
            self._turn.cancel()
        self._turn = None

    def _start(self, key: Hashable, spawn: Callable[[], Any]) -> None:
        self._booting[key] = self.clock.callLater(self.hold, self._expired, key)
        spawn()

    def _expired(self, key: Hashable) -> None:
        self._booting.pop(key, None)
        self._kick()

    def _kick(self) -> None:
        if (self._turn is None and self.queued() and len(self._booting) < self.limit):
            self._turn = self.clock.callLater(0, self._next)

    def _next(self) -> None:
        """One spawn per reactor turn: routing runs between two spawns."""
        self._turn = None
        if len(self._booting) < self.limit and self.queued():
            self._start(*(self._urgent or self._later).popleft())
        self._kick()
