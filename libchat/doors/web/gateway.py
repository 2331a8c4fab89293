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
from typing import Any, Protocol

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from libchat.protocol import codes
from libchat.protocol.events import valid_intent
from libchat.interfaces import IUpstream
from libchat.core.router import Dialog, Router, event_from_entry

CHANNEL = "web"
MAX_REPLAY = 500  # CONTRACT section 8: a 1003 replays at most the last 500 entries


class Pusher(Protocol):
    """Delivers an event to every open connection of one user (ws.ConnectionRegistry)."""

    def push(self, user_id: str, event: dict[str, Any]) -> None: ...


class NotFound(Exception):
    """No web dialog of that id belongs to the caller (REST 404)."""


@implementer(IUpstream)
class WebGateway:
    channel = CHANNEL

    def __init__(self, router: Router, clock: IReactorTime) -> None:
        self.router = router
        self.clock = clock
        self.pushers: list[Pusher] = []
        self._waiters: dict[str, list[defer.Deferred[None]]] = defaultdict(list)

    # -- IUpstream -----------------------------------------------------------

    def alive(self) -> bool:
        # the transcript keeps every event; clients catch up from it
        return True

    def deliver(self, event: dict[str, Any]) -> None:
        user_id = event.get("user_id")
        if isinstance(user_id, str):
            for pusher in self.pushers:
                pusher.push(user_id, event)
        dialog_id = event.get("dialog_id")
        if isinstance(dialog_id, str):
            self._wake(dialog_id)

    # -- what the web doors ask ------------------------------------------------

    def receive(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """A validated 1001/1002 whose ``user_id`` is the caller's identity.
        Returns a 2004 for the caller, or None."""
        answer = self.router.receive(self, event)
        self._wake(event["dialog_id"])  # a long-poll also wants the user's 1001
        return answer

    def dialog(self, user_id: str, dialog_id: str) -> Dialog:
        """The caller's own web dialog, else :class:`NotFound` (whoever owns it)."""
        dialog = self.router.dialog(dialog_id)
        if (dialog is None or dialog.record.user_id != user_id
                or dialog.record.channel != CHANNEL):
            raise NotFound(dialog_id)
        return dialog

    def open_session(self, user_id: str, intent: str | None = None) -> str:
        """A new empty web dialog; ``intent`` pins its program."""
        if intent is not None and not valid_intent(intent):  # not a str, too
            raise ValueError("intent must match ^[a-z0-9][a-z0-9_-]{0,63}$")
        session_id = "sess-" + uuid.uuid4().hex
        self.router.open_dialog(session_id, user_id, CHANNEL, intent)
        return session_id

    def entries(self, user_id: str, dialog_id: str, after: int = 0,
                limit: int = MAX_REPLAY) -> list[dict[str, Any]]:
        """Transcript entries with ``seq > after``, oldest first, at most ``limit``
        (the first ones: a client pages on with the last seq it got)."""
        messages = self.dialog(user_id, dialog_id).record.messages
        return [dict(e) for e in _after(messages, after)[:limit]]

    def replay(self, user_id: str, dialog_id: str, after: int = 0) -> list[dict[str, Any]]:
        """The events of entries with ``seq > after`` exactly as first sent; at
        most the last :data:`MAX_REPLAY` of them."""
        record = self.dialog(user_id, dialog_id).record
        return [event_from_entry(record, e) for e in _after(record.messages, after)[-MAX_REPLAY:]]

    def find_seq(self, dialog_id: str, message_id: str) -> int | None:
        """The seq of the user's 1001 with this message id (REST tells it back)."""
        dialog = self.router.dialog(dialog_id)
        for entry in reversed(dialog.record.messages if dialog else []):
            if entry["event_type"] == codes.USER_MESSAGE and entry["message_id"] == message_id:
                return int(entry["seq"])
        return None

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


def _after(messages: list[dict[str, Any]], after: int) -> list[dict[str, Any]]:
    # seqs are 1, 2, 3... in order, so this is usually a slice; scan to be safe
    # with transcripts that were trimmed or loaded from older files
    if after <= 0:
        return messages
    start = len(messages)
    while start > 0 and int(messages[start - 1].get("seq", 0)) > after:
        start -= 1
    return messages[start:]
