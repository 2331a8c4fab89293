"""The hub on a queue that answers Deferreds (the verified fake of
:class:`libchat.cluster.offline.RedisOfflineQueue`, two hubs on one FakeRedis
world): queued on one node, delivered on connect to another, in order with
what is routed while the queue is being taken (and taken again); one
sender's envelopes stay in order behind an offer in flight; full and
unreachable queues tell the sender UNDELIVERABLE; expiry bounces once."""
from __future__ import annotations

from typing import Any, TypeVar

from twisted.internet import defer

from libchat.cluster.testing import FakeRedis
from libchat.cluster.testing_doors import FakeOfflineQueue
from libchat.doors.postoffice.hub import Hub, Routed

from .test_hub import Conn, Listener, env
from .test_hub_peers import FakePeers


def two_hubs(bound: int = 1000) -> tuple[FakeRedis, Hub, Hub]:
    world = FakeRedis()
    return (world, Hub(world.clock, offline_ttl=30, queue=FakeOfflineQueue(world, bound)),
            Hub(world.clock, offline_ttl=30, queue=FakeOfflineQueue(world, bound)))


def test_queued_on_one_node_is_delivered_on_connect_to_another_and_forgotten() -> None:
    world, ha, hb = two_hubs()
    a = Conn("/svc/a")
    ha.attach(a, None)
    first, second = env("/svc/a", "/svc/b", n=1), env("/svc/a", "/svc/b", n=2)
    ha.receive(a, first)
    ha.receive(a, second)
    assert a.sent == [] and ha.stats["queued_total"] == 2
    b = Conn("/svc/b")
    hb.attach(b, None)
    assert b.sent == [first, second]
    assert world.clock.seconds() == 0 and len(hb.queue) == 0
    ha.stop()
    hb.stop()


class HeldTake(FakeOfflineQueue):
    """A take the test answers (Redis being slow)."""

    held: defer.Deferred[Any] | None = None

    def take(self, target: str) -> defer.Deferred[list[dict[str, Any]]]:
        answer = super().take(target)
        self.held = defer.Deferred()
        self.held.addCallback(lambda _: answer)
        return self.held


def test_envelopes_routed_while_the_queue_is_taken_come_after_the_queued_ones() -> None:
    world = FakeRedis()
    queue = HeldTake(world)
    hub = Hub(world.clock, offline_ttl=30, queue=queue)
    a, b = Conn("/svc/a"), Conn("/svc/b")
    hub.attach(a, None)
    old, new = env("/svc/a", "/svc/b", n="old"), env("/svc/a", "/svc/b", n="new")
    hub.receive(a, old)
    hub.attach(b, None)
    hub.receive(a, new)
    assert b.sent == []
    assert queue.held is not None
    queue.held.callback(None)
    assert b.sent == [old, new]
    hub.receive(a, env("/svc/a", "/svc/b", n="direct"))
    assert len(b.sent) == 3 and len(queue) == 0
    hub.stop()


class HeldOffer(FakeOfflineQueue):
    """Offers the test answers, one by one (Redis being slow)."""

    def __init__(self, world: FakeRedis) -> None:
        super().__init__(world)
        self.held: list[tuple[defer.Deferred[bool], str]] = []

    def offer(self, target: str, sender: str, subject: Any, raw: str,
              expires: float) -> defer.Deferred[bool]:
        d: defer.Deferred[bool] = defer.Deferred()
        self.held.append((d, raw))
        return d.addCallback(lambda _: super(HeldOffer, self).offer(
            target, sender, subject, raw, expires))

    def answer(self, index: int = 0) -> str:
        d, raw = self.held.pop(index)
        d.callback(None)
        return raw


class TellingPeers(FakePeers):
    """Peers whose look after a queueing (``queued``) the test answers."""

    def __init__(self) -> None:
        super().__init__()
        self.told: list[defer.Deferred[None]] = []

    def queued(self, target: str) -> defer.Deferred[None]:
        super().queued(target)
        self.told.append(defer.Deferred())
        return self.told[-1]


Q = TypeVar("Q", bound=FakeOfflineQueue)


def held_hub(kind: type[Q], client_id: str) -> tuple[Q, Hub, Conn]:
    """A hub on a queue the test answers, one client attached."""
    queue = kind(FakeRedis())
    hub = Hub(queue.world.clock, offline_ttl=30, queue=queue)
    conn = Conn(client_id)
    hub.attach(conn, None)
    return queue, hub, conn


