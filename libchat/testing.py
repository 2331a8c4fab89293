"""Verified in-memory fakes of libchat's seams, for unit tests of the router
and of the front doors. Each is checked against its interface by
``tests/test_fakes.py``."""

from __future__ import annotations

import itertools
from typing import Any

from twisted.internet import defer
from zope.interface import implementer

from libchat.interfaces import (
    DialogInfo,
    IInstance,
    IInstanceOwner,
    IRouter,
    IRouterStats,
    IRuntime,
    IUpstream,
    Receipt,
    TokenInfo,
)
from libchat.protocol import codes
from libchat.storage.store import MemoryStore

__all__ = ["FakeUpstream", "FakeInstance", "FakeRuntime", "MemoryStore", "FakeRouter"]


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


# -- the router (for unit tests of the front doors) ---------------------------------


@implementer(IRouter, IRouterStats)
class FakeRouter:
    """A router that routes nothing, for testing a front door alone.

    It keeps each dialog's transcript as the real one does (seq 1, 2, ...;
    every event derived from its entry, so replays equal what was pushed),
    checks that a dialog keeps its user and channel, and records every call a
    door makes (``received``, ``drained``). The test plays the programs' part
    with :meth:`push`; ``refusals`` holds 2004 bodies the next receives answer
    with (a ``BUSY``, say); ``tokens`` is what :meth:`token_info` knows.
    """

    def __init__(self) -> None:
        self.upstreams: list[IUpstream] = []
        self.received: list[tuple[IUpstream, dict[str, Any]]] = []
        self.drained: list[IUpstream] = []
        self.refusals: list[dict[str, Any]] = []
        self.tokens: dict[str, TokenInfo] = {}
        self.pending: list[tuple[str, dict[str, Any]]] = []  # (channel, event)
        self.observers: list[Any] = []
        self.instance_observers: list[Any] = []
        self.live: int = 0  # what live_dialogs() says
        self.live_instances: list[tuple[IInstance, str, str]] = []
        self._dialogs: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)

    # -- upstreams ---------------------------------------------------------------------

    def attach(self, upstream: IUpstream) -> None:
        self.upstreams.append(upstream)
        self.drain(upstream)

    def detach(self, upstream: IUpstream) -> None:
        if upstream in self.upstreams:
            self.upstreams.remove(upstream)

    def drain(self, upstream: IUpstream) -> None:
        self.drained.append(upstream)
        while upstream.alive():
            kept = next((p for p in self.pending if p[0] == upstream.channel), None)
            if kept is None:
                return
            self.pending.remove(kept)
            upstream.deliver(kept[1])

    # -- what doors call ---------------------------------------------------------------

    def receive(self, upstream: IUpstream, event: dict[str, Any]) -> Receipt:
        for observe in self.observers:
            observe("in", event)
        self.received.append((upstream, event))
        if self.refusals:
            return Receipt(error=self.refusals.pop(0))
        dialog_id, user_id = event["dialog_id"], event["user_id"]
        d = self._dialogs.get(dialog_id)
        if d is not None and (d["user_id"] != user_id or d["channel"] != upstream.channel):
            return Receipt(error=codes.error(codes.BAD_REQUEST, "not this dialog's user or door",
                                             dialog_id=dialog_id,
                                             message_id=event.get("message_id")))
        if event["event_type"] == codes.CLIENT_CLOSE:
            if d is None:
                upstream.deliver({"event_type": codes.ENDED, "dialog_id": dialog_id,
                                  "user_id": user_id, "reason": codes.CLIENT_CLOSED})
                return Receipt()
            d["upstream"] = upstream
            ended = self.push(dialog_id, codes.ENDED, reason=codes.CLIENT_CLOSED)
            return Receipt(seq=ended["seq"])
        if d is None:
            d = self._new(dialog_id, user_id, upstream.channel, None)
        d["upstream"] = upstream
        entry = self._append(d, {"event_type": codes.USER_MESSAGE,
                                 "message_id": event["message_id"],
                                 "messages": event["messages"]})
        return Receipt(seq=entry["seq"])

    def open(self, dialog_id: str, user_id: str, channel: str,
             intent: str | None = None) -> DialogInfo:
        if dialog_id in self._dialogs:
            raise ValueError(f"dialog {dialog_id} exists")
        self._new(dialog_id, user_id, channel, intent)
        info = self.info(dialog_id)
        assert info is not None
        return info

    def close(self, upstream: IUpstream, dialog_id: str, user_id: str) -> Receipt:
        return self.receive(upstream, {"event_type": codes.CLIENT_CLOSE,
                                       "dialog_id": dialog_id, "user_id": user_id})

    def info(self, dialog_id: str) -> DialogInfo | None:
        d = self._dialogs.get(dialog_id)
        if d is None:
            return None
        return DialogInfo(dialog_id=dialog_id, user_id=d["user_id"], channel=d["channel"],
                          program=d["program"], intent=d["intent"], state=d["state"],
                          seq=len(d["entries"]))

    def replay(self, dialog_id: str, after: int = 0,
               limit: int | None = None) -> list[dict[str, Any]]:
        d = self._dialogs.get(dialog_id)
        if d is None:
            return []
        found = [e for e in d["entries"] if e["seq"] > after]
        if limit is not None:
            found = found[-limit:] if limit > 0 else []
        return [self._event(d, e) for e in found]

    def entries(self, dialog_id: str, after: int = 0,
                limit: int | None = None) -> list[dict[str, Any]]:
        d = self._dialogs.get(dialog_id)
        found = [dict(e) for e in (d["entries"] if d else []) if e["seq"] > after]
        return found[:limit] if limit is not None else found

    def token_info(self, token: str) -> TokenInfo | None:
        return self.tokens.get(token)

    # -- IRouterStats ------------------------------------------------------------------

    def live_dialogs(self) -> int:
        return self.live

    def instances(self) -> list[tuple[IInstance, str, str]]:
        return list(self.live_instances)

    def pending_count(self, channel: str) -> int:
        return sum(1 for c, _ in self.pending if c == channel)

    # -- the programs' part --------------------------------------------------------------

    def push(self, dialog_id: str, event_type: int = codes.REPLY, **fields: Any) -> dict[str, Any]:
        """Record an entry in the dialog (a reply by default) and deliver its
        event like the real router: to the dialog's last upstream, else the
        newest live one of its channel, else keep it. Returns the event."""
        d = self._dialogs[dialog_id]
        fields.setdefault("message_id", f"fake-{next(self._ids)}")
        fields.setdefault("messages", {"content": "", "attachments": []})
        if event_type == codes.REPLY:
            fields.setdefault("program", "fake")
        event = self._event(d, self._append(d, {"event_type": event_type, **fields}))
        for observe in self.observers:
            observe("out", event)
        up = d["upstream"]
        if up is None or not up.alive():
            up = next((u for u in reversed(self.upstreams)
                       if u.channel == d["channel"] and u.alive()), None)
            d["upstream"] = up
        if up is None:
            self.pending.append((d["channel"], event))
        else:
            up.deliver(event)
        return event

    def reply(self, dialog_id: str, content: str) -> dict[str, Any]:
        return self.push(dialog_id, messages={"content": content, "attachments": []})

    def _new(self, dialog_id: str, user_id: str, channel: str,
             intent: str | None) -> dict[str, Any]:
        d = self._dialogs[dialog_id] = {
            "dialog_id": dialog_id, "user_id": user_id, "channel": channel, "intent": intent, "program": None,
            "state": "open", "entries": [], "upstream": None}
        return d

    def _append(self, d: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
        entry = {"seq": len(d["entries"]) + 1, **entry, "at": 0.0}
        d["entries"].append(entry)
        return entry

    def _event(self, d: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
        event = {"event_type": entry["event_type"], "dialog_id": d["dialog_id"],
                 "user_id": d["user_id"]}
        event.update((k, v) for k, v in entry.items() if k not in ("event_type", "at"))
        return event
