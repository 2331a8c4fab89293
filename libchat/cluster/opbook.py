"""The operator desk's tickets in Redis (CONTRACT §13, §14): a
:class:`~libchat.runtimes.operators.book.IOperatorBook` for several nodes.

One hash per node (``Keys.desk``): field dialog id, value the ticket as JSON.
Per node, not one for the cluster, because a desk resumes and then drops
every ticket it loaded that the router did not resume: with one shared hash a
restarting node would drop the others' tickets. A survivor takes a dead
node's tickets with :meth:`RedisOperatorBook.adopt` (atomic: one survivor
gets each ticket).

The book is read once, before the desk is built (:meth:`open`, since
``load()`` is synchronous), and kept in memory; writes go behind, like
:class:`~libchat.runtimes.operators.book.JournalBook`'s (the desk calls
``put``/``drop`` synchronously): a write Redis did not acknowledge is
remembered and written again by :meth:`compact` (every minute) and
:meth:`settle` (at stop), so an outage costs the newest changes only if the
node also dies before Redis is back — a fresh place in the queue, never the
dialog (its transcript is in the dialog store).
"""

from __future__ import annotations

from itertools import count
from typing import Any

import orjson
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from libchat.cluster.connect import RedisConnections
from libchat.cluster.interfaces import RedisUnavailable
from libchat.cluster.keys import Keys
from libchat.cluster.offline import DoorScripts
from libchat.cluster.scripts import Scripts
from libchat.runtimes.operators.book import IOperatorBook, MemoryBook

log = Logger()


def _tickets(values: Any) -> dict[str, dict[str, Any]]:
    out = {}
    for raw in values or []:
        ticket = orjson.loads(raw)
        if isinstance(ticket, dict) and isinstance(ticket.get("dialog_id"), str):
            out[ticket["dialog_id"]] = ticket
    return out


@implementer(IOperatorBook)
class RedisOperatorBook(MemoryBook):
    """Tickets of one node's desk, in memory and (behind) in Redis."""

    def __init__(self, conns: RedisConnections, keys: Keys, node_id: str,
                 scripts: Scripts | None = None) -> None:
        """Empty until :meth:`fetch` (or use :meth:`open`)."""
        super().__init__()
        self.conns = conns
        self.keys = keys
        self.node_id = node_id
        self.scripts = scripts if scripts is not None else DoorScripts(conns)
        self.key = keys.desk(node_id)
        self._pending: set[defer.Deferred[Any]] = set()
        self._dirty: set[str] = set()  # dialog ids whose last write was not acknowledged
        self._writes: dict[str, int] = {}  # dialog id -> its newest write's number
        self._numbers = count(1)  # write numbers (never reused: see forget)

    @classmethod
    def open(cls, conns: RedisConnections, keys: Keys, node_id: str
             ) -> defer.Deferred[RedisOperatorBook]:
        """A book holding what Redis kept for ``node_id`` (fails with
        ``RedisUnavailable`` if Redis does not answer: the node cannot start)."""
        book = cls(conns, keys, node_id)
        return book.fetch().addCallback(lambda _: book)

    def fetch(self) -> defer.Deferred[None]:
        """Read the node's tickets from Redis (before the desk calls ``load``)."""
        d = self._values_op()
        return d.addCallback(lambda values: self.tickets.update(_tickets(values)))

    # -- IOperatorBook ---------------------------------------------------------------

    def put(self, ticket: dict[str, Any]) -> None:
        super().put(ticket)
        self._write(ticket["dialog_id"])

    def drop(self, dialog_id: str) -> None:
        if dialog_id in self.tickets:
            super().drop(dialog_id)
            self._write(dialog_id)

    def settle(self) -> defer.Deferred[None]:
        """Fires once every change so far is acknowledged by Redis; fails with
        ``RedisUnavailable`` if one is not (it stays to be written again)."""
        for dialog_id in list(self._dirty):
            self._write(dialog_id)
        waits = list(self._pending)
        d = defer.DeferredList(waits, consumeErrors=True) if waits else defer.succeed([])

        def settled(_: Any) -> None:
            if self._dirty:
                raise RedisUnavailable(f"redis: {len(self._dirty)} operator ticket(s) "
                                       "not acknowledged")
        return d.addCallback(settled)

    def compact(self) -> defer.Deferred[None]:
        """Nothing to compact in Redis: write again what was not acknowledged."""
        d = self.settle()
        d.addErrback(lambda f: log.warn("operator book: {why}", why=f.getErrorMessage()))
        return d

    def forget(self) -> None:
        """This node is no longer the desk (its node lease was lost, or the
        desk lease): forget the tickets held in memory and every write Redis
        has not acknowledged, so nothing written from here on comes from the
        time it was the desk. Another desk may adopt this node's hash at any
        time now: a ticket held here, written again (``compact``, ``settle``),
        would be put back into the hash after that desk took it (and resumed
        twice by a later take-over). What Redis last acknowledged is what the
        next desk takes over (this node's own ``fetch`` reads it again); the
        changes Redis missed are lost: an assignment made during an outage is
        offered again, a dialog ended then leaves a ticket its next desk drops
        (the dialog is not resumed). A write already sent may still land."""
        self.tickets.clear()
        self._dirty.clear()
        self._writes.clear()

    # -- several nodes ---------------------------------------------------------------

    def adopt(self, node_id: str) -> defer.Deferred[list[dict[str, Any]]]:
        """Move a dead node's tickets into this node's hash (and this book);
        returns them. Atomic: of two survivors adopting at once, one gets them."""
        d = self.scripts.call("desk_adopt", [self.keys.desk(node_id), self.key], [])

        def moved(values: Any) -> list[dict[str, Any]]:
            got = _tickets(values)
            self.tickets.update(got)
            return sorted(got.values(), key=lambda t: t["rank"])
        return d.addCallback(moved)

    # -- writing behind --------------------------------------------------------------

    def _write(self, dialog_id: str) -> None:
        """The ticket's current state (or its absence) to Redis, in call order
        (one connection); dirty until its newest write is acknowledged."""
        ticket = self.tickets.get(dialog_id)
        d = self._write_op(dialog_id, None if ticket is None else orjson.dumps(ticket))
        n = self._writes[dialog_id] = next(self._numbers)
        self._dirty.add(dialog_id)
        self._pending.add(d)

        def acknowledged(_: Any) -> None:
            if self._writes.get(dialog_id) == n:  # no newer write is on its way
                self._dirty.discard(dialog_id)
                del self._writes[dialog_id]

        def failed(f: Failure) -> None:
            log.warn("operator book: writing {dialog_id} failed: {why}",
                     dialog_id=dialog_id, why=f.getErrorMessage())
        d.addCallbacks(acknowledged, failed)
        d.addBoth(lambda _: self._pending.discard(d))

    # -- the Redis steps (a fake world's in libchat.cluster.testing_doors.FakeOperatorBook) --

    def _values_op(self) -> defer.Deferred[Any]:
        return self.conns.call("HVALS", self.key)

    def _write_op(self, dialog_id: str, raw: bytes | None) -> defer.Deferred[Any]:
        """``HSET`` the ticket as JSON, or ``HDEL`` it (``raw`` None)."""
        if raw is None:
            return self.conns.call("HDEL", self.key, dialog_id)
        return self.conns.call("HSET", self.key, dialog_id, raw)


__all__ = ["RedisOperatorBook"]
