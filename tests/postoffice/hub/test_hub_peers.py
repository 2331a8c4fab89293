"""The hub's IHubPeers seam (``--redis``): the hub asks its peers only about
what is not on its own node, in the order that closes the connect/queue race
(register before reading the queue; look again after queueing). The real
peers (libchat.cluster.postoffice.HubPeers) run end to end in
tests/postoffice/test_cluster_twistd.py."""
from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from zope.interface import implementer
from zope.interface.verify import verifyObject

from libchat.cluster.keys import Keys
from libchat.cluster.postoffice import REFRESH, HubPeers
from libchat.doors.postoffice.hub import Hub
from libchat.doors.postoffice.seam import IHubPeers

from .test_hub import Conn, Listener, env


@implementer(IHubPeers)
class FakePeers:
    """Another node holding ``remote`` clients; records what the hub asked."""

    def __init__(self, remote: tuple[str, ...] = ()) -> None:
        self.remote = set(remote)
        self.calls: list[tuple[Any, ...]] = []

    def clients(self) -> list[str]:
        return sorted(self.remote)

    def attached(self, client_id: str) -> None:
        self.calls.append(("attached", client_id))

    def detached(self, client_id: str) -> None:
        self.calls.append(("detached", client_id))

    def where(self, client_id: str) -> str | None:
        return "far" if client_id in self.remote else None

    def forward(self, sender: str, target: str, raw: str, kind: str, subject: Any) -> bool:
        self.calls.append(("forward", target, raw))
        return target in self.remote

    def queued(self, target: str) -> None:
        self.calls.append(("queued", target))

    def send(self, message: dict[str, Any], raw: str) -> bool:
        self.calls.append(("send", message["to"]))
        return message["to"] in self.remote

    def sent_from(self, address: str) -> None:
        self.calls.append(("sent_from", address))

    def internal(self, message: dict[str, Any], raw: str, target: str) -> bool:
        self.calls.append(("internal", target))
        return False

    def bounce(self, sender: str, frame: str) -> None:
        self.calls.append(("bounce", sender))


class Router:
    node_id = "n1"
    live = {"n1"}
    dead: set[str] = set()

    def handle(self, kind: str, fn: Any) -> None:
        pass

    def on_dead(self, fn: Any) -> None:
        pass


def test_fakes_and_the_real_peers_provide_ihubpeers() -> None:
    verifyObject(IHubPeers, FakePeers())
    verifyObject(IHubPeers, HubPeers(Hub(Clock()), Router(), conns=None,  # type: ignore[arg-type]
                                     keys=Keys(), scripts=object()))


def test_the_hub_asks_its_peers_only_about_what_is_not_here() -> None:
    hub = Hub(Clock(), offline_ttl=30)
    peers = FakePeers(remote=("/svc/far",))
    hub.peers = peers
    a, b = Conn("/svc/a"), Conn("/svc/b")
    hub.attach(a, None)
    hub.attach(b, None)
    assert peers.calls == [("attached", "/svc/a"), ("attached", "/svc/b")]
    peers.calls.clear()
    near = env("/svc/a", "/svc/b")
    hub.receive(a, near)
    assert b.sent == [near] and peers.calls == []
    far = env("/svc/a", "/svc/far")
    hub.receive(a, far)
    assert peers.calls == [("forward", "/svc/far", far)] and len(hub.queue) == 0
    peers.calls.clear()
    hub.receive(a, env("/svc/a", "/svc/nowhere"))  # connected nowhere: queued, then looked up
    assert peers.calls[-1] == ("queued", "/svc/nowhere") and len(hub.queue) == 1
    assert sorted(hub.clients()) == ["/svc/a", "/svc/b", "/svc/far"]
    assert hub.send({"from": "/libchat/dialog/d", "to": "/svc/far"}) is True
    assert hub.send({"from": "/libchat/dialog/d", "to": "/svc/b"}) is True
    assert ("sent_from", "/libchat/dialog/d") in peers.calls
    hub.bounce("/svc/far", "/svc/x", "s", "why")  # a sender of another node
    assert peers.calls[-1] == ("bounce", "/svc/far")
    hub.detach(b)
    assert peers.calls[-1] == ("detached", "/svc/b")
    hub.stop()


def test_an_internal_address_goes_to_the_listener_when_the_peers_decline() -> None:
    hub = Hub(Clock())
    peers = FakePeers()
    hub.peers = peers
    listener = Listener()
    hub.listen("/libchat/", listener)
    a = Conn("/svc/a")
    hub.attach(a, None)
    raw = env("/svc/a", "/libchat/dialog/x")
    hub.receive(a, raw)
    assert ("internal", "/libchat/dialog/x") in peers.calls
    assert ("envelope", raw) in listener.heard
    hub.stop()


def test_replaced_elsewhere_closes_without_telling_listeners_and_drain_takes_again() -> None:
    hub = Hub(Clock(), offline_ttl=30)
    hub.peers = FakePeers()
    listener = Listener()
    hub.listen("/libchat/", listener)
    a, b = Conn("/svc/a"), Conn("/svc/b")
    hub.attach(a, None)
    hub.peers = None  # queue for b as on one node
    queued = env("/svc/a", "/svc/b")
    hub.receive(a, queued)
    hub.peers = FakePeers()
    hub.attach(b, None)
    assert b.sent == [queued]
    late = env("/svc/a", "/svc/late")
    hub.queue.offer("/svc/b", "/svc/a", "s", late, 99.0)  # queued by another node meanwhile
    hub.drain("/svc/b")
    assert b.sent == [queued, late]
    hub.replaced_elsewhere("/svc/b")
    assert b.closed is not None and "/svc/b" not in hub.conns
    hub.detach(b)  # its close: nobody is told it went
    assert ("gone", "/svc/b") not in listener.heard
    hub.stop()


class Sends(Router):
    def __init__(self) -> None:
        self.live = {"n1", "n2"}
        self.dead: set[str] = set()
        self.sent: list[tuple[str, Any]] = []

    def send(self, node: str, message: dict[str, Any]) -> None:
        self.sent.append((node, message.get("raw")))


def test_envelopes_follow_a_target_to_the_node_it_just_left() -> None:
    """Envelopes already forwarded to node n2 are queued there if the target
    left it; the next ones go there too for a while (n2 queues them behind
    the earlier ones) instead of being queued from here, which could pass them."""
    clock = Clock()
    router = Sends()
    peers = HubPeers(Hub(clock), router, conns=None,  # type: ignore[arg-type]
                     keys=Keys(), scripts=object())
    peers._on({"c": "/svc/b", "n": "n2"})
    assert peers.forward("/svc/a", "/svc/b", "e0", "msg", "s")
    peers._off({"c": "/svc/b", "n": "n2"})  # it left n2
    assert peers.where("/svc/b") is None
    assert peers.forward("/svc/a", "/svc/b", "e1", "msg", "s")
    assert router.sent == [("n2", "e0"), ("n2", "e1")]
    clock.advance(REFRESH + 0.1)  # long enough: queued from here
    assert not peers.forward("/svc/a", "/svc/b", "e2", "msg", "s")
    peers._on({"c": "/svc/c", "n": "n2"})
    assert peers.forward("/svc/a", "/svc/c", "e3", "msg", "s")
    peers._off({"c": "/svc/c", "n": "n2"})
    router.dead.add("n2")  # nor to a dead node
    assert not peers.forward("/svc/a", "/svc/c", "e4", "msg", "s")
    assert router.sent[-1] == ("n2", "e3")
