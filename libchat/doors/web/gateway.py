"""The web front doors as one upstream of channel ``web``.

The router sees a single, always-alive :class:`WebGateway` for every dialog
started over a WebSocket or the REST API, so reply routing works exactly as for
frame connections. The gateway fans each event out to every open WebSocket of
the dialog's user and wakes the REST long-polls of the dialog. Nothing needs
buffering here: the dialog's transcript *is* the buffer, and a client that was
away asks for what it missed (WebSocket 1003, REST ``?after=``).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Any, Callable, Protocol

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from libchat.later import then
from libchat.protocol.events import valid_intent
from libchat.interfaces import DialogInfo, IRouter, IUpstream, Receipt

CHANNEL = "web"
MAX_REPLAY = 500  # docs/web.md: a 1003 replays at most the last 500 entries


class Pusher(Protocol):
    """Delivers an event to every open connection of one user (ws.ConnectionRegistry)."""

    def push(self, user_id: str, event: dict[str, Any]) -> None: ...


class NotFound(Exception):
    """No web dialog of that id belongs to the caller (REST 404)."""


@implementer(IUpstream)
class WebGateway:
    channel = CHANNEL
    cluster_key = CHANNEL  # the same on every node (libchat.cluster.router)

    def __init__(self, router: IRouter, clock: IReactorTime) -> None:
        self.router = router
        self.clock = clock
        self.pushers: list[Pusher] = []
        # a cluster node publishes every event to all nodes, each of which
        # calls deliver_local (docs/scaleout.md); one node delivers at once
        self.fanout: Callable[[dict[str, Any]], object] | None = None
        self._waiters: dict[str, list[defer.Deferred[None]]] = defaultdict(list)

    # -- IUpstream -----------------------------------------------------------

    def alive(self) -> bool:
        # the transcript keeps every event; clients catch up from it
        return True

    def deliver(self, event: dict[str, Any]) -> None:
        if self.fanout is not None:
            self.fanout(event)
        else:
            self.deliver_local(event)

    def deliver_local(self, event: dict[str, Any]) -> None:
        """Push to this node's sockets of the user and wake its long-polls."""
        user_id = event.get("user_id")
        if isinstance(user_id, str):
            for pusher in self.pushers:
                pusher.push(user_id, event)
        dialog_id = event.get("dialog_id")
        if isinstance(dialog_id, str):
            self._wake(dialog_id)

    # -- what the web doors ask ------------------------------------------------

    # each of these answers at once on one node, and with a Deferred on a
    # cluster node (libchat.later.then)

    def receive(self, event: dict[str, Any]) -> Receipt | Deferred[Receipt]:
        """A validated 1001/1002 whose ``user_id`` is the caller's identity."""
        def woken(receipt: Receipt) -> Receipt:
            self._wake(event["dialog_id"])  # a long-poll also wants the user's 1001
            return receipt
        return then(self.router.receive(self, event), woken)

    def info(self, user_id: str, dialog_id: str) -> Any:
        """The caller's own web dialog, else :class:`NotFound` (whoever owns it)."""
        def mine(info: DialogInfo | None) -> DialogInfo:
            if info is None or info.user_id != user_id or info.channel != CHANNEL:
                raise NotFound(dialog_id)
            return info
        return then(self.router.info(dialog_id), mine)

    def open_session(self, user_id: str, intent: str | None = None) -> Any:
        """A new empty web dialog; ``intent`` pins its program."""
        if intent is not None and not valid_intent(intent):  # not a str, too
            raise ValueError("intent must match ^[a-z0-9][a-z0-9_-]{0,63}$")
        session_id = "sess-" + uuid.uuid4().hex
        return then(self.router.open(session_id, user_id, CHANNEL, intent),
                    lambda _: session_id)

    def entries(self, user_id: str, dialog_id: str, after: int = 0,
                limit: int = MAX_REPLAY) -> Any:
        """Transcript entries with ``seq > after``, oldest first, at most ``limit``
        (the first ones: a client pages on with the last seq it got)."""
        return then(self.info(user_id, dialog_id),
                    lambda _: self.router.entries(dialog_id, after, limit))

    def replay(self, user_id: str, dialog_id: str, after: int = 0) -> Any:
        """The events of entries with ``seq > after`` exactly as first sent; at
        most the last :data:`MAX_REPLAY` of them."""
        return then(self.info(user_id, dialog_id),
                    lambda _: self.router.replay(dialog_id, after, MAX_REPLAY))

    def wait(self, dialog_id: str, timeout: float) -> defer.Deferred[None]:
        """Fires with None when the dialog gets an entry, or after ``timeout``.
        Cancelling it (the client went away) forgets it."""
        d: defer.Deferred[None] = defer.Deferred(lambda d: self._forget(dialog_id, d))
        self._waiters[dialog_id].append(d)
        d.addTimeout(timeout, self.clock, onTimeoutCancel=lambda result, timeout: None)
        return d

    def waiting(self) -> int:
        """Long-polls waiting now (a queue depth metric)."""
        return sum(len(ws) for ws in self._waiters.values())

    def _forget(self, dialog_id: str, d: defer.Deferred[None]) -> None:
        waiters = self._waiters.get(dialog_id)
        if waiters and d in waiters:
            waiters.remove(d)
            if not waiters:
                del self._waiters[dialog_id]

    def _wake(self, dialog_id: str) -> None:
        for d in self._waiters.pop(dialog_id, []):
            d.callback(None)

