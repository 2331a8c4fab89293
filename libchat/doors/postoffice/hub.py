"""The post-office hub core (CONTRACT section 12): routing, error frames,
the offline queue and the internal addresses of libchat's own runtimes.

Transport-free: a connection is anything with ``client_id``, ``send(text)``
and ``replaced(reason)``, so the core is tested without sockets.
"""
from __future__ import annotations

import json
import os
from collections import OrderedDict, deque
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.logger import Logger
from zope.interface import implementer

from libchat.doors.postoffice.seam import IHub, IHubListener, IHubPeers, IOfflineQueue
from libchat.interfaces import Unavailable

log = Logger()
TYPES = ("msg", "heartbeat", "log")
REQUIRED = ("from", "to", "subject", "content", "type")
DEFAULT_QUEUE_BOUND = 1000


class Conn(Protocol):
    client_id: str
    def send(self, text: str) -> None: ...
    def replaced(self, reason: str) -> None: ...


class Routed(NamedTuple):
    """A client's envelope on its way to one target (kept whole while it
    waits, so it can still be queued if its target goes meanwhile)."""

    sender: str
    target: str
    kind: str
    subject: Any
    raw: str


class Behind:
    """A target with offers of this node in flight (a Deferred queue), and
    the envelopes to it that wait for them: while an offer is in flight, an
    envelope to the same target may only be queued after it (pipelined on
    the same Redis connection); one that would go anywhere else waits, and
    so does every envelope after it."""

    __slots__ = ("offers", "held")

    def __init__(self) -> None:
        self.offers = 0
        self.held: list[Routed] = []


class BadMessage(ValueError):
    """An envelope that does not follow the GO-POSTOFFICE schema."""


def error_frame(code: str, text: str, to: Any = None, subject: Any = None) -> str:
    frame: dict[str, Any] = {"type": "error", "code": code, "error": text}
    if to is not None:
        frame["to"] = to
    if subject is not None:
        frame["subject"] = subject
    return json.dumps(frame, ensure_ascii=False)


def check_envelope(raw: str) -> dict[str, Any]:
    """Parse and validate one envelope; :class:`BadMessage` says why not."""
    try:
        message = json.loads(raw)
    except ValueError:
        raise BadMessage("not JSON") from None
    if not isinstance(message, dict):
        raise BadMessage("an envelope is a JSON object")
    for name in REQUIRED:
        if name not in message:
            raise BadMessage(f"missing {name!r}")
    if message["type"] not in TYPES:
        raise BadMessage("type must be msg, heartbeat or log")
    if not isinstance(message["from"], str) or not isinstance(message["subject"], str):
        raise BadMessage("from and subject are strings")
    to = message["to"]
    targets = [to] if isinstance(to, str) else to
    if not isinstance(targets, list) or not targets or \
            not all(isinstance(t, str) and t for t in targets):
        raise BadMessage("to is a clientID or a non-empty list of them")
    return message


