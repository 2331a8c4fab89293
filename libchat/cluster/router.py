"""The router of a cluster node: any node takes any event (CONTRACT §14).

:class:`ClusterRouter` is the :class:`~libchat.interfaces.IRouter` the doors of
a node started with ``--redis`` call. It wraps the node's ordinary
:class:`~libchat.core.router.Router` (the *engine*, which keeps every rule of
sections 2-3 and runs synchronously on the dialogs this node owns) and adds
what several nodes need:

- **Ownership.** The first event of a dialog on a node claims it in Redis
  (``claim``: one winner per fence token). Won: the record and transcript are
  read from Redis and handed to the engine; a dialog whose program was running
  on a node that is gone gets its one 2002 ``program_exited`` here
  (``Router.recover``). Lost to a live node: the event is forwarded.
- **Forwarding.** An event for a dialog owned elsewhere goes to the owner's
  inbox stream (``IBus.send``); the owner routes it and answers with a receipt
  the same way. The receiving node answers its door only with that receipt,
  so an event is acknowledged once, by the owner, after it is in Redis. No
  receipt within ``forward_timeout``: 2004 ``INTERNAL_ERROR`` (the owner drops
  the event if it reads it after its expiry, so a retry is not a duplicate).
  Events of one dialog received by one node are routed one after another.
- **Acknowledgement.** Every transcript entry is written to Redis by the
  owner (:class:`~libchat.cluster.dialogs.SharedDialogStore`); a door is
  answered, and a reply is released to an upstream, only once it is there.
- **Replies.** An event goes to the upstream that last sent for the dialog,
  wherever it is (a :class:`RemoteUpstream` of another node's frame
  connection); the web gateway and platform apps exist on every node, so the
  owner's own serve. No live upstream of the channel: another node that has
  one, else the reply is kept in Redis until one connects anywhere.
- **Failures.** A sweep (every second) learns which nodes hold a lease; a
  node whose lease is gone has its dialogs adopted by a *steady* survivor.
  A node that loses its own lease stops acknowledging and stops its
  instances; SIGTERM stops the instances (their users get 2002
  ``program_exited``), writes everything, releases the dialogs and the lease.
"""

from __future__ import annotations

import random
import time
import uuid
import weakref
from collections import OrderedDict
from functools import partial
from typing import Any, Callable

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from libchat.cluster.dialogs import SharedDialogStore
from libchat.cluster.gate import dropped, gate
from libchat.cluster.interfaces import IBus, IClusterStore, StaleFence
from libchat.core.router import Router
from libchat.core.transcript import after as entries_after
from libchat.core.transcript import event_from_entry
from libchat.interfaces import (
    DialogInfo,
    IInstance,
    IRouter,
    IRouterStats,
    IUpstream,
    Receipt,
    TokenInfo,
    Unavailable,
)
from libchat.histogram import FAST_BUCKETS, Histogram
from libchat.jsonc import dumps, loads
from libchat.protocol import codes
from libchat.storage.records import DialogRecord

log = Logger()

FORWARD_TIMEOUT = 5.0
SWEEP_EVERY = 1.0
MAX_HOPS = 3
KEPT_PAGE = 100
MAX_OWNERS = 100_000  # dialog owners remembered by a forwarding node
REDO = object()  # the receipt of a node that no longer owns the dialog


def unavailable(dialog_id: Any = None, message_id: Any = None) -> Receipt:
    """The answer while Redis (or the owner) cannot confirm: never a false success."""
    return Receipt(error=codes.error(
        codes.INTERNAL_ERROR, "shared storage unavailable; not recorded, send it again",
        dialog_id=dialog_id, message_id=message_id))


class ReceiptTo:
    """Where the receipt of a forwarded event goes; ``rode`` once it was
    sent with the event's own append (``SharedDialogStore.synced_sending``:
    one Redis step for both, and nothing to send after)."""

    __slots__ = ("node", "reply", "rode")

    def __init__(self, node: str, reply: dict[str, Any]) -> None:
        self.node, self.reply, self.rode = node, reply, False

    def payload(self, receipt: Receipt) -> bytes:
        return dumps({**self.reply, "seq": receipt.seq, "error": receipt.error})


@implementer(IUpstream)
class GatedUpstream:
    """A local upstream as the engine sees it: each event is released once
    its dialog's writes are in Redis (``SharedDialogStore.synced``)."""

    def __init__(self, real: IUpstream, key: str, store: SharedDialogStore) -> None:
        self.real = real
        self.key = key
        self.channel = real.channel
        self.store = store
        fallback = getattr(real, "fallback", None)
        if fallback is not None:
            self.fallback = fallback

    def alive(self) -> bool:
        return bool(self.real.alive())

    def deliver(self, event: dict[str, Any]) -> None:
        gate(self.store, event, self.real.deliver)


