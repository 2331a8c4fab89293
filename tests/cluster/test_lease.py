"""The node lease: refreshed every 2 s, lost after 7 s without a refresh,
steady only after a full lease of successes; on a task.Clock over the fake,
and once against a real redis-server that is killed and restarted."""

from __future__ import annotations

import time
from typing import Any

import pytest_twisted
from twisted.internet import defer, reactor, task

from libchat.cluster.connect import RedisConnections, parse_redis
from libchat.cluster.interfaces import LeaseTaken, StaleFence
from libchat.cluster.keys import Keys
from libchat.cluster.lease import NodeLease, default_node_id
from libchat.cluster.store import RedisClusterStore
from libchat.cluster.testing import FakeClusterStore, FakeRedis

from .redis_server import RedisServer


class Events:
    def __init__(self) -> None:
        self.lost = 0
        self.healthy = 0

    def on_lost(self) -> None:
        self.lost += 1

    def on_healthy(self) -> None:
        self.healthy += 1


def make(world: FakeRedis | None = None, node_id: str = "a") -> tuple[NodeLease, FakeRedis, Events]:
    world = world or FakeRedis(task.Clock())
    ev = Events()
    lease = NodeLease(FakeClusterStore(world), node_id, world.clock,
                      on_lost=ev.on_lost, on_healthy=ev.on_healthy)
    return lease, world, ev


def test_the_default_node_id_is_host_pid_random() -> None:
    import os
    import socket
    a, b = default_node_id(), default_node_id()
    assert a.startswith(f"{socket.gethostname()}-{os.getpid()}-") and a != b


def test_start_takes_the_lease_and_refreshes_keep_it_past_its_ttl(logged: Any) -> None:
    lease, world, ev = make()
    lease.start()
    assert lease.healthy and world.holder("a") == lease.incarnation
    seconds(world, 60)  # far past the 10 s ttl
    assert world.holder("a") == lease.incarnation and lease.healthy
    assert ev.lost == 0 and lease.age == 0


def test_a_second_process_with_the_same_node_id_is_refused() -> None:
    first, world, _ = make()
    first.start()
    second, _, _ = make(world)
    f = second.start()
    assert isinstance(f.result.value, LeaseTaken)
    f.addErrback(lambda _: None)


def test_lost_after_seven_seconds_without_a_refresh_once_then_healthy_again(logged: Any) -> None:
    logged.allow("stops acknowledging")
    lease, world, ev = make()
    lease.start()
    world.down = True
    world.clock.advance(6.9)
    assert lease.healthy and ev.lost == 0
    world.clock.advance(0.1)
    assert lease.state == "lost" and ev.lost == 1
    world.clock.advance(0.9)  # 7.9 s: still inside the 10 s lease
    world.down = False
    world.clock.advance(0.1)  # the 8 s refresh succeeds: the lease was still ours
    assert lease.healthy and ev.healthy == 1 and ev.lost == 1
    assert world.holder("a") == lease.incarnation


def seconds(world: FakeRedis, n: int) -> None:
    """Let ``n`` seconds pass a heartbeat at a time (as a real clock would)."""
    for _ in range(n):
        world.clock.advance(1)


def test_steady_only_after_a_full_lease_of_successful_heartbeats(logged: Any) -> None:
    lease, world, _ = make()
    lease.start()
    seconds(world, 8)
    assert lease.healthy and not lease.steady
    seconds(world, 2)
    assert lease.steady
    world.down = True
    seconds(world, 2)  # one failed refresh breaks the run
    world.down = False
    assert lease.healthy and not lease.steady
    seconds(world, 2)
    assert not lease.steady
    seconds(world, 10)
    assert lease.steady


def test_a_lease_found_gone_is_retaken_under_a_new_incarnation_and_old_fences_die(
        logged: Any) -> None:
    logged.allow("stops acknowledging")
    logged.allow("was gone")
    lease, world, ev = make()
    lease.start()
    store = FakeClusterStore(world)
    old = lease.incarnation
    own = store.claim("d", "a", old).result
    world.down = True
    world.clock.advance(12)  # past the lease: it expired in "Redis"
    world.down = False
    assert ev.lost == 1 and world.holder("a") is None
    world.clock.advance(2)  # the refresh says "not ours": a new incarnation
    assert lease.incarnation != old and lease.state == "lost"
    world.clock.advance(2)  # ...which takes the lease again
    assert lease.healthy and world.holder("a") == lease.incarnation and ev.healthy == 1
    f = store.append("d", old, own.fence, b"from the old incarnation")
    assert isinstance(f.result.value, StaleFence)
    f.addErrback(lambda _: None)
    assert store.claim("d", "a", lease.incarnation).result.fence == own.fence + 1


def test_stop_drops_the_lease_so_survivors_need_not_wait() -> None:
    lease, world, _ = make()
    lease.start()
    lease.stop()
    assert world.holder("a") is None and lease.state == "stopped"
    world.clock.advance(10)
    assert world.holder("a") is None


@pytest_twisted.inlineCallbacks
def test_a_real_redis_killed_then_restarted_loses_then_regains_the_lease(
        redis_server: RedisServer, logged: Any) -> Any:
    logged.allow("stops acknowledging")
    logged.allow("was gone")
    conns = RedisConnections(reactor, parse_redis(redis_server.endpoint), timeout=0.2)
    ev = Events()
    lost, healthy = defer.Deferred(), defer.Deferred()
    lease = NodeLease(RedisClusterStore(conns, keys=Keys("t:")), "a", reactor,
                      on_lost=lambda: (ev.on_lost(), lost.callback(None)),
                      on_healthy=lambda: (ev.on_healthy(), healthy.callback(None)),
                      ttl=1.0, every=0.2, lost_after=0.7)
    try:
        yield lease.start()
        redis_server.kill9()
        started = time.monotonic()
        yield lost.addTimeout(5, reactor)
        assert 0.6 <= time.monotonic() - started < 2.0
        redis_server.restart()
        yield healthy.addTimeout(10, reactor)
        assert ev.lost == 1 and lease.healthy
        assert (yield RedisClusterStore(conns, keys=Keys("t:")).lease_holder("a")) == \
            lease.incarnation
    finally:
        yield lease.stop()
        yield conns.disconnect()
