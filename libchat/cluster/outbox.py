"""The platform outbox in Redis (CONTRACT §10 under §14): an
:class:`~libchat.doors.platforms.seam.IOutbox` for several nodes.

One hash per node (``Keys.platform_outbox``, ``lc:pout:<node_id>``): field
``<item id>`` the item as JSON, field ``<item id>:n`` how many of its parts
the platform accepted. The node's senders work as on one node (one send in
flight per dialog, merging, splitting, back-off, Lark ``uuid``
``<item>-<part>``); the outbox keeps the items in memory (``items``) and
writes every change to Redis behind the sender, which never waits for it:

- ``put`` (a new item, or one a merge replaced) -> ``HSET id json id:n n``;
- ``progress`` -> ``pout_progress`` (Lua): ``id:n`` only if the item is still
  ours; if it is not, the item was handed to a survivor, and :meth:`holds`
  tells the sender to stop sending it;
- ``finish`` -> ``HDEL id id:n``.

**Hand-over.** The router calls :meth:`adopt` on each steady survivor when a
node's lease is gone (``ClusterRouter.on_dead``, maybe on several survivors,
maybe on several sweeps). ``pout_adopt`` (Lua) moves the dead node's hash
into the caller's, unless that node holds its lease again (a restart under
the same id, which reads its own hash): one survivor gets the items, with
their progress, and its senders send what is left (parts already accepted
are not sent again). A hand-over whose answer was lost is retried every
:attr:`flush_every` seconds, and the node's own hash is read again then (the
script may have run).

**Redis unavailable.** A write that fails leaves the item *dirty*: it stays
in memory (and is being sent meanwhile), and its whole current state (the
item and its progress, or its absence) is written again every
:attr:`flush_every` seconds until Redis acknowledges one. The cost: an item
not yet acknowledged is lost only if this node dies before Redis answers
(one round trip normally; the length of the outage during one) *and* before
it was sent; a finish not acknowledged makes a survivor send the item's
remaining parts again (none, for a text whose progress was written), or an
attachment again.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable

import orjson
from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from libchat.cluster.connect import RedisConnections
from libchat.cluster.interfaces import RedisUnavailable
from libchat.cluster.keys import Keys
from libchat.cluster.scripts import Scripts
from libchat.doors.platforms.seam import IOutbox

log = Logger()

OUTBOX_SCRIPTS = ("pout_progress", "pout_adopt")
FLUSH_EVERY = 1.0
DONE_MEMORY = 10_000  # finished item ids remembered (a re-read must not revive them)

Item = dict[str, Any]


def OutboxScripts(conns: RedisConnections) -> Scripts:
    """The outbox's Lua scripts (NOSCRIPT -> load, retry, like the cluster's)."""
    return Scripts(conns, OUTBOX_SCRIPTS)


def items_of(fields: dict[str, bytes]) -> list[Item]:
    """The items of an outbox hash (HGETALL as a dict), oldest first, each
    with its progress, marked ``started`` (never merged into: a part of it
    may have been sent)."""
    out = []
    for name, raw in fields.items():
        if name.endswith(":n"):
            continue
        item = orjson.loads(raw)
        if not isinstance(item, dict) or item.get("id") != name:
            continue
        done = fields.get(name + ":n")
        item["n"] = int(done) if done is not None else int(item.get("n", 0))
        item["started"] = True
        out.append(item)
    out.sort(key=lambda i: (i.get("o", 0), i["id"]))
    return out


def pairs(flat: Any) -> dict[str, bytes]:
    """A flat HGETALL reply as a dict (field names as str)."""
    flat = list(flat or [])
    return {(k.decode() if isinstance(k, bytes) else str(k)): v
            for k, v in zip(flat[::2], flat[1::2])}


@implementer(IOutbox)
class RedisOutbox:
    """One node's outbox: in memory, written behind to ``lc:pout:<node_id>``.

    ``ready()`` says when the node holds its lease (the router's ``ready``):
    the node's own hash is read only then, so a restarted node and a survivor
    cannot both take it. ``on_items(items)`` is called with items found there
    or taken over (the door's ``resume``)."""

    flush_every = FLUSH_EVERY

    def __init__(self, conns: RedisConnections, keys: Keys, node_id: str, clock: Any,
                 ready: Callable[[], bool] = lambda: True,
                 scripts: Scripts | None = None) -> None:
        self.conns = conns
        self.keys = keys
        self.node_id = node_id
        self.clock = clock
        self.ready = ready
        self.scripts = scripts if scripts is not None else OutboxScripts(conns)
        self.key = keys.platform_outbox(node_id)
        self.items: OrderedDict[str, Item] = OrderedDict()
        self.on_items: Callable[[list[Item]], object] = lambda items: None
        self.loaded = False  # the node's own hash was read
        self._reread = False  # read it again (a hand-over's answer was lost)
        self._changes: dict[str, int] = {}  # item id -> changes made (the last one numbered)
        self._dirty: set[str] = set()  # ids whose current state Redis has not acknowledged
        self._writing: set[str] = set()  # ids with a whole-state write on its way
        self._pending: set[defer.Deferred[Any]] = set()  # writes on their way
        self._saved: set[str] = set()  # ids whose item Redis acknowledged once
        self._gone: set[str] = set()  # ids found handed to another node
        self._done: OrderedDict[str, None] = OrderedDict()  # ids finished here
        self._adopt_later: set[str] = set()  # dead nodes whose hand-over failed
        self._order = 0
        self._loop: task.LoopingCall | None = None

    # -- IOutbox ---------------------------------------------------------------------

    def put(self, item: Item) -> defer.Deferred[None]:
        if "o" not in item:  # the order of items across a hand-over
            self._order = (self._order + 1) % 1000
            item["o"] = int(self.clock.seconds() * 1000) * 1000 + self._order
        self.items[item["id"]] = item
        return self._write(item["id"])

    def progress(self, item: Item, parts_done: int) -> None:
        item["n"] = parts_done
        item_id = item["id"]
        if item_id not in self.items or item_id in self._gone:
            return
        if item_id in self._dirty or item_id in self._writing:
            self._write(item_id)  # the whole state: Redis may not have the item yet
            return
        n = self._change(item_id)
        d = self._progress_op(item_id, parts_done)

        def answered(there: Any) -> None:
            if there:
                self._acknowledged(item_id, n)
            elif item_id in self._saved:  # it was ours, and was moved
                log.info("platform outbox: item {id} was handed to another node", id=item_id)
                self._gone.add(item_id)
                self._dirty.discard(item_id)
            else:  # its put never landed: write it whole
                self._write(item_id)
        d.addCallbacks(answered, self._failed, errbackArgs=(item_id,))
        self._track(d)

    def finish(self, item_id: str) -> None:
        if self.items.pop(item_id, None) is None:
            return
        self._done[item_id] = None
        if len(self._done) > DONE_MEMORY:
            self._done.popitem(last=False)
        if item_id in self._gone:  # the other node's to delete
            self._forget(item_id)
            return
        self._write(item_id)

    def holds(self, item: Item) -> bool:
        return item["id"] not in self._gone

    # -- several nodes ---------------------------------------------------------------

    def adopt(self, node_id: str) -> defer.Deferred[list[Item]]:
        """Move dead ``node_id``'s outbox into this node's and send it
        (``on_items``); returns the items taken (none: another survivor took
        them, or the node is back). A failure is retried every
        :attr:`flush_every` seconds; this Deferred never fails."""
        if node_id == self.node_id:
            return defer.succeed([])
        d = self._adopt_op(node_id)

        def moved(fields: dict[str, bytes]) -> list[Item]:
            self._adopt_later.discard(node_id)
            taken = self._take(fields)
            if taken:
                log.info("platform outbox: took {n} unsent item(s) of node {node}",
                         n=len(taken), node=node_id)
            return taken

        def failed(f: Failure) -> list[Item]:
            log.warn("platform outbox: taking node {node}'s outbox failed ({why}); "
                     "trying again", node=node_id, why=f.getErrorMessage())
            self._adopt_later.add(node_id)
            self._reread = True  # the script may have run: our hash tells
            return []
        return d.addCallbacks(moved, failed)

    def _take(self, fields: dict[str, bytes]) -> list[Item]:
        """Items of an outbox hash this node does not know yet -> memory and
        ``on_items``."""
        taken = []
        for item in items_of(fields):
            item_id = item["id"]
            if item_id in self.items or item_id in self._done:
                continue
            self.items[item_id] = item
            self._saved.add(item_id)
            self._gone.discard(item_id)
            taken.append(item)
        if taken:
            self.on_items(taken)
        return taken

    # -- life ------------------------------------------------------------------------

    def start(self) -> None:
        """Every :attr:`flush_every` s: read the node's own hash once it
        holds its lease, write dirty items again, retry failed hand-overs."""
        self._loop = task.LoopingCall(self.flush)
        self._loop.clock = self.clock
        self._loop.start(self.flush_every, now=True)

    def stop(self) -> defer.Deferred[None]:
        """One more flush; what Redis still has not acknowledged is logged
        (it is lost with this process: see the module's doc)."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        d = self.settle()

        def report(f: Failure) -> None:
            log.error("platform outbox: {why}: lost at this stop", why=f.getErrorMessage())
        return d.addErrback(report)

    @defer.inlineCallbacks
    def flush(self) -> Any:
        try:
            if (not self.loaded or self._reread) and self.ready():
                self._reread = False
                try:
                    fields = yield self._load_op()
                except Exception:
                    self._reread = True
                    raise
                self.loaded = True
                self._take(fields)
            for node_id in sorted(self._adopt_later):
                yield self.adopt(node_id)
            for item_id in sorted(self._dirty - self._writing):
                self._write(item_id)
        except Exception as e:  # noqa: BLE001 - a LoopingCall must not die; next tick
            log.info("platform outbox: flush failed: {why}", why=str(e) or type(e).__name__)

    def settle(self) -> defer.Deferred[None]:
        """Write every dirty item now and wait for every write on its way;
        fails with ``RedisUnavailable`` if one is still not acknowledged."""
        for item_id in sorted(self._dirty - self._writing):
            self._write(item_id)
        waits = list(self._pending)
        d = defer.DeferredList(waits) if waits else defer.succeed(None)

        def settled(_: Any) -> None:
            if self._dirty:
                raise RedisUnavailable(f"redis: {len(self._dirty)} platform outbox item(s) "
                                       "not acknowledged")
        return d.addCallback(settled)

    @property
    def unsaved(self) -> int:
        """Items (or finishes) Redis has not acknowledged yet."""
        return len(self._dirty)

    # -- writing behind --------------------------------------------------------------

    def _change(self, item_id: str) -> int:
        n = self._changes[item_id] = self._changes.get(item_id, 0) + 1
        return n

    def _write(self, item_id: str) -> defer.Deferred[None]:
        """The item's whole current state (or its absence) to Redis."""
        n = self._change(item_id)
        item = self.items.get(item_id)
        if item is None:
            d = self._delete_op(item_id)
        else:
            stored = {k: v for k, v in item.items() if k != "started"}
            d = self._write_op(item_id, orjson.dumps(stored), int(item.get("n", 0)))
        self._writing.add(item_id)

        def done(_: Any) -> None:
            if item is not None:
                self._saved.add(item_id)
            self._acknowledged(item_id, n)
        d.addCallbacks(done, self._failed, errbackArgs=(item_id,))
        d.addBoth(lambda _: self._writing.discard(item_id))
        self._track(d)
        return d

    def _track(self, d: defer.Deferred[Any]) -> None:
        self._pending.add(d)
        d.addBoth(lambda _: self._pending.discard(d))

    def _acknowledged(self, item_id: str, n: int) -> None:
        if self._changes.get(item_id) != n:
            return  # a newer change is on its way (or dirty)
        self._dirty.discard(item_id)
        if item_id not in self.items:
            self._forget(item_id)

    def _failed(self, f: Failure, item_id: str) -> None:
        if item_id in self._changes:
            self._dirty.add(item_id)
        log.warn("platform outbox: writing item {id} failed ({why}); kept in memory, "
                 "written again when Redis answers", id=item_id, why=f.getErrorMessage())

    def _forget(self, item_id: str) -> None:
        for known in (self._saved, self._gone, self._dirty):
            known.discard(item_id)
        self._changes.pop(item_id, None)

    # -- the Redis steps (a fake replaces these: libchat.cluster.testing_doors) --------

    def _write_op(self, item_id: str, raw: bytes, n: int) -> defer.Deferred[Any]:
        return self.conns.call("HSET", self.key, item_id, raw, f"{item_id}:n", n)

    def _progress_op(self, item_id: str, n: int) -> defer.Deferred[Any]:
        return self.scripts.call("pout_progress", [self.key], [item_id, n])

    def _delete_op(self, item_id: str) -> defer.Deferred[Any]:
        return self.conns.call("HDEL", self.key, item_id, f"{item_id}:n")

    def _load_op(self) -> defer.Deferred[dict[str, bytes]]:
        return self.conns.call("HGETALL", self.key).addCallback(pairs)

    def _adopt_op(self, node_id: str) -> defer.Deferred[dict[str, bytes]]:
        d = self.scripts.call("pout_adopt", [self.keys.platform_outbox(node_id), self.key,
                                             self.keys.lease(node_id)], [])
        return d.addCallback(pairs)


__all__ = ["RedisOutbox", "items_of", "pairs"]
