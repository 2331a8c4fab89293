"""Verified in-memory fakes of libchat's seams, for unit tests of the router
and of the front doors. Each is checked against its interface by
``tests/test_fakes.py``."""

from __future__ import annotations

import itertools
from typing import Any

from twisted.internet import defer
from zope.interface import implementer

from libchat.interfaces import IInstance, IInstanceOwner, IRuntime, IUpstream
from libchat.storage.store import MemoryStore

__all__ = ["FakeUpstream", "FakeInstance", "FakeRuntime", "MemoryStore"]


@implementer(IUpstream)
class FakeUpstream:
    """Records what it is given; ``connected`` decides ``alive()``."""

    def __init__(self, channel: str = "frame") -> None:
        self.channel = channel
        self.connected = True
        self.events: list[dict[str, Any]] = []

    def alive(self) -> bool:
        return self.connected

    def deliver(self, event: dict[str, Any]) -> None:
        assert self.connected, "delivered to a dead upstream"
        self.events.append(event)

    def types(self) -> list[int]:
        return [e["event_type"] for e in self.events]


@implementer(IInstance)
class FakeInstance:
    """An instance whose program is the test: ``sent`` holds what the router
    sent; ``say()``/``exit()`` play the program's part."""

    def __init__(self, runtime: "FakeRuntime", program: str, dialog_id: str, user_id: str,
                 owner: IInstanceOwner, n: int) -> None:
        self.runtime = runtime
        self.instance_id = f"f{n}"
        self.program = program
        self.dialog_id = dialog_id
        self.user_id = user_id
        self.owner = owner
        self.token = f"token-{n}"
        self.pid = 10_000 + n
        self.sent: list[dict[str, Any]] = []
        self.connected = False
        self.stopped_with: float | None = None
        self.gone = False
        self._waiters: list[defer.Deferred[None]] = []

    def send(self, event: dict[str, Any]) -> None:
        if self.gone:  # IInstance: dropped, never raises; kept for tests to check
            self.runtime.late.append((self, event))
            return
        self.sent.append(event)

    def stop(self, drain: float = 0.0) -> "defer.Deferred[None]":
        d: defer.Deferred[None] = defer.Deferred()
        if self.gone:
            d.callback(None)
            return d
        if self.stopped_with is None:
            self.stopped_with = drain
        self._waiters.append(d)
        if self.runtime.auto_exit:
            self.exit()
        return d

    # the program's side
    def connect(self) -> None:
        self.connected = True
        self.owner.instanceConnected(self)

    def say(self, event: dict[str, Any]) -> None:
        if self.runtime.paused:
            self.runtime.held.append((self, event))
            return
        self.owner.instanceEvent(self, event)

    def exit(self, detail: str = "exit code 0") -> None:
        if self.gone:
            return
        self.gone = True
        self.runtime.live.remove(self)
        self.owner.instanceGone(self, self.connected, detail)
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)


@implementer(IRuntime)
class FakeRuntime:
    """Starts :class:`FakeInstance` objects. With ``auto_exit`` an instance
    exits as soon as it is stopped (a well-behaved program). ``paused`` is the
    flow-control state; ``flow`` records each pauseEvents/resumeEvents call
    ("pause", "resume"), and while paused a ``say()`` is held back and
    delivered at resume, in order (a runtime that buffers, bounded by the test)."""

    def __init__(self, auto_exit: bool = True) -> None:
        self.auto_exit = auto_exit
        self.paused = False
        self.flow: list[str] = []
        self.held: list[tuple[FakeInstance, dict[str, Any]]] = []
        self.late: list[tuple[FakeInstance, dict[str, Any]]] = []  # sent to gone instances
        self.started: list[FakeInstance] = []
        self.live: list[FakeInstance] = []
        self._n = itertools.count(1)

    def start(self, program: str, dialog_id: str, user_id: str,
              owner: IInstanceOwner) -> FakeInstance:
        inst = FakeInstance(self, program, dialog_id, user_id, owner, next(self._n))
        self.started.append(inst)
        self.live.append(inst)
        return inst

    def counts(self, program: str) -> bool:
        return True

    def pauseEvents(self) -> None:
        self.flow.append("pause")
        self.paused = True

    def resumeEvents(self) -> None:
        self.flow.append("resume")
        self.paused = False
        held, self.held = self.held, []
        for instance, event in held:
            if not instance.gone:
                instance.owner.instanceEvent(instance, event)

    def stopAll(self) -> "defer.Deferred[Any]":
        return defer.DeferredList([i.stop() for i in list(self.live)])