@implementer(IUpstream)
class RemoteUpstream:
    """Another node's frame connection, for the dialogs it sent events of."""

    def __init__(self, router: "ClusterRouter", node: str, key: str, channel: str) -> None:
        self.router = router
        self.node = node
        self.key = key
        self.channel = channel

    def alive(self) -> bool:
        return self.node not in self.router.dead

    def deliver(self, event: dict[str, Any]) -> None:
        message = {"t": "out", "up": self.key, "ch": self.channel, "e": event, "hops": 0}
        dialog_id = event.get("dialog_id")
        if isinstance(dialog_id, str):  # usually: the reply rides on its own append
            d = self.router.store.synced_sending(dialog_id, self.node, dumps(message))
            if d is not None:
                d.addErrback(dropped, event, dialog_id)
                return
        gate(self.router.store, event, lambda e: self.router.send(self.node, message))


@implementer(IUpstream)
class ChannelFallback:
    """The last choice of the engine for a channel (attached first, so every
    local upstream is preferred): another node with a live upstream of the
    channel, else Redis keeps the reply until one connects."""

    def __init__(self, router: "ClusterRouter", channel: str) -> None:
        self.router = router
        self.channel = channel

    def alive(self) -> bool:
        return True

    def deliver(self, event: dict[str, Any]) -> None:
        gate(self.router.store, event, lambda e: self.router.spill(self.channel, e, hops=0))