def test_an_envelope_routed_while_an_offer_is_in_flight_cannot_pass_it() -> None:
    """The target connects on another node while this node queues for it:
    the next envelopes wait until the queueing and the look after it are
    done (that node then takes the queue before it gets the next one)."""
    queue, hub, a = held_hub(HeldOffer, "/svc/a")
    hub.peers = peers = TellingPeers()
    first, second = env("/svc/a", "/svc/b", n=0), env("/svc/a", "/svc/b", n=1)
    hub.receive(a, first)  # /svc/b is connected nowhere this node knows of
    hub.receive(a, second)  # ... still: queued too, right behind it
    assert [raw for _, raw in queue.held] == [first, second]
    peers.remote.add("/svc/b")  # ... then it is (the other node's po-on)
    third, fourth = env("/svc/a", "/svc/b", n=2), env("/svc/a", "/svc/b", n=3)
    hub.receive(a, third)
    hub.receive(a, fourth)
    assert [c for c in peers.calls if c[0] == "forward"] == [("forward", "/svc/b", first)]
    assert [queue.answer() for _ in range(2)] == [first, second]
    assert peers.calls[-2:] == [("queued", "/svc/b")] * 2
    peers.told[0].callback(None)
    assert peers.calls[-1] == ("queued", "/svc/b")  # the other node is not told twice yet
    peers.told[1].callback(None)
    assert peers.calls[-2:] == [("forward", "/svc/b", third), ("forward", "/svc/b", fourth)]
    assert queue.held == [] and len(queue) == 2
    hub.stop()


def test_envelopes_to_a_target_connected_nowhere_are_queued_in_order_at_once() -> None:
    """Offers to one target are pipelined (one Redis connection keeps their
    order): a burst, or an outage, costs one round trip, not one each."""
    queue, hub, a = held_hub(HeldOffer, "/svc/a")
    sent = [env("/svc/a", "/svc/b", n=i) for i in range(3)]
    for raw in sent:
        hub.receive(a, raw)
    assert [raw for _, raw in queue.held] == sent
    assert [queue.answer() for _ in sent] == sent
    assert [i["raw"] for i in queue.state.queues["/svc/b"]] == sent
    b = Conn("/svc/b")
    hub.attach(b, None)
    assert b.sent == sent
    hub.stop()


def test_what_is_routed_during_a_take_to_be_taken_again_waits_for_the_second_take() -> None:
    """Another node queued for the client while its queue was being taken
    here (``drain`` during the take): what was routed meanwhile may be newer
    than that, so it comes after the second take."""
    queue, hub, b = held_hub(HeldTake, "/svc/b")  # its take answers [] (read before the other node queued)
    older, newer = env("/svc/a", "/svc/b", n="older"), env("/svc/a", "/svc/b", n="newer")
    queue.offer("/svc/b", "/svc/a", "s", older, 99.0)  # the other node's queueing
    hub.drain("/svc/b")  # its po-d
    hub.route_out(Routed("/svc/a", "/svc/b", "msg", "s", newer))  # then a forward
    assert queue.held is not None
    first, queue.held = queue.held, None
    first.callback(None)
    assert b.sent == []  # waiting for the second take
    assert queue.held is not None
    queue.held.callback(None)
    assert b.sent == [older, newer] and len(queue) == 0
    hub.stop()


def test_envelopes_waiting_for_a_take_are_queued_if_the_connection_goes() -> None:
    queue, hub, b = held_hub(HeldTake, "/svc/b")
    waiting = env("/svc/a", "/svc/b", n="waiting")
    hub.route_out(Routed("/svc/a", "/svc/b", "msg", "s", waiting))
    hub.route_out(Routed("/libchat/dialog/d", "/svc/b", "msg", "s", "internal"))
    hub.listen("/libchat/", Listener())
    hub.detach(b)
    assert queue.held is not None
    queue.held.callback(None)
    assert b.sent == [] and [i["raw"] for i in queue.state.queues["/svc/b"]] == [waiting]
    hub.stop()


def test_a_full_or_unreachable_queue_tells_the_sender_undeliverable(logged: Any) -> None:
    world, ha, _ = two_hubs(bound=1)
    a = Conn("/svc/a")
    ha.attach(a, None)
    ha.receive(a, env("/svc/a", "/svc/b"))
    ha.receive(a, env("/svc/a", "/svc/b"))
    world.down = True
    ha.receive(a, env("/svc/a", "/svc/c"))
    frames = a.frames()
    assert [f["code"] for f in frames] == ["UNDELIVERABLE", "UNDELIVERABLE"]
    assert "full" in frames[0]["error"] and "unavailable" in frames[1]["error"]
    assert ha.stats["queued_total"] == 1
    world.down = False
    ha.stop()


def test_an_expired_envelope_bounces_to_its_sender_once() -> None:
    world, ha, _ = two_hubs()
    a = Conn("/svc/a")
    ha.attach(a, None)
    ha.receive(a, env("/svc/a", "/svc/b"))
    world.clock.advance(29)
    assert a.sent == []
    world.clock.advance(2)  # the hub sweeps every second
    world.clock.advance(1)
    assert [f["code"] for f in a.frames()] == ["UNDELIVERABLE"]
    assert "offline_ttl" in a.frames()[0]["error"]
    ha.stop()
