"""The post-office offline queue in Redis (CONTRACT §12, §14).

One list per absent clientID (``Keys.postoffice_queue``), oldest first, each
item a JSON object with a unique ``id`` and its expiry; a sorted set
(``Keys.postoffice_due``) of the clientIDs with waiting items, scored by the
expiry of the oldest, which the expiry sweep walks. Writes that must be
atomic are Lua (``lua/po_*.lua``): the bound is checked and the item pushed in
one step, so it holds cluster-wide; an expired item is popped by exactly one
node's sweep, so its sender is told once.

Why take-then-acknowledge rather than a destructive pop: a pop whose answer
is lost (a timeout) would lose the envelopes. :meth:`take` reads them,
the hub delivers them, and :meth:`delivered` drops them from the head by
``id``; if that acknowledgement is lost the client gets them again on its
next connect (at least once, never lost).
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from libchat.cluster.connect import RedisConnections
from libchat.cluster.keys import Keys
from libchat.cluster.scripts import Scripts
from libchat.doors.postoffice.hub import DEFAULT_QUEUE_BOUND
from libchat.doors.postoffice.seam import IOfflineQueue

log = Logger()

DOOR_SCRIPTS = ("po_put", "po_ack", "po_expire", "po_at", "po_off", "desk_adopt",
                "desk_lease", "desk_drop")
SWEEP = 1.0  # seconds between expiry sweeps (each node)
SAFETY_MS = 3_600_000  # a list outlives its newest expiry by this long, then Redis drops it
SWEEP_TARGETS = 500  # clientIDs one sweep call looks at


def DoorScripts(conns: RedisConnections) -> Scripts:
    """The door stores' Lua scripts, called like the cluster's (NOSCRIPT -> load, retry)."""
    return Scripts(conns, DOOR_SCRIPTS)


def _item(raw: Any) -> dict[str, Any]:
    item: dict[str, Any] = orjson.loads(raw)
    return item


@implementer(IOfflineQueue)
class RedisOfflineQueue:
    """:class:`IOfflineQueue` on Redis: every answer is a Deferred;
    ``RedisUnavailable`` means "not known to be done"."""

    def __init__(self, conns: RedisConnections, keys: Keys, bound: int = DEFAULT_QUEUE_BOUND,
                 clock: Any = None, sweep: float = SWEEP,
                 scripts: Scripts | None = None) -> None:
        """``clock`` (the reactor) tells the hub when to sweep next: every
        ``sweep`` seconds, since other nodes queue too."""
        self.conns = conns
        self.keys = keys
        self.bound = bound
        self.clock = clock
        self.sweep = sweep
        self.scripts = scripts if scripts is not None else DoorScripts(conns)
        self.count = 0  # as of the last answer (for /metrics)

    def __len__(self) -> int:
        return self.count

    def earliest(self) -> float | None:
        return None if self.clock is None else self.clock.seconds() + self.sweep

    def _keys(self, target: str) -> list[str]:
        return [self.keys.postoffice_queue(target), self.keys.postoffice_due,
                self.keys.postoffice_count]

    def offer(self, target: str, sender: str, subject: Any, raw: str,
              expires: float) -> defer.Deferred[bool]:
        expires_ms = int(expires * 1000)
        item = orjson.dumps({"id": uuid.uuid4().hex, "target": target, "from": sender,
                             "subject": subject, "raw": raw, "expires": expires,
                             "expires_ms": expires_ms})
        d = self.scripts.call("po_put", self._keys(target),
                              [self.bound, item, expires_ms, target, SAFETY_MS])

        def queued(won: Any) -> bool:
            if won:
                self.count += 1
            return bool(won)
        return d.addCallback(queued)

    def take(self, target: str) -> defer.Deferred[list[dict[str, Any]]]:
        d = self.conns.call("LRANGE", self.keys.postoffice_queue(target), 0, -1)
        return d.addCallback(lambda r: [_item(x) for x in r or []])

    def delivered(self, target: str, items: list[dict[str, Any]]) -> defer.Deferred[int]:
        d = self.scripts.call("po_ack", self._keys(target), [target, *(i["id"] for i in items)])

        def dropped(n: Any) -> int:
            self.count = max(0, self.count - int(n))
            return int(n)
        return d.addCallback(dropped)

    def expire(self, now: float) -> defer.Deferred[list[dict[str, Any]]]:
        d = self.scripts.call("po_expire", [self.keys.postoffice_due, self.keys.postoffice_count],
                              [int(now * 1000), self.keys.postoffice_queue(""), SWEEP_TARGETS])
        d.addCallback(lambda r: [_item(x) for x in r or []])

        def counted(gone: list[dict[str, Any]]) -> Any:
            c = self.conns.call("GET", self.keys.postoffice_count)
            c.addCallback(lambda n: setattr(self, "count", int(n or 0)))
            c.addErrback(lambda f: None)  # only the gauge; the next sweep tries again
            return gone
        return d.addCallback(counted)


__all__ = ["DoorScripts", "RedisOfflineQueue"]