@implementer(IRouter, IRouterStats)
class ClusterRouter:
    def __init__(self, engine: Router, store: SharedDialogStore, cluster: IClusterStore,
                 bus: IBus, lease: Any, clock: IReactorTime, node_id: str, *,
                 forward_timeout: float = FORWARD_TIMEOUT, sweep_every: float = SWEEP_EVERY,
                 channels: tuple[str, ...] = ("frame",),
                 wall: Callable[[], float] = time.time) -> None:
        assert engine.store is store
        self.engine = engine
        self.store = store
        self.cluster = cluster
        self.bus = bus
        self.lease = lease
        self.clock = clock
        self.node_id = node_id
        self.forward_timeout = forward_timeout
        self.sweep_every = sweep_every
        self.wall = wall
        self.ready = False  # joined, and the lease is held
        self.live: set[str] = {node_id}  # nodes holding a lease, as of the last sweep
        self.dead: set[str] = set()  # nodes known to hold none (a newcomer is alive)
        # every node id seen in the set of nodes: the set forgets a dead node
        # once one survivor has handed it over, but for this node it stays
        # dead (never forwarded to, its callbacks run here too) until it is
        # live again
        self._seen: set[str] = set()
        self._buried: set[str] = set()  # dead, gone from the set, callbacks run here
        self.observers = engine.observers
        self.instance_observers = engine.instance_observers
        self.forwarded = 0  # events this node sent to an owner elsewhere
        self.inbox_lag = Histogram(FAST_BUCKETS)  # forwarded events, sent -> read here
        self.adopted = 0  # dialogs taken from a node whose lease was gone
        self._gated: dict[IUpstream, GatedUpstream] = {}
        self._by_key: dict[str, GatedUpstream] = {}
        self._channel_count: dict[str, int] = {}
        self._remotes: "weakref.WeakValueDictionary[tuple[str, str], RemoteUpstream]" = (
            weakref.WeakValueDictionary())
        self._fallbacks: dict[str, ChannelFallback] = {}
        self._chains: dict[str, defer.Deferred[None]] = {}
        # owners of dialogs this node forwarded for (a claim round trip saved
        # per event; a node that no longer owns one answers "redo")
        self._owners: OrderedDict[str, str] = OrderedDict()
        self._waiting: dict[str, defer.Deferred[dict[str, Any]]] = {}
        self._sweep: task.LoopingCall | None = None
        # other doors' node-to-node messages (``handle``) and what they do
        # when a node is found dead (``on_dead``): libchat.cluster extensions
        self._handlers: dict[str, Callable[[dict[str, Any]], object]] = {}
        self._on_dead: list[Callable[[str], object]] = []
        self._on_lease_lost: list[Callable[[], object]] = []
        self._lost_as: str | None = None  # the incarnation whose lease was lost
        # where dialogs of some programs must live (``route``/``recovered``:
        # a node id, None for any, or raise Unavailable): libchat.cluster.desk
        self.placement: Any = None
        self._sweeping = False
        store.on_broken = self._forget
        for channel in channels:
            self._fallback(channel)

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        self.engine.start()

    @defer.inlineCallbacks
    def join(self) -> Any:
        """Take the lease, read the inbox, subscribe nothing yet (the web door
        does), sweep every second. Events before this are answered 2004."""
        yield self.bus.listen(self.node_id, lambda dialog_id: None, self._inbox)
        self.ready = True
        self._sweep = task.LoopingCall(self.sweep)
        self._sweep.clock = self.clock
        self._sweep.start(self.sweep_every, now=True)
        for channel, count in self._channel_count.items():
            if count:
                yield self._join_channel(channel)

    def lease_lost(self) -> None:
        """The lease could not be refreshed: stop acknowledging, run the
        ``on_lease_lost`` hooks, then stop every instance and forget every
        dialog (another node adopts them)."""
        self.ready = False
        self._lost_as = self.lease.incarnation
        for callback in self._on_lease_lost:
            try:
                callback()
            except Exception:
                log.failure("cluster: a lease-lost hook failed")
        for dialog_id in self.store.owned():
            self._forget(dialog_id)

    def lease_healthy(self) -> None:
        """Serving again. With the same incarnation (the lease was still ours)
        every dialog forgotten at ``lease_lost`` is still claimed by this node
        in Redis: it is released, so any node (the operator desk's new node
        among them) can claim it; its next event anywhere recovers it as
        usual. Under a new incarnation the old claims are dead already."""
        self.ready = True
        if self._lost_as is not None and self._lost_as == self.lease.incarnation:
            self.release_forgotten()
        self._lost_as = None

    @defer.inlineCallbacks
    def release_forgotten(self) -> Any:
        """Release every dialog Redis lists as this node's that its store does
        not own (forgotten while the lease was lost). Never fails."""
        released = 0
        try:
            owned = yield self.cluster.owned(self.node_id)
            for dialog_id in sorted(owned):
                if self.store.owns(dialog_id):
                    continue
                done = yield self._serial(dialog_id, partial(self._release_if_forgotten,
                                                             dialog_id))
                released += bool(done)
        except Exception as e:  # noqa: BLE001 - their next event (or the lease's end) frees them
            log.warn("cluster: could not release forgotten dialogs: {why}",
                     why=str(e) or type(e).__name__)
        if released:
            log.info("cluster: node {node} released {n} dialogs it forgot while its lease "
                     "was lost", node=self.node_id, n=released)

    def _release_if_forgotten(self, dialog_id: str) -> Any:
        if self.store.owns(dialog_id) or not self.ready:
            return False
        return self.cluster.release(dialog_id, self.lease.incarnation)

    @defer.inlineCallbacks
    def stop(self) -> Any:
        """SIGTERM: the instances stop (2002 ``program_exited`` to their
        users, written and delivered), then every dialog is released."""
        if self._sweep is not None and self._sweep.running:
            self._sweep.stop()
        yield self.engine.stop()
        yield self.store.flush()
        self.ready = False
        released = 0
        for dialog_id in self.store.owned():
            try:
                yield self.cluster.release(dialog_id, self.lease.incarnation)
                released += 1
            except Exception as e:  # noqa: BLE001 - the lease drop below frees them too
                log.warn("cluster: could not release {dialog_id}: {why}",
                         dialog_id=dialog_id, why=str(e))
            self.store.disown(dialog_id)
        for channel, count in self._channel_count.items():
            if count:
                try:
                    yield self.cluster.upstream_leave(channel, self.node_id)
                except Exception:
                    pass
        # the others stop forwarding here at once, not at their next sweep
        try:
            others = (yield self.cluster.nodes()) - {self.node_id}
        except Exception:
            others = self.live - {self.node_id}
        yield defer.DeferredList([self.send(n, {"t": "bye", "node": self.node_id})
                                  for n in sorted(others)])
        log.info("cluster: node {node} released {n} dialogs", node=self.node_id, n=released)

    # -- IRouter: upstreams -------------------------------------------------------------

    def _gate(self, upstream: IUpstream) -> GatedUpstream:
        g = self._gated.get(upstream)
        if g is None:
            key = getattr(upstream, "cluster_key", None) or f"{upstream.channel}:{uuid.uuid4().hex}"
            g = self._gated[upstream] = GatedUpstream(upstream, key, self.store)
            self._by_key[key] = g
        return g

    def attach(self, upstream: IUpstream) -> None:
        g = self._gate(upstream)
        self.engine.attach(g)
        count = self._channel_count.get(g.channel, 0) + 1
        self._channel_count[g.channel] = count
        if count == 1 and self.ready:
            self._join_channel(g.channel)
        elif self.ready:
            self._drain_kept(g.channel)

    def detach(self, upstream: IUpstream) -> None:
        g = self._gated.pop(upstream, None)
        if g is None:
            return
        self._by_key.pop(g.key, None)
        self.engine.detach(g)
        count = self._channel_count.get(g.channel, 1) - 1
        self._channel_count[g.channel] = count
        if count == 0 and self.ready:
            self.cluster.upstream_leave(g.channel, self.node_id).addErrback(lambda f: None)

    def drain(self, upstream: IUpstream) -> None:
        g = self._gated.get(upstream)
        if g is not None:
            self.engine.drain(g)

    def _join_channel(self, channel: str) -> "defer.Deferred[None]":
        d = self.cluster.upstream_join(channel, self.node_id)
        d.addCallback(lambda _: self._drain_kept(channel))
        d.addErrback(lambda f: log.warn("cluster: cannot register a {channel} upstream: {why}",
                                        channel=channel, why=f.getErrorMessage()))
        return d

    # -- IRouter: events -----------------------------------------------------------------

    def receive(self, upstream: IUpstream, event: dict[str, Any]) -> Any:
        """A Receipt, or a Deferred[Receipt] fired once the owner recorded the
        event in Redis (every door handles both)."""
        if not self.ready:
            return unavailable(event.get("dialog_id"), event.get("message_id"))
        return self._route(self._gate(upstream), event, forwarded=False)

    def close(self, upstream: IUpstream, dialog_id: str, user_id: str) -> Any:
        return self.receive(upstream, {"event_type": codes.CLIENT_CLOSE,
                                       "dialog_id": dialog_id, "user_id": user_id})

    def _route(self, up: IUpstream, event: dict[str, Any], forwarded: bool,
               receipt_to: ReceiptTo | None = None) -> Any:
        dialog_id = event["dialog_id"]
        if dialog_id not in self._chains and self.store.owns(dialog_id):
            try:
                elsewhere = self._placed(up, event)
            except Unavailable:
                return unavailable(dialog_id, event.get("message_id"))
            if elsewhere is None:
                return self._local(up, event, receipt_to)
        return self._serial(dialog_id, lambda: self._claim_route(up, event, forwarded))

    def _local(self, up: IUpstream, event: dict[str, Any],
               receipt_to: ReceiptTo | None = None) -> Any:
        dialog_id = event["dialog_id"]
        if receipt_to is None:
            receipt = self.engine.receive(up, event)
        else:  # a forwarded event: its receipt may ride on its append
            self.store.hold(dialog_id)
            try:
                receipt = self.engine.receive(up, event)
            finally:
                self.store.unhold(dialog_id)
        if not receipt.ok:
            return receipt  # nothing was recorded
        if receipt_to is not None and receipt.seq is not None:
            d = self.store.synced_sending(dialog_id, receipt_to.node,
                                          receipt_to.payload(receipt))
            if d is not None:
                receipt_to.rode = True

                def not_written(f: Failure) -> Receipt:
                    receipt_to.rode = False  # the script failed whole: not sent
                    return self._failed(f, event)
                return d.addCallbacks(lambda _: receipt, not_written)
        d = self.store.synced(dialog_id, owned=receipt.seq is not None)
        return d.addCallbacks(lambda _: receipt, lambda f: self._failed(f, event))

    def _failed(self, f: Failure, event: dict[str, Any]) -> Receipt:
        if not f.check(Unavailable, StaleFence, KeyError):
            log.failure("cluster: routing {dialog_id} failed", f, dialog_id=event.get("dialog_id"))
        return unavailable(event.get("dialog_id"), event.get("message_id"))

    def _serial(self, dialog_id: str, fn: Callable[[], Any]) -> "defer.Deferred[Any]":
        """Run ``fn`` after every earlier operation on the dialog finished."""
        before = self._chains.get(dialog_id)
        tail: defer.Deferred[None] = defer.Deferred()
        self._chains[dialog_id] = tail
        result: defer.Deferred[Any] = defer.Deferred()

        def done(outcome: Any) -> None:
            if self._chains.get(dialog_id) is tail:
                del self._chains[dialog_id]
            tail.callback(None)
            result.callback(outcome)

        def run(_: Any = None) -> None:
            defer.maybeDeferred(fn).addBoth(done)
        if before is None:
            run()
        else:
            before.addCallback(run)
        return result

    @defer.inlineCallbacks
    def _claim_route(self, up: IUpstream, event: dict[str, Any], forwarded: bool) -> Any:
        dialog_id = event["dialog_id"]
        try:
            for _ in range(MAX_HOPS):
                if not self.ready:
                    break
                owner: str | None
                if self.store.owns(dialog_id):
                    owner = self.node_id
                else:
                    owner = self._owners.get(dialog_id)
                    # only a node seen holding its lease at the last sweep is
                    # trusted without asking Redis (a dead one leaves `nodes`)
                    if owner is None or owner not in self.live or forwarded:
                        owner = yield self._own(dialog_id)
                if owner == self.node_id:
                    elsewhere = self._placed(up, event)
                    if elsewhere is None:
                        return (yield self._local(up, event))
                    yield self._hand_over(dialog_id)
                    owner = elsewhere
                if forwarded:
                    return REDO
                self._remember_owner(dialog_id, owner)
                answer = yield self._forward(owner, up, event)
                if answer is not REDO:
                    return answer
                self._owners.pop(dialog_id, None)  # it moved: ask Redis again
        except Exception:
            return self._failed(Failure(), event)
        return unavailable(dialog_id, event.get("message_id"))

    @defer.inlineCallbacks
    def _own(self, dialog_id: str) -> Any:
        """Claim the dialog; if won, load it. Returns the owner's node id."""
        own = yield self.cluster.claim(dialog_id, self.node_id, self.lease.incarnation)
        if own.node == self.node_id and not self.store.owns(dialog_id):
            self.store.disown(dialog_id)  # a broken leftover
            record = yield self.store.fetch(dialog_id)
            if not self.ready:  # the lease was lost meanwhile: its dialogs are forgotten
                raise Unavailable("this node is not serving (no lease)")
            try:
                elsewhere = self._placed_record(record)
            except Unavailable:
                yield self.cluster.release(dialog_id, self.lease.incarnation)
                raise
            if elsewhere is not None:  # bound to a program that lives elsewhere
                yield self.cluster.release(dialog_id, self.lease.incarnation)
                return elsewhere
            self.store.own(dialog_id, own.fence, record)
            if record is not None:
                self.engine.recover(record)
        return own.node

    # -- placement (libchat.cluster.desk: the operators' dialogs live on the desk node) --

    def _placed(self, up: IUpstream, event: dict[str, Any]) -> str | None:
        """The node that must own the dialog for this event, None for this
        one; raises ``Unavailable`` when that node is not known now. Only a
        user message of a dialog without a foreground moves it."""
        if self.placement is None or event.get("event_type") != codes.USER_MESSAGE:
            return None
        node = self.placement.route(self.engine, up, event)
        return None if node == self.node_id else node

    def _placed_record(self, record: Any) -> str | None:
        """Where a dialog just claimed must be recovered (None: here)."""
        if self.placement is None or record is None:
            return None
        node = self.placement.recovered(record)
        return None if node == self.node_id else node

    @defer.inlineCallbacks
    def _hand_over(self, dialog_id: str, why: str = "for its program's placement") -> Any:
        """Let go of an owned dialog (its writes in Redis first) so that the
        node placement named claims it with the event forwarded there."""
        yield self.store.synced(dialog_id)
        self._owners.pop(dialog_id, None)
        self._forget(dialog_id)
        yield self.cluster.release(dialog_id, self.lease.incarnation)
        log.info("cluster: dialog {dialog_id} handed over {why}", dialog_id=dialog_id, why=why)

    def hand_over(self, dialog_id: str, why: str) -> "defer.Deferred[Any]":
        """Let go of a dialog this node owns, now (its writes in Redis first,
        then forgotten and released), for another node to claim: the operator
        desk's dialogs when this node stops being the desk."""
        def go() -> Any:
            return self._hand_over(dialog_id, why) if self.store.owns(dialog_id) else None
        return self._serial(dialog_id, go)

    def adopt(self, dialog_id: str) -> "defer.Deferred[Any]":
        """Claim a dialog now if its owner is gone or it is free (the desk
        node takes the dialogs of the tickets it took over)."""
        return self._serial(dialog_id, partial(self._adopt, dialog_id))

    # -- forwarding ---------------------------------------------------------------------

    def _remember_owner(self, dialog_id: str, owner: str) -> None:
        self._owners[dialog_id] = owner
        self._owners.move_to_end(dialog_id)
        if len(self._owners) > MAX_OWNERS:
            self._owners.popitem(last=False)

    def send(self, node: str, message: dict[str, Any]) -> "defer.Deferred[None]":
        d = self.bus.send(node, dumps(message))
        d.addErrback(lambda f: log.warn("cluster: cannot reach node {node}: {why}",
                                        node=node, why=f.getErrorMessage()))
        return d

    @defer.inlineCallbacks
    def _forward(self, node: str, up: Any, event: dict[str, Any]) -> Any:
        req = uuid.uuid4().hex
        waiting: defer.Deferred[dict[str, Any]] = defer.Deferred()
        self._waiting[req] = waiting
        timer = self.clock.callLater(self.forward_timeout, self._expire, req)
        self.forwarded += 1
        try:
            yield self.bus.send(node, dumps({
                "t": "in", "id": req, "from": self.node_id, "up": up.key, "ch": up.channel,
                "e": event, "exp": self.wall() + self.forward_timeout}))
            answer = yield waiting
        finally:
            self._waiting.pop(req, None)
            if timer.active():
                timer.cancel()
        if answer.get("redo"):
            return REDO
        if answer.get("timeout"):
            self._owners.pop(event["dialog_id"], None)
            log.warn("cluster: node {node} did not answer for {dialog_id} in {s}s",
                     node=node, dialog_id=event["dialog_id"], s=self.forward_timeout)
            return unavailable(event["dialog_id"], event.get("message_id"))
        return Receipt(seq=answer.get("seq"), error=answer.get("error"))

    def _expire(self, req: str) -> None:
        d = self._waiting.pop(req, None)
        if d is not None:
            d.callback({"timeout": True})

    def _inbox(self, payload: bytes) -> None:
        message = loads(payload)
        kind = message.get("t")
        if kind == "in":
            self._forwarded(message)
        elif kind == "rc":
            d = self._waiting.pop(message.get("id"), None)
            if d is not None:
                d.callback(message)
        elif kind == "out":
            self._out(message)
        elif kind == "kept":
            self._drain_kept(message["ch"])
        elif kind == "bye":
            self._gone(message["node"])
        elif kind in self._handlers:
            self._handlers[kind](message)
        else:
            log.warn("cluster: an inbox message of unknown kind {kind!r}", kind=kind)

    def handle(self, kind: str, handler: Callable[[dict[str, Any]], object]) -> None:
        """Route inbox messages ``{"t": kind, ...}`` (sent with :meth:`send`)
        to ``handler``: how another door's node-to-node messages travel."""
        assert kind not in ("in", "rc", "out", "kept", "bye"), kind
        self._handlers[kind] = handler

    def on_dead(self, callback: Callable[[str], object]) -> None:
        """``callback(node_id)`` on every steady node, once per sweep that finds
        the node without a lease, after this node adopted what it could of
        its dialogs (a door hands over what the dead node held: one survivor
        must win, by an atomic step in Redis), and once more if another
        survivor removed it from the set of nodes first (so a callback that
        drops what *this* node remembers of the dead one runs on every
        survivor). Callbacks must be idempotent."""
        self._on_dead.append(callback)

    def on_lease_lost(self, callback: Callable[[], object]) -> None:
        """``callback()`` when this node loses its lease, first thing in
        :meth:`lease_lost`: before any dialog is forgotten (its instances
        stopped). A door that must keep what those stops would drop acts
        here (the operator desk keeps its tickets, libchat.cluster.desk)."""
        self._on_lease_lost.append(callback)

    def _gone(self, node: str) -> None:
        """A node left (SIGTERM): nothing more is forwarded to it."""
        log.info("cluster: node {node} left", node=node)
        self.live.discard(node)
        self.dead.add(node)
        self._seen.add(node)
        for dialog_id in [d for d, n in self._owners.items() if n == node]:
            del self._owners[dialog_id]

    def _forwarded(self, message: dict[str, Any]) -> None:
        event = message["e"]
        # inbox lag: from the sender's XADD to this read (the nodes' wall clocks)
        self.inbox_lag.observe(max(0.0, self.wall() - (message.get("exp", 0)
                                                        - self.forward_timeout)))
        if self.wall() > message.get("exp", 0):
            log.warn("cluster: dropping a {etype} of {dialog_id} from {node}: read after its "
                     "sender gave up", etype=event.get("event_type"),
                     dialog_id=event.get("dialog_id"), node=message.get("from"))
            return
        reply: dict[str, Any] = {"t": "rc", "id": message["id"]}
        if not self.ready:  # no lease: the dialog may be another node's by now
            reply["redo"] = True
            self.send(message["from"], reply)
            return
        up = self._upstream_for(message["from"], message["up"], message["ch"])
        receipt_to = ReceiptTo(message["from"], reply)
        d = defer.maybeDeferred(self._route, up, event, True, receipt_to)

        def answer(receipt: Any) -> None:
            if receipt is REDO:
                reply["redo"] = True
            elif receipt_to.rode:
                return  # it rode on the event's append
            else:
                reply["seq"], reply["error"] = receipt.seq, receipt.error
            self.send(message["from"], reply)
        d.addCallback(answer)
        d.addErrback(lambda f: log.failure("cluster: a forwarded event failed", f))

    def _upstream_for(self, node: str, key: str, channel: str) -> IUpstream:
        """The upstream a forwarded event came from, as this node can reach it:
        its own (web gateway, platform app: the same on every node), else a
        proxy of the sender's connection."""
        local = self._by_key.get(key)
        if local is not None:
            return local
        if node == self.node_id:
            return self._fallback(channel)  # our own connection, gone meanwhile
        remote = self._remotes.get((node, key))
        if remote is None:
            remote = RemoteUpstream(self, node, key, channel)
            self._remotes[(node, key)] = remote
        return remote

    def _fallback(self, channel: str) -> ChannelFallback:
        fallback = self._fallbacks.get(channel)
        if fallback is None:
            fallback = self._fallbacks[channel] = ChannelFallback(self, channel)
            self.engine.attach(fallback)
        return fallback

    # -- replies that have to travel ------------------------------------------------------

    def _local_upstream(self, channel: str, key: str | None) -> GatedUpstream | None:
        g = self._by_key.get(key) if key else None
        if g is not None and g.alive():
            return g
        return next((u for u in reversed(list(self._gated.values()))
                     if u.channel == channel and u.alive()), None)

    def _out(self, message: dict[str, Any]) -> None:
        """A reply another node sent for one of our upstreams (already in Redis)."""
        g = self._local_upstream(message["ch"], message.get("up"))
        if g is not None:
            g.real.deliver(message["e"])
        else:
            self.spill(message["ch"], message["e"], hops=message.get("hops", 0) + 1)

    @defer.inlineCallbacks
    def spill(self, channel: str, event: dict[str, Any], hops: int) -> Any:
        """No upstream here can take it: another node's, else kept in Redis."""
        try:
            if hops < MAX_HOPS:
                nodes = yield self.cluster.upstream_nodes(channel)
                # live as of the last sweep: a killed node stays in the set of
                # a channel's upstream nodes, and may be one this node never saw
                others = sorted(n for n in nodes if n != self.node_id and n in self.live)
                if others:
                    yield self.send(random.choice(others), {"t": "out", "up": None, "ch": channel,
                                                            "e": event, "hops": hops})
                    return
            yield self.cluster.keep(channel, dumps(event))
            # an upstream that connected meanwhile has already looked: nudge it
            nodes = yield self.cluster.upstream_nodes(channel)
            for n in nodes:
                if n not in self.dead:
                    self.send(n, {"t": "kept", "ch": channel})
        except Exception as e:  # noqa: BLE001 - it is in the transcript: replayable
            log.error("cluster: could not keep a {etype} of {dialog_id} for {channel}: {why}",
                      etype=event.get("event_type"), dialog_id=event.get("dialog_id"),
                      channel=channel, why=str(e))

    @defer.inlineCallbacks
    def _drain_kept(self, channel: str) -> Any:
        """Hand what Redis kept for the channel to a live local upstream."""
        try:
            while self._local_upstream(channel, None) is not None:
                taken = yield self.cluster.take_kept(channel, KEPT_PAGE)
                for data in taken:
                    g = self._local_upstream(channel, None)
                    if g is None:
                        self.spill(channel, loads(data), hops=0)
                    else:
                        g.real.deliver(loads(data))
                if len(taken) < KEPT_PAGE:
                    break
        except Exception as e:  # noqa: BLE001 - they stay kept; the next connect tries again
            log.warn("cluster: cannot take kept {channel} replies: {why}", channel=channel,
                     why=str(e))

    # -- failures -------------------------------------------------------------------------

    def _forget(self, dialog_id: str) -> None:
        self.engine.forget(dialog_id)
        self.store.disown(dialog_id)

    @defer.inlineCallbacks
    def sweep(self) -> Any:
        """Learn the live nodes; a steady node adopts the dialogs of dead ones."""
        if self._sweeping:
            return
        self._sweeping = True
        try:
            nodes = yield self.cluster.nodes()
            holders = yield defer.gatherResults(
                [self.cluster.lease_holder(n) for n in sorted(nodes)], consumeErrors=True)
            self.live = {n for n, h in zip(sorted(nodes), holders) if h} | {self.node_id}
            self._seen |= nodes
            self.dead = self._seen - self.live
            self._buried &= self.dead  # live again: its next death is handled anew
            if not (self.ready and self.lease.steady):
                return
            for node in sorted(self.dead):
                if node not in nodes:
                    # another survivor handed it over and removed it from the
                    # set first: what this node holds of it is still to drop
                    if node not in self._buried:
                        yield self._mourn(node)
                        self._buried.add(node)
                    continue
                owned = yield self.cluster.owned(node)
                for dialog_id in sorted(owned):
                    yield self._serial(dialog_id, partial(self._adopt, dialog_id))
                yield self._mourn(node)
                if not owned:
                    yield self.cluster.forget_node(node)
                    self._buried.add(node)
        except Exception as e:  # noqa: BLE001 - the next sweep tries again
            log.info("cluster: sweep failed: {why}", why=str(e) or type(e).__name__)
        finally:
            self._sweeping = False

    @defer.inlineCallbacks
    def _mourn(self, node: str) -> Any:
        for callback in self._on_dead:
            yield defer.maybeDeferred(callback, node).addErrback(
                lambda f: log.failure("cluster: a dead-node hand-over failed", f))

    @defer.inlineCallbacks
    def _adopt(self, dialog_id: str) -> Any:
        if self.store.owns(dialog_id) or not self.ready:
            return
        try:
            owner = yield self._own(dialog_id)
        except Unavailable:  # its placement cannot say where now: the next sweep
            return
        if owner == self.node_id:
            self.adopted += 1
            log.info("cluster: adopted dialog {dialog_id}", dialog_id=dialog_id)

    # -- IRouter: reads ------------------------------------------------------------------

    def open(self, dialog_id: str, user_id: str, channel: str,
             intent: str | None = None) -> Any:
        if not self.ready:
            return defer.fail(Unavailable("this node is not serving (no lease)"))

        @defer.inlineCallbacks
        def create() -> Any:
            owner = yield self._own(dialog_id)
            if owner != self.node_id or self.store.get(dialog_id) is not None:
                raise ValueError(f"dialog {dialog_id} exists")
            info = self.engine.open(dialog_id, user_id, channel, intent)
            yield self.store.synced(dialog_id)
            return info
        return self._serial(dialog_id, create)

    @defer.inlineCallbacks
    def _shared(self, dialog_id: str, seq: int) -> Any:
        """(record, entries after seq) from Redis, for a dialog owned elsewhere."""
        rec, last = yield self.cluster.get_record(dialog_id)
        if rec is None:
            return None, []
        data = loads(rec)
        data["messages"] = []
        record = DialogRecord.from_json(data)
        record.seq = last
        found: list[dict[str, Any]] = []
        while seq < last:
            page = yield self.cluster.read(dialog_id, seq, 1000)
            if not page:
                break
            found.extend(loads(e.data) for e in page)
            seq = page[-1].seq
        return record, found

    def info(self, dialog_id: str) -> Any:
        if self.store.owns(dialog_id):
            return self.engine.info(dialog_id)
        d = self._shared(dialog_id, 1 << 62)
        return d.addCallback(lambda r: None if r[0] is None else DialogInfo(
            dialog_id=dialog_id, user_id=r[0].user_id, channel=r[0].channel,
            program=r[0].program, intent=r[0].intent, state=r[0].state, seq=r[0].seq))

    def replay(self, dialog_id: str, after: int = 0, limit: int | None = None) -> Any:
        if self.store.owns(dialog_id):
            return self.engine.replay(dialog_id, after, limit)

        def events(r: tuple[Any, list[dict[str, Any]]]) -> list[dict[str, Any]]:
            record, found = r
            found = entries_after(found, after)
            if limit is not None:
                found = found[-limit:] if limit > 0 else []
            return [event_from_entry(record, e) for e in found]
        return self._shared(dialog_id, after).addCallback(events)

    def entries(self, dialog_id: str, after: int = 0, limit: int | None = None) -> Any:
        if self.store.owns(dialog_id):
            return self.engine.entries(dialog_id, after, limit)
        def first(r: tuple[Any, list[dict[str, Any]]]) -> list[dict[str, Any]]:
            found = entries_after(r[1], after)
            return found[:max(limit, 0)] if limit is not None else found
        return self._shared(dialog_id, after).addCallback(first)

    def token_info(self, token: str) -> TokenInfo | None:
        return self.engine.token_info(token)

    # -- IRouterStats --------------------------------------------------------------------

    def live_dialogs(self) -> int:
        return self.engine.live_dialogs()

    def instances(self) -> list[tuple[IInstance, str, str]]:
        return self.engine.instances()

    def pending_count(self, channel: str = "frame") -> int:
        return self.engine.pending_count(channel)

    def status(self) -> dict[str, Any]:
        """The node's part of ``/healthz``."""
        age = self.lease.age
        return {"node_id": self.node_id, "serving": self.ready, "lease": self.lease.state,
                "lease_age": None if age is None else round(age, 3),
                "steady": bool(self.lease.steady), "owned_dialogs": len(self.store.owned()),
                "live_nodes": sorted(self.live), "forwarded": self.forwarded,
                "inbox_lag_avg": round(self.inbox_lag.total / max(1, sum(self.inbox_lag.counts)),
                                       6),
                "adopted": self.adopted}