@implementer(IOfflineQueue)
class OfflineQueue:
    """Messages for absent clientIDs, in order, journaled to one JSONL file
    (fsynced per append, so a kill -9 loses nothing acknowledged; rewritten
    atomically when messages leave it)."""

    def __init__(self, path: Path | None, bound: int) -> None:
        self.path = path
        self.bound = bound
        self._by_target: dict[str, deque[dict[str, Any]]] = OrderedDict()
        if path is not None and path.exists():
            for line in path.read_bytes().splitlines():
                try:
                    item = json.loads(line)
                except ValueError:
                    continue        # a torn last line after a crash
                self._by_target.setdefault(item["target"], deque()).append(item)

    def __len__(self) -> int:
        return sum(len(q) for q in self._by_target.values())

    def earliest(self) -> float | None:
        heads = [q[0]["expires"] for q in self._by_target.values() if q]
        return min(heads) if heads else None

    def full(self, target: str) -> bool:
        return len(self._by_target.get(target, ())) >= self.bound

    def put(self, target: str, sender: str, subject: Any, raw: str, expires: float) -> None:
        item = {"target": target, "from": sender, "subject": subject, "raw": raw,
                "expires": expires}
        self._by_target.setdefault(target, deque()).append(item)
        if self.path is not None:
            with open(self.path, "ab") as f:
                f.write(json.dumps(item, ensure_ascii=False).encode() + b"\n")
                f.flush()
                os.fsync(f.fileno())

    def offer(self, target: str, sender: str, subject: Any, raw: str, expires: float) -> bool:
        if self.full(target):
            return False
        self.put(target, sender, subject, raw, expires)
        return True

    def take(self, target: str) -> list[dict[str, Any]]:
        items = list(self._by_target.pop(target, ()))
        if items:
            self._rewrite()
        return items

    def delivered(self, target: str, items: list[dict[str, Any]]) -> None:
        """Nothing to do: :meth:`take` forgot them already."""

    def expire(self, now: float) -> list[dict[str, Any]]:
        gone = []
        for target in list(self._by_target):
            q = self._by_target[target]
            while q and q[0]["expires"] <= now:
                gone.append(q.popleft())
            if not q:
                del self._by_target[target]
        if gone:
            self._rewrite()
        return gone

    def _rewrite(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            for q in self._by_target.values():
                for item in q:
                    f.write(json.dumps(item, ensure_ascii=False).encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


@implementer(IHub)
class Hub:
    """Who is connected, where envelopes go, and the figures for /metrics."""

    def __init__(self, clock: IReactorTime, offline_ttl: float = 300,
                 queue: IOfflineQueue | None = None) -> None:
        """``queue``: the offline queue (default: in memory; ``settings.build``
        gives a file; with ``--redis`` a ``libchat.cluster.offline.RedisOfflineQueue``)."""
        self.clock = clock
        self.offline_ttl = offline_ttl
        self.queue: IOfflineQueue = queue if queue is not None else \
            OfflineQueue(None, DEFAULT_QUEUE_BOUND)
        self.conns: dict[str, Conn] = {}
        # clientIDs whose queue is being taken (a Deferred queue): envelopes
        # routed to them meanwhile wait here, so they arrive after the queued ones
        self._draining: dict[str, list[Routed]] = {}
        # targets with offers of this node in flight, so that no envelope
        # passes a queued one (a forward to the node the target just
        # connected to would)
        self._behind: dict[str, Behind] = {}
        self._again: set[str] = set()  # take their queue again once this take is in
        # the other nodes' hubs (--redis: libchat.cluster.postoffice.plug); None: one node
        self.peers: IHubPeers | None = None
        self.started: dict[str, float] = {}
        self.listeners: dict[str, IHubListener] = {}
        self.stats = {"deliveries": 0, "bounces": 0, "queued_total": 0}
        self.refusals: dict[str, int] = {}
        self._timer: Any = None
        self._schedule()

    # -- IHub -------------------------------------------------------------
    def clients(self) -> list[str]:
        if self.peers is not None:
            return list(self.conns) + [c for c in self.peers.clients() if c not in self.conns]
        return list(self.conns)

    def listen(self, prefix: str, listener: IHubListener) -> None:
        self.listeners[prefix] = listener

    def send(self, message: dict[str, Any]) -> bool:
        conn = self.conns.get(message["to"])
        if conn is None:
            if self.peers is not None:
                return self.peers.send(message, json.dumps(message, ensure_ascii=False))
            return False
        if self.peers is not None:
            self.peers.sent_from(message["from"])
        conn.send(json.dumps(message, ensure_ascii=False))
        self.stats["deliveries"] += 1
        return True

    # -- ops (the --web /metrics page and /healthz) -------------------------
    def collector(self) -> Any:
        from libchat.doors.postoffice.metrics import HubFigures
        return HubFigures(self)

    def health(self) -> dict[str, Any]:
        return {"clients": len(self.conns), "queued": len(self.queue)}

    # -- connections ------------------------------------------------------
    def internal(self, client_id: str) -> bool:
        return any(client_id.startswith(p) for p in self.listeners)

    def refuse(self, reason: str) -> None:
        self.refusals[reason] = self.refusals.get(reason, 0) + 1

    def older(self, client_id: str, start_time: float | None) -> bool:
        """A connect whose startTime predates the live connection's (409)."""
        live = self.started.get(client_id)
        return (client_id in self.conns and start_time is not None
                and live is not None and start_time < live)

    def attach(self, conn: Conn, start_time: float | None) -> None:
        old = self.conns.get(conn.client_id)
        self.conns[conn.client_id] = conn
        self.started[conn.client_id] = start_time if start_time is not None \
            else self.clock.seconds() * 1000
        if old is not None and old is not conn:
            old.replaced("replaced by a newer connection of this clientID")
        for listener in list(self.listeners.values()):
            listener.client_connected(conn.client_id)
        if self.peers is not None:  # registered before the queue is read (same connection)
            self.peers.attached(conn.client_id)
        self.expire()
        self._take(conn)

    def _take(self, conn: Conn) -> None:
        items = self.queue.take(conn.client_id)
        if isinstance(items, defer.Deferred):
            self._draining.setdefault(conn.client_id, [])
            items.addErrback(self._queue_failed, "taking the offline queue", [])
            items.addCallback(self._drained, conn.client_id)
            return
        self._drained(items, conn.client_id)

    def drain(self, client_id: str) -> None:
        """Take a connected client's queue again (another node queued for it
        while it connected here); after the take under way, if any."""
        conn = self.conns.get(client_id)
        if conn is None:
            return
        if client_id in self._draining:
            self._again.add(client_id)
            return
        self._take(conn)

    def _drained(self, items: list[dict[str, Any]], client_id: str) -> None:
        """A take is in: deliver it, then what was routed meanwhile, to the
        client's live connection (it may have been replaced). When the queue
        is to be taken again (another node queued meanwhile, maybe before
        what was routed here), what was routed meanwhile waits for that take."""
        later = self._draining.pop(client_id, [])
        conn = self.conns.get(client_id)
        if conn is None:
            self._reroute(later)  # gone again: the items stay queued (never acknowledged)
            return
        again = client_id in self._again
        for raw in [item["raw"] for item in items] + ([] if again else [e.raw for e in later]):
            conn.send(raw)
            self.stats["deliveries"] += 1
        d: Any = None
        if items:
            d = self.queue.delivered(client_id, items)
            if isinstance(d, defer.Deferred):
                d.addErrback(self._queue_failed, "forgetting delivered envelopes", None)
        if again:  # after the acknowledgement, else a duplicate
            self._again.discard(client_id)
            self._draining[client_id] = later
            if isinstance(d, defer.Deferred):
                d.addBoth(lambda _: self._take_again(client_id))
            else:
                self._take_again(client_id)

    def _take_again(self, client_id: str) -> None:
        conn = self.conns.get(client_id)
        if conn is None:
            self._reroute(self._draining.pop(client_id, []))
            return
        self._take(conn)

    def _reroute(self, waiting: list[Routed]) -> None:
        """Envelopes that waited for a connection now gone: wherever their
        target is now, else queued (from an internal address: dropped, as
        :meth:`IHub.send` never queues)."""
        for e in waiting:
            if self.internal(e.sender):
                log.info("postoffice: {to} went; an envelope from {frm} is dropped "
                         "(internal addresses never queue)", to=e.target, frm=e.sender)
            else:
                self.route_out(e)

    def _queue_failed(self, f: Failure, what: str, instead: Any) -> Any:
        if f.check(Unavailable):
            log.warn("postoffice: {what}: {why}", what=what, why=f.getErrorMessage())
        else:
            log.failure("postoffice: {what} failed", f, what=what)
        return instead

    def detach(self, conn: Conn) -> None:
        if self.conns.get(conn.client_id) is not conn:
            return                  # replaced: the newer one is live
        del self.conns[conn.client_id]
        self.started.pop(conn.client_id, None)
        for listener in list(self.listeners.values()):
            listener.client_gone(conn.client_id)
        if self.peers is not None:
            self.peers.detached(conn.client_id)

    def replaced_elsewhere(self, client_id: str) -> None:
        """A newer connection of the clientID is live on another node: close
        this one; listeners are not told (as for a replacement here)."""
        conn = self.conns.pop(client_id, None)
        self.started.pop(client_id, None)
        self._again.discard(client_id)
        if conn is not None:
            conn.replaced("replaced by a newer connection of this clientID")

    # -- envelopes --------------------------------------------------------
    def receive(self, conn: Conn, raw: str) -> None:
        try:
            message = check_envelope(raw)
        except BadMessage as e:
            conn.send(error_frame("BAD_MESSAGE", str(e)))
            return
        subject = message["subject"]
        if message["from"] != conn.client_id:
            conn.send(error_frame("FORBIDDEN", "from must be your own clientID",
                                  subject=subject))
            return
        to = message["to"]
        for target in [to] if isinstance(to, str) else to:
            self.route(conn, target, message, raw)

    def route(self, sender: Conn, target: str, message: dict[str, Any], raw: str) -> None:
        for prefix, listener in self.listeners.items():
            if target.startswith(prefix):
                if self.peers is not None and self.peers.internal(message, raw, target):
                    return  # it went to the node that sent from that address
                listener.envelope(message, raw)
                return
        self.route_out(Routed(sender.client_id, target, message["type"], message["subject"],
                              raw))

    def route_out(self, e: Routed) -> None:
        """A client's envelope to a client: here, else to the node holding
        the target, else queued; behind this node's offer for the same target
        still in flight, if any (one sender's envelopes stay in order)."""
        behind = self._behind.get(e.target)
        if behind is None:
            if self.deliver_here(e):
                return
            if self.peers is not None and self.peers.forward(e.sender, e.target, e.raw,
                                                             e.kind, e.subject):
                return
        elif (behind.held or e.target in self.conns
              or (self.peers is not None and self.peers.where(e.target) is not None)):
            behind.held.append(e)
            return
        self.enqueue(e)

    def deliver_here(self, e: Routed) -> bool:
        """To the target's connection on this node, if it has one."""
        live = self.conns.get(e.target)
        if live is None:
            return False
        waiting = self._draining.get(e.target)
        if waiting is not None:
            waiting.append(e)  # after the queued ones being taken
            return True
        live.send(e.raw)
        self.stats["deliveries"] += 1
        return True

    def enqueue(self, e: Routed) -> None:
        """Into the offline queue (the target is connected nowhere). A queue
        answering Deferreds holds this node's later envelopes to the target
        until the offer, and the peers' look for the target after it, are done."""
        if e.kind == "heartbeat":
            return                  # heartbeats are never queued (section 12)
        behind = self._behind.get(e.target)
        if behind is not None and behind.held:
            behind.held.append(e)
            return
        queued = self.queue.offer(e.target, e.sender, e.subject, e.raw,
                                  self.clock.seconds() + self.offline_ttl)
        if isinstance(queued, defer.Deferred):
            if behind is None:
                behind = self._behind[e.target] = Behind()
            behind.offers += 1
            queued.addCallbacks(lambda ok: self._offered(ok, e),
                                lambda f: self._not_offered(f, e))
            queued.addErrback(lambda f: log.failure("postoffice: after queueing for {to}",
                                                    f, to=e.target))
            queued.addBoth(lambda _: self._offer_done(e.target, behind))
            return
        self._offered(queued, e)

    def _offer_done(self, target: str, behind: Behind) -> None:
        """An offer for ``target`` is done; when the last one is, route what
        waited behind them, in order (queued again, or wherever it goes now)."""
        behind.offers -= 1
        if behind.offers > 0:
            return
        if self._behind.get(target) is behind:
            del self._behind[target]
        for e in behind.held:
            self.route_out(e)

    def _offered(self, queued: bool, e: Routed) -> Any:
        if not queued:
            self.bounce(e.sender, e.target, e.subject, "offline queue for this target is full")
            return None
        self.stats["queued_total"] += 1
        self._schedule()
        if self.peers is not None:
            return self.peers.queued(e.target)
        return None

    def _not_offered(self, f: Failure, e: Routed) -> None:
        """Not known to be queued (Redis did not answer): the sender hears so."""
        self._queue_failed(f, f"queueing for {e.target}", None)
        self.bounce(e.sender, e.target, e.subject, "offline queue unavailable, try again")

    def bounce(self, sender: str, target: str, subject: Any, why: str) -> None:
        self.stats["bounces"] += 1
        conn = self.conns.get(sender)
        if conn is not None:
            conn.send(error_frame("UNDELIVERABLE", why, to=target, subject=subject))
        elif self.peers is not None:
            self.peers.bounce(sender, error_frame("UNDELIVERABLE", why, to=target,
                                                  subject=subject))

    def expire(self) -> None:
        """Drop queued messages past offline_ttl, telling their senders."""
        gone = self.queue.expire(self.clock.seconds())
        if isinstance(gone, defer.Deferred):
            gone.addErrback(self._queue_failed, "expiring the offline queue", [])
            gone.addCallback(self._expired)
            return
        self._expired(gone)

    def _expired(self, gone: list[dict[str, Any]]) -> None:
        for item in gone:
            self.bounce(item["from"], item["target"], item["subject"],
                        f"{item['target']} did not connect within offline_ttl")

    def _schedule(self) -> None:
        """One timer, at the earliest expiry in the queue (none when empty)."""
        if self._timer is not None and self._timer.active():
            return
        at = self.queue.earliest()
        if at is not None:
            self._timer = self.clock.callLater(max(0.0, at - self.clock.seconds()), self._tick)

    def _tick(self) -> None:
        self._timer = None
        self.expire()
        self._schedule()

    def stop(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
