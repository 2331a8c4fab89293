"""Post-office envelopes across nodes (CONTRACT §12 under §14; docs/scaleout.md
"Post-office envelopes across nodes").

:class:`HubPeers` is the hub's :class:`~libchat.doors.postoffice.seam.IHubPeers`
on a cluster node. Where each client is connected: the registry hash
``Keys.postoffice_at`` (clientID -> node id; ``po_at`` on connect returns the
node it was on before, which closes its older connection; ``po_off`` on
disconnect removes the entry only if it still names this node), mirrored in
every node's memory (:attr:`HubPeers.at`) by ``po-on``/``po-off`` messages to
every live node and a full read every :data:`REFRESH` seconds. An entry whose
node is dead (``router.dead``) is ignored, and dropped by ``on_dead``.

Node-to-node messages (``router.send``, the node's inbox stream, in order):

- ``po``: an envelope for a client of that node: delivered to its socket; not
  there any more: passed once to the node the mirror names, else queued in
  Redis as for an absent client (an envelope from an internal address is
  dropped instead: ``IHub.send`` never queues, and the runtime hears the
  client went from ``po-off``);
- ``po-i``: a client's envelope to an internal address (``/libchat/dialog/..``),
  sent to the node that last sent from that address (it remembers it from the
  ``po`` that carried it); unknown: to every live node (each listener ignores
  dialogs it does not hold);
- ``po-b``: an error frame (UNDELIVERABLE) for a sender connected there;
- ``po-d``: "take this client's queue again" (an envelope was queued for a
  client that had just connected there: the registry read after the queueing
  closes that race);
- ``po-on`` / ``po-off``: the mirror.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from twisted.application.internet import TimerService
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from libchat.cluster.connect import RedisConnections
from libchat.cluster.keys import Keys
from libchat.cluster.offline import DoorScripts
from libchat.doors.postoffice.hub import Hub, Routed, check_envelope
from libchat.doors.postoffice.seam import IHubPeers

log = Logger()

REFRESH = 5.0  # seconds between full reads of the registry (a lost po-on/po-off costs this)
MAX_ORIGINS = 100_000  # internal addresses remembered (LRU)
STICKY = REFRESH  # seconds a target's envelopes keep following it to the node it left
MAX_STICKY = 100_000  # targets remembered for that (LRU)
KINDS = ("po", "po-i", "po-b", "po-d", "po-on", "po-off")


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _remember(lru: "OrderedDict[str, Any]", key: str, value: Any, bound: int) -> None:
    """``lru[key] = value``, newest last, the oldest dropped past ``bound``."""
    lru[key] = value
    lru.move_to_end(key)
    if len(lru) > bound:
        lru.popitem(last=False)


def _pairs(reply: Any) -> dict[str, str]:
    if isinstance(reply, dict):
        return {_s(k): _s(v) for k, v in reply.items()}
    items = list(reply or [])
    return {_s(items[i]): _s(items[i + 1]) for i in range(0, len(items) - 1, 2)}


@implementer(IHubPeers)
class HubPeers:
    def __init__(self, hub: Hub, router: Any, conns: RedisConnections, keys: Keys,
                 scripts: Any = None) -> None:
        self.hub = hub
        self.router = router
        self.node_id: str = router.node_id
        self.conns = conns
        self.key = keys.postoffice_at
        self.scripts = scripts if scripts is not None else DoorScripts(conns)
        self.at: dict[str, str] = {}  # clientID -> node id, clients of other nodes
        self.origins: OrderedDict[str, str] = OrderedDict()  # internal address -> node
        # target -> (node, when) of the last envelope forwarded to it: when
        # the target leaves that node, later envelopes follow the earlier
        # ones there for a while (that node queues them all, in order)
        # instead of being queued from here, which could pass them
        self.sent_to: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self.forwarded = 0
        self._changes = 0  # mirror changes by message (a refresh read meanwhile is stale)
        self._dead_done: set[str] = set()
        self._loaded = False  # the scripts, so po_at runs before the queue read after it
        for kind, handler in (("po", self._po), ("po-i", self._internal), ("po-b", self._bounce),
                              ("po-d", self._drain), ("po-on", self._on),
                              ("po-off", self._off)):
            router.handle(kind, handler)
        router.on_dead(self._dead)

    # -- who is where ----------------------------------------------------------------

    def alive(self, node: str | None) -> bool:
        return node is not None and node != self.node_id and node not in self.router.dead

    def where(self, client_id: str) -> str | None:
        node = self.at.get(client_id)
        return node if self.alive(node) else None

    def others(self) -> list[str]:
        return sorted(n for n in self.router.live if self.alive(n))

    def _tell(self, message: dict[str, Any], also: str | None = None) -> None:
        nodes = self.others()
        if also is not None and self.alive(also) and also not in nodes:
            nodes.append(also)
        for node in nodes:
            self.router.send(node, message)

    def _forward(self, node: str, message: dict[str, Any]) -> None:
        self.forwarded += 1
        self.router.send(node, message)

    def _failed(self, f: Any, what: str) -> None:
        log.warn("postoffice: {what}: {why} (the registry refresh repairs it)", what=what,
                 why=f.getErrorMessage())

    # -- IHubPeers ---------------------------------------------------------------------

    def clients(self) -> list[str]:
        return [c for c, n in self.at.items() if self.alive(n)]

    def attached(self, client_id: str) -> None:
        self.at.pop(client_id, None)
        d = self.scripts.call("po_at", [self.key], [client_id, self.node_id])

        def told(old: Any) -> None:
            previous = None if old is None else _s(old)
            self._tell({"t": "po-on", "c": client_id, "n": self.node_id, "old": previous},
                       also=previous)
        d.addCallbacks(told, self._failed, errbackArgs=(f"registering {client_id}",))

    def detached(self, client_id: str) -> None:
        d = self.scripts.call("po_off", [self.key], [client_id, self.node_id])

        def told(removed: Any) -> None:
            if removed:
                self._tell({"t": "po-off", "c": client_id, "n": self.node_id})
        d.addCallbacks(told, self._failed, errbackArgs=(f"unregistering {client_id}",))

    def forward(self, sender: str, target: str, raw: str, kind: str, subject: Any) -> bool:
        node = self.where(target) or self._followed(target)
        if node is None:
            return False
        _remember(self.sent_to, target, (node, self.hub.clock.seconds()), MAX_STICKY)
        self._forward(node, {"t": "po", "c": target, "s": sender, "raw": raw, "k": kind,
                             "sub": subject, "h": 0})
        return True

    def _followed(self, target: str) -> str | None:
        """The node this node last forwarded to ``target`` to, if that was
        less than :data:`STICKY` seconds ago and the node is alive."""
        last = self.sent_to.get(target)
        if last is None:
            return None
        node, at = last
        if self.hub.clock.seconds() - at > STICKY or not self.alive(node):
            del self.sent_to[target]
            return None
        return node

    def queued(self, target: str) -> "defer.Deferred[Any]":
        d = self.conns.call("HGET", self.key, target)

        def found(node: Any) -> Any:
            where = None if node is None else _s(node)
            if where == self.node_id:
                self.hub.drain(target)
            elif self.alive(where):
                assert where is not None
                # the hub's next envelopes to the target follow this in that inbox
                return self.router.send(where, {"t": "po-d", "c": target})
            return None
        return d.addCallbacks(found, lambda f: None)  # it stays queued; the next connect takes it

    def send(self, message: dict[str, Any], raw: str) -> bool:
        target = message["to"]
        node = self.where(target) if isinstance(target, str) else None
        if node is None:
            return False
        self._forward(node, {"t": "po", "c": target, "s": message["from"], "raw": raw,
                             "k": message.get("type", "msg"), "sub": message.get("subject"),
                             "h": 0, "i": self.node_id})
        return True

    def sent_from(self, address: str) -> None:
        self._origin(address, self.node_id)

    def internal(self, message: dict[str, Any], raw: str, target: str) -> bool:
        node = self.origins.get(target)
        if node == self.node_id:
            return False
        if node is not None and self.alive(node):
            self._forward(node, {"t": "po-i", "a": target, "raw": raw})
            return True
        self._tell({"t": "po-i", "a": target, "raw": raw})
        return False

    def bounce(self, sender: str, frame: str) -> None:
        node = self.where(sender)
        if node is not None:
            self.router.send(node, {"t": "po-b", "c": sender, "f": frame})

    # -- what other nodes send ---------------------------------------------------------

    def _origin(self, address: str, node: str) -> None:
        _remember(self.origins, address, node, MAX_ORIGINS)

    def _po(self, m: dict[str, Any]) -> None:
        target = m["c"]
        if m.get("i"):
            self._origin(m["s"], m["i"])
        e = Routed(m["s"], target, m.get("k", "msg"), m.get("sub"), m["raw"])
        if self.hub.deliver_here(e):
            return
        node = self.where(target)
        if node is not None and not m.get("h"):
            self._forward(node, {**m, "h": 1})  # it moved on: once, after it
        elif m.get("i"):
            log.info("postoffice: {to} left this node; an envelope from {frm} is dropped "
                     "(internal addresses never queue)", to=target, frm=m["s"])
        else:
            self.hub.enqueue(e)

    def _internal(self, m: dict[str, Any]) -> None:
        address, raw = m["a"], m["raw"]
        try:
            message = check_envelope(raw)
        except ValueError:
            return
        for prefix, listener in list(self.hub.listeners.items()):
            if address.startswith(prefix):
                listener.envelope(message, raw)
                return

    def _bounce(self, m: dict[str, Any]) -> None:
        conn = self.hub.conns.get(m["c"])
        if conn is not None:
            conn.send(m["f"])

    def _drain(self, m: dict[str, Any]) -> None:
        self.hub.drain(m["c"])

    def _on(self, m: dict[str, Any]) -> None:
        client_id, node = m["c"], m["n"]
        if node == self.node_id:
            return
        self._changes += 1
        self._dead_done.discard(node)
        self.at[client_id] = node
        if m.get("old") == self.node_id:
            self.hub.replaced_elsewhere(client_id)
        for listener in list(self.hub.listeners.values()):
            listener.client_connected(client_id)

    def _off(self, m: dict[str, Any]) -> None:
        client_id, node = m["c"], m["n"]
        if self.at.get(client_id) != node:
            return
        self._changes += 1
        del self.at[client_id]
        self._gone(client_id)

    def _gone(self, client_id: str) -> None:
        if client_id in self.hub.conns:
            return
        for listener in list(self.hub.listeners.values()):
            listener.client_gone(client_id)

    @defer.inlineCallbacks
    def _dead(self, node: str) -> Any:
        """A node's lease is gone: its clients are gone (the runtime ends the
        dialogs bound to them) and its registry entries are removed."""
        for client_id in [c for c, n in self.at.items() if n == node]:
            del self.at[client_id]
            self._gone(client_id)
        if node in self._dead_done:
            return
        entries = _pairs((yield self.conns.call("HGETALL", self.key)))
        for client_id, where in entries.items():
            if where == node:
                yield self.scripts.call("po_off", [self.key], [client_id, node])
        self._dead_done.add(node)

    # -- the full read ------------------------------------------------------------------

    @defer.inlineCallbacks
    def refresh(self) -> Any:
        """Read the registry: the mirror catches up with lost messages, this
        node's clients are registered again if Redis lost them, and entries
        naming this node without a connection (a previous process) go."""
        try:
            if not self._loaded:
                yield self.scripts.load_all()
                self._loaded = True
            before = self._changes
            entries = _pairs((yield self.conns.call("HGETALL", self.key)))
            for client_id, node in entries.items():
                if node == self.node_id and client_id not in self.hub.conns:
                    yield self.scripts.call("po_off", [self.key], [client_id, node])
            for client_id in self.hub.conns:
                if entries.get(client_id) != self.node_id:
                    self.attached(client_id)
            if self._changes != before:
                return  # a po-on/po-off came in meanwhile: this read may be older
            fresh = {c: n for c, n in entries.items()
                     if n != self.node_id and c not in self.hub.conns}
            old, self.at = self.at, fresh
            for client_id in old:
                if client_id not in fresh:
                    self._gone(client_id)
            for client_id, node in fresh.items():
                if old.get(client_id) != node and self.alive(node):
                    for listener in list(self.hub.listeners.values()):
                        listener.client_connected(client_id)
        except Exception as e:  # noqa: BLE001 - the next refresh tries again
            log.info("postoffice: registry refresh failed: {why}",
                     why=str(e) or type(e).__name__)

    def service(self, clock: Any, every: float = REFRESH) -> TimerService:
        timer = TimerService(every, self.refresh)
        timer.clock = clock
        return timer


def plug(hub: Hub, node: Any, router: Any) -> HubPeers:
    """Make ``hub`` route across the cluster of ``node`` (in tap.py, once the
    router exists); the caller parents :meth:`HubPeers.service`."""
    peers = HubPeers(hub, router, node.conns, node.cluster.keys)
    hub.peers = peers
    return peers


__all__ = ["HubPeers", "plug", "REFRESH"]
