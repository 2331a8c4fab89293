"""The hub on a queue that answers Deferreds (the verified fake of
:class:`libchat.cluster.offline.RedisOfflineQueue`, two hubs on one FakeRedis
world): queued on one node, delivered on connect to another, in order with
what is routed while the queue is being taken; full and unreachable queues
tell the sender UNDELIVERABLE; expiry bounces once."""
from __future__ import annotations

from typing import Any

from twisted.internet import defer

from libchat.cluster.testing import FakeRedis
from libchat.cluster.testing_doors import FakeOfflineQueue
from libchat.doors.postoffice.hub import Hub

from .test_hub import Conn, env


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
