"""One operator desk for the cluster (CONTRACT §13 under §14; docs/scaleout.md).

The desk (:class:`~libchat.runtimes.operators.runtime.OperatorRuntime`: the
queue, the assignment, the 30 s away, the book) runs on one node at a time,
the *desk node*: the holder of the desk lease (``lc:desk``, ``SET NX PX`` like
a node lease, refreshed every second; free when its holder stops or dies, and
then taken by the next node that asks). :class:`ClusterDesk` is every node's
part of it:

- **Placement** (the cluster router's ``placement`` hook): a user message of
  a dialog without a foreground whose turn resolves (as the engine resolves
  it: content and intent, then the upstream's fallback) to a program of the
  ``operators`` runtime must be routed by the desk node: the router hands the
  dialog over and forwards the event there. A dialog claimed while bound to
  such a program is recovered by the desk node only (elsewhere it is
  released at once), so the desk resumes it from its ticket instead of a 2002.
- **Operators' sockets on any node**: on the desk node the web door talks to
  the runtime; elsewhere this object is the door's
  :class:`~libchat.interfaces.IOperatorDesk` and forwards connects, closes,
  3102/3103 and "who holds this dialog" to the desk node over the nodes'
  inboxes (``router.send``/``router.handle``); the desk reaches a remote
  socket through a :class:`RemoteSink`. When the desk moves, each node
  registers its operators' sockets with the new one.
- **Take-over**: the node that takes the lease moves every other node's
  tickets into its book (``RedisOperatorBook.adopt``, atomic), keeps them
  (``OperatorRuntime.keep``) and claims their dialogs, which the engine then
  resumes: queued users keep their place and their ``wait``, assigned
  operators have 30 s to be back (their sockets on surviving nodes are
  re-registered within a second or two).
- **Losing it alive**: a desk node whose node lease is lost (the router's
  ``on_lease_lost``, before its dialogs are forgotten), whose router does
  not serve at a tick, or that finds the desk lease held by another, stops
  being the desk *keeping every ticket in the book* (``_suspend``:
  ``OperatorRuntime.suspend``, ``RedisOperatorBook.forget``; nobody is told,
  no 2002), lets go of the desk lease and hands its dialogs over (released
  in Redis) when its node lease is still good; the next desk, this node or
  another, takes the tickets over as above.
"""

from __future__ import annotations

import uuid
from itertools import count
from typing import Any

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from libchat.cluster.offline import DoorScripts
from libchat.interfaces import IOperatorDesk, IOperatorSink, Unavailable
from libchat.protocol import codes
from libchat.storage.records import FOREGROUND, OPEN

log = Logger()

OPERATORS = "operators"  # the runtime whose dialogs live on the desk node
TTL_MS = 10_000  # the desk lease, like a node lease
TICK = 1.0  # seconds between refreshes (and looks at who holds it)
ASK_TIMEOUT = 5.0  # a 3102/3103 forwarded to the desk node


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


@implementer(IOperatorSink)
class RemoteSink:
    """An operator's socket on another node, as the desk node reaches it."""

    def __init__(self, desk: "ClusterDesk", node: str, sid: str) -> None:
        self.desk, self.node, self.sid = desk, node, sid

    def send_event(self, event: dict[str, Any]) -> None:
        self.desk.router.send(self.node, {"t": "desk>", "sid": self.sid, "e": event,
                                          "from": self.desk.node_id})


@implementer(IOperatorDesk)
class ClusterDesk:
    def __init__(self, runtime: Any, book: Any, library: Any, router: Any,
                 clock: IReactorTime, *, scripts: Any = None, ttl_ms: int = TTL_MS,
                 tick: float = TICK, ask_timeout: float = ASK_TIMEOUT) -> None:
        self.runtime = runtime  # this node's OperatorRuntime (the desk when it holds the lease)
        self.book = book  # its RedisOperatorBook (lc:desk:<node id>)
        self.library = library
        self.router = router
        self.clock = clock
        self.node_id: str = router.node_id
        self.keys = router.cluster.keys
        self.scripts = scripts if scripts is not None else DoorScripts(router.cluster.conns)
        self.ttl_ms, self.tick, self.ask_timeout = ttl_ms, tick, ask_timeout
        self.value = self._new_value()  # this process's claim (a new one after each suspend)
        self._dropping: set[str] = set()  # old claims to let go of (they expire anyway)
        self._epoch = 0  # suspends so far (a take-over a suspend overtook is undone)
        self.holder: str | None = None  # the lease's value as last read
        self.ready = False  # this node is the desk and has taken the tickets over
        self._sids = count(1)
        self._local: dict[str, tuple[str, IOperatorSink]] = {}  # sid -> this node's sockets
        self._sid_of: dict[int, str] = {}  # id(sink) -> sid
        self._remote: dict[str, tuple[str, RemoteSink]] = {}  # the desk: other nodes' sockets
        self._asks: dict[str, defer.Deferred[Any]] = {}
        self._loop: task.LoopingCall | None = None
        self._ticking = False
        router.placement = self
        router.handle("desk+", self._on_connected)
        router.handle("desk-", self._on_gone)
        router.handle("desk>", self._on_sink_event)
        router.handle("desk!", self._on_event)
        router.handle("desk?", self._on_assigned)
        router.handle("desk=", self._on_answer)
        router.on_dead(self._node_dead)
        router.on_lease_lost(self._lease_lost)

    # -- who is the desk -----------------------------------------------------------

    def _new_value(self) -> str:
        return f"{self.node_id} {uuid.uuid4().hex[:12]}"

    @property
    def holds_desk(self) -> bool:
        """This node is the desk, or holds the desk lease (taking over)."""
        return self.ready or self.holder == self.value

    @property
    def desk_node(self) -> str | None:
        return self.holder.split(" ", 1)[0] if self.holder else None

    def start(self) -> None:
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = self.clock
        self._loop.start(self.tick, now=True)

    @defer.inlineCallbacks
    def stop(self) -> Any:
        """A clean stop lets go of the lease at once (the runtime kept its
        tickets in the book; the next desk takes them)."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self.ready = False
        if self.holder == self.value:
            self._dropping.add(self.value)
        yield self._let_go(warn=True)

    @defer.inlineCallbacks
    def _let_go(self, warn: bool = False) -> Any:
        """Drop the desk lease if one of this process's old claims holds it."""
        for value in sorted(self._dropping):
            try:
                yield self.scripts.call("desk_drop", [self.keys.desk_lease], [value])
                self._dropping.discard(value)
            except Exception as e:  # noqa: BLE001 - it expires on its own
                if warn:
                    log.warn("operator desk: could not let go of the lease: {why}",
                             why=str(e))

    @defer.inlineCallbacks
    def _tick(self) -> Any:
        """Refresh (or take) the lease; act on a change of holder. Never raises.
        While the router does not serve, this node is not the desk: it lets go
        of the lease (an old claim's value, see :meth:`_suspend`), never
        refreshes nor takes it, and never takes over."""
        if self._ticking:
            return
        self._ticking = True
        try:
            if not self.router.ready and self.holds_desk:
                self._suspend()  # (the router's on_lease_lost did, unless it was not lost)
            if self._dropping:
                yield self._let_go()
            may = "1" if self.router.ready else "0"
            value = yield self.scripts.call("desk_lease", [self.keys.desk_lease],
                                            [self.value, self.ttl_ms, may])
            value = _text(value)
            if value == self.value and not self.router.ready:
                self.holder = value  # taken as the node lost its lease: let it go
                self._suspend()
            elif value != self.holder:
                yield self._changed(self.holder, value)
            elif value == self.value and not self.ready:
                yield self._became_desk(None)  # the take-over failed: again
            elif self.ready and self.runtime.kept():
                yield self._claim_kept()
            if self.holder != self.value:  # sockets registered here by an old view
                self._remote.clear()  # (their nodes register them with the desk they see)
        except Exception as e:  # noqa: BLE001 - the next tick tries again
            log.info("operator desk: lease check failed: {why}", why=str(e) or type(e).__name__)
        finally:
            self._ticking = False

    @defer.inlineCallbacks
    def _changed(self, old: str | None, new: str | None) -> Any:
        self.holder = new
        log.info("operator desk: now on {node}", node=self.desk_node or "no node")
        if old == self.value:  # lost it while serving (Redis trouble, a pause)
            yield self._hand_over(self._suspend())
        if new == self.value:
            yield self._became_desk(old)
        elif new is not None:
            for sid, (operator_id, _) in list(self._local.items()):
                self.router.send(self.desk_node, {"t": "desk+", "from": self.node_id,
                                                  "op": operator_id, "sid": sid})

    def _suspend(self) -> list[str]:
        """Stop being the desk, every ticket kept in the book for the next
        desk (this node again, or another): the runtime's instances end as at
        a clean stop and it forgets its state (``OperatorRuntime.suspend``),
        the book its mirror and its unacknowledged writes
        (``RedisOperatorBook.forget``: the next desk may adopt its hash), the
        desk the other nodes' sockets (they register them with the desk they
        see next). Nobody is told: operators get the next desk's 3100 and
        3101s. The claim this process held is let go of at the next ticks and
        a new one made, so a later take by this node is a change every node
        sees. Returns the dialogs whose instances ended."""
        self._epoch += 1
        self.ready = False
        held = self.runtime.suspend()
        self.book.forget()
        self._remote.clear()
        self._dropping.add(self.value)
        self.value = self._new_value()
        log.info("operator desk: this node is no longer the desk; {n} dialogs and every "
                 "ticket left for the next desk", n=len(held))
        return held

    @defer.inlineCallbacks
    def _hand_over(self, dialogs: list[str]) -> Any:
        """The desk lease moved while this node serves: its router lets go of
        the desk's dialogs (written, forgotten, released) for the new desk to
        claim. One that fails is freed by its next event (forwarded here, it
        is placed on the desk) or by the end of this node's lease."""
        def failed(f: Any, dialog_id: str) -> None:
            log.warn("operator desk: could not hand {dialog_id} over: {why}",
                     dialog_id=dialog_id, why=f.getErrorMessage())
        yield defer.DeferredList([
            self.router.hand_over(d, "with the operator desk").addErrback(failed, d)
            for d in dialogs])

    @defer.inlineCallbacks
    def _became_desk(self, old: str | None) -> Any:
        taken = yield self._take_over(old)
        if not taken:
            return
        for operator_id, sink in list(self._local.values()):
            self.runtime.operator_connected(operator_id, sink)
        for operator_id, remote in list(self._remote.values()):  # registered meanwhile
            self.runtime.operator_connected(operator_id, remote)
        yield self._claim_kept()

    @defer.inlineCallbacks
    def _take_over(self, old: str | None) -> Any:
        """This node became the desk: every other node's tickets into its book,
        kept for their dialogs, which are claimed (and so resumed) here.
        False if a suspend came meanwhile (what was read is forgotten)."""
        epoch = self._epoch
        nodes = yield self.router.cluster.nodes()
        if old is not None:
            nodes.add(old.split(" ", 1)[0])
        yield self.book.fetch()  # this node's own, from an earlier turn as the desk
        taken = list(self.book.load())
        for node in sorted(nodes - {self.node_id}):
            got = yield self.book.adopt(node)
            taken.extend(got)
        taken.sort(key=lambda t: t["rank"])
        if epoch != self._epoch:  # the adopted tickets are in this node's hash
            self.book.forget()
            return False
        self.runtime.keep(taken)
        self.ready = True
        log.info("operator desk: this node is the desk; took over {n} tickets", n=len(taken))
        return True

    @defer.inlineCallbacks
    def _claim_kept(self) -> Any:
        """Claim the dialogs of kept tickets (resumed when won); a dialog won
        without its ticket being resumed had ended: its ticket goes."""
        for dialog_id in self.runtime.kept():
            try:
                yield self.router.adopt(dialog_id)
            except Exception as e:  # noqa: BLE001 - the next tick tries again
                log.info("operator desk: cannot claim {dialog_id} yet: {why}",
                         dialog_id=dialog_id, why=str(e) or type(e).__name__)
                continue
            if self.router.store.owns(dialog_id):
                self.runtime.forget_kept(dialog_id)
        self.runtime.settle_kept()

    def _lease_lost(self) -> None:
        """The router's ``on_lease_lost``: before it forgets its dialogs (and
        so stops their instances, which would drop their tickets)."""
        if self.holds_desk:
            self._suspend()

    def _node_dead(self, node: str) -> Any:
        """The desk forgets the sockets of a dead node (their operators have
        30 s to come back through another node)."""
        for sid, (operator_id, remote) in list(self._remote.items()):
            if remote.node == node:
                del self._remote[sid]
                self.runtime.operator_gone(operator_id, remote)

    # -- placement (ClusterRouter.placement) -------------------------------------

    def _is_operators(self, name: str | None) -> bool:
        program = self.library.programs().get(name) if name else None
        return program is not None and program.runtime == OPERATORS

    def _the_desk(self) -> str:
        if self.ready:
            return self.node_id
        node = self.desk_node
        if node is None or node == self.node_id or node in self.router.dead:
            raise Unavailable("no operator desk now; send it again")
        return node

    def route(self, engine: Any, up: Any, event: dict[str, Any]) -> str | None:
        """The node a user message must be routed by (None: any)."""
        info = engine.info(event["dialog_id"])
        if info is not None and info.state == FOREGROUND:
            return None
        intent = event.get("intent") or (info.intent if info is not None else None)
        program = self.library.resolve(event["messages"]["content"], intent)
        fallback = getattr(up, "fallback", None)  # a platform app's (section 10)
        if program is None and intent is None and fallback:
            program = self.library.programs().get(fallback)
        if program is None or program.runtime != OPERATORS:
            return None
        return self._the_desk()

    def recovered(self, record: Any) -> str | None:
        """The node that must recover a dialog just claimed (None: any)."""
        last = record.messages[-1].get("event_type") if record.messages else None
        bound = record.state == FOREGROUND or (
            last == codes.USER_MESSAGE and record.program is not None and record.state == OPEN)
        if not bound or not self._is_operators(record.program):
            return None
        return self._the_desk()

    # -- IOperatorDesk (the web door of this node) --------------------------------

    def operator_connected(self, operator_id: str, sink: IOperatorSink) -> None:
        sid = f"{self.node_id}/{next(self._sids)}"
        self._local[sid] = (operator_id, sink)
        self._sid_of[id(sink)] = sid
        if self.ready:
            self.runtime.operator_connected(operator_id, sink)
        elif self.desk_node is not None and self.desk_node != self.node_id:
            self.router.send(self.desk_node, {"t": "desk+", "from": self.node_id,
                                              "op": operator_id, "sid": sid})
        # else: registered when a desk appears (_changed)

    def operator_gone(self, operator_id: str, sink: IOperatorSink) -> None:
        sid = self._sid_of.pop(id(sink), None)
        if sid is None:
            return
        self._local.pop(sid, None)
        if self.ready:
            self.runtime.operator_gone(operator_id, sink)
        elif self.desk_node is not None and self.desk_node != self.node_id:
            self.router.send(self.desk_node, {"t": "desk-", "op": operator_id, "sid": sid})

    def operator_event(self, operator_id: str, event: dict[str, Any]) -> Any:
        if self.ready:
            return self.runtime.operator_event(operator_id, event)
        context = event.get("dialog_id") if isinstance(event.get("dialog_id"), str) else None
        failed = codes.error(codes.INTERNAL_ERROR, "the operator desk did not answer; "
                             "not recorded, send it again", dialog_id=context)
        try:
            node = self._the_desk()
        except Unavailable:
            return failed
        d = self._ask(node, {"t": "desk!", "op": operator_id, "e": event}, failed)
        return d.addCallback(lambda a: a if a != {} else None)

    def assigned_to(self, dialog_id: str) -> Any:
        if self.ready:
            return self.runtime.assigned_to(dialog_id)
        try:
            node = self._the_desk()
        except Unavailable:
            return None
        return self._ask(node, {"t": "desk?", "d": dialog_id}, None)

    def _ask(self, node: str, message: dict[str, Any], otherwise: Any) -> "defer.Deferred[Any]":
        req = uuid.uuid4().hex
        d: defer.Deferred[Any] = defer.Deferred()
        self._asks[req] = d

        def expired() -> None:
            if self._asks.pop(req, None) is d:
                log.warn("operator desk: node {node} did not answer in {s}s", node=node,
                         s=self.ask_timeout)
                d.callback(otherwise)
        timer = self.clock.callLater(self.ask_timeout, expired)

        def answered(result: Any) -> Any:
            if timer.active():
                timer.cancel()
            return result
        d.addBoth(answered)
        self.router.send(node, {**message, "id": req, "from": self.node_id})
        return d

    # -- inbox messages ----------------------------------------------------------

    def _on_connected(self, m: dict[str, Any]) -> None:
        """Kept even while this node does not know it holds the lease: the
        sender saw it take it before this node read its own script's answer.
        Registered with the runtime once the take-over is done
        (:meth:`_became_desk`); forgotten at the next tick otherwise."""
        old = self._remote.pop(m["sid"], None)
        if old is not None and self.ready:
            self.runtime.operator_gone(old[0], old[1])
        sink = RemoteSink(self, m["from"], m["sid"])
        self._remote[m["sid"]] = (m["op"], sink)
        if self.ready:  # else: once the take-over is done (_became_desk)
            self.runtime.operator_connected(m["op"], sink)

    def _on_gone(self, m: dict[str, Any]) -> None:
        found = self._remote.pop(m["sid"], None)
        if found is not None and self.ready:
            self.runtime.operator_gone(found[0], found[1])

    def _on_sink_event(self, m: dict[str, Any]) -> None:
        found = self._local.get(m["sid"])
        if found is not None:
            found[1].send_event(m["e"])
        elif "from" in m:  # a socket gone meanwhile, or registered by an old view
            self.router.send(m["from"], {"t": "desk-", "sid": m["sid"]})

    def _on_event(self, m: dict[str, Any]) -> None:
        if self.ready:
            answer = self.runtime.operator_event(m["op"], m["e"])
        else:
            answer = codes.error(codes.INTERNAL_ERROR, "the operator desk moved; send it again")
        self.router.send(m["from"], {"t": "desk=", "id": m["id"],
                                     "a": answer if answer is not None else {}})

    def _on_assigned(self, m: dict[str, Any]) -> None:
        who = self.runtime.assigned_to(m["d"]) if self.ready else None
        self.router.send(m["from"], {"t": "desk=", "id": m["id"], "a": who})

    def _on_answer(self, m: dict[str, Any]) -> None:
        d = self._asks.pop(m.get("id", ""), None)
        if d is not None:
            d.callback(m.get("a"))


__all__ = ["ClusterDesk", "RemoteSink"]
