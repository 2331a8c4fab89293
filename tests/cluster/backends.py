"""The two backends the cluster contracts run on: the verified in-memory fake
and a real redis-server. A backend hands out simulated nodes (a store, a bus,
a node id and an incarnation holding a lease) and knows how to let a lease
lapse, restart Redis, and cause an outage."""

from __future__ import annotations

import time
from typing import Any

import attrs
import pytest_twisted
from twisted.internet import defer, reactor, task

from libchat.cluster.bus import RedisBus
from libchat.cluster.connect import RedisConnections, parse_redis
from libchat.cluster.interfaces import IBus, IClusterStore
from libchat.cluster.keys import Keys
from libchat.cluster.lease import new_incarnation
from libchat.cluster.scripts import Scripts
from libchat.cluster.store import RedisClusterStore
from libchat.cluster.testing import FakeBus, FakeClusterStore, FakeRedis

from .redis_server import RedisServer


@attrs.define
class Node:
    node_id: str
    inc: str
    store: IClusterStore
    bus: IBus


class Backend:
    ttl_ms = 300  # a short lease, so expiry tests are fast on real time too

    def __init__(self) -> None:
        self.count = 0

    def store(self, i: int) -> IClusterStore:
        raise NotImplementedError

    def bus(self, i: int) -> IBus:
        raise NotImplementedError

    @defer.inlineCallbacks
    def node(self, name: str | None = None, ttl_ms: int | None = None) -> Any:
        """A node holding its lease (``ttl_ms``, default :attr:`ttl_ms`)."""
        self.count += 1
        node_id = name or f"n{self.count}"
        n = Node(node_id, new_incarnation(node_id), self.store(self.count), self.bus(self.count))
        yield n.store.acquire_lease(n.node_id, n.inc, ttl_ms or self.ttl_ms)
        return n

    def expire(self, node: Node) -> defer.Deferred[None]:
        """Fires once the node's lease has lapsed (it is no longer refreshed)."""
        raise NotImplementedError

    def restart(self) -> None:
        """Redis restarts (a crash, then the same data from the AOF)."""

    def outage(self) -> None:
        raise NotImplementedError

    def recover(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class FakeBackend(Backend):
    def __init__(self) -> None:
        super().__init__()
        self.world = FakeRedis(task.Clock())

    def store(self, i: int) -> IClusterStore:
        return FakeClusterStore(self.world)

    def bus(self, i: int) -> IBus:
        return FakeBus(self.world)

    def expire(self, node: Node) -> defer.Deferred[None]:
        self.world.clock.advance(self.ttl_ms / 1000)
        return defer.succeed(None)

    def outage(self) -> None:
        self.world.down = True

    def recover(self) -> None:
        self.world.down = False


class RealBackend(Backend):
    """Three nodes' worth of connections to one private redis-server; node i
    uses connection set i % 3 (so concurrent calls really race in Redis)."""

    def __init__(self, server: RedisServer, prefix: str = "t:") -> None:
        super().__init__()
        self.server = server
        self.keys = Keys(prefix)
        self.conns = [RedisConnections(reactor, parse_redis(server.endpoint), timeout=1.0)
                      for _ in range(3)]
        self.scripts = [Scripts(c) for c in self.conns]
        self.buses: list[RedisBus] = []
        self.bus_conns: list[RedisConnections] = []
        pytest_twisted.blockon(defer.gatherResults([c.ready() for c in self.conns]))

    def store(self, i: int) -> IClusterStore:
        return RedisClusterStore(self.conns[i % 3], self.scripts[i % 3], self.keys)

    def bus(self, i: int) -> IBus:
        # each node's bus has connections of its own: two listeners sharing a
        # blocking connection would wait behind each other's XREAD BLOCK
        conns = RedisConnections(reactor, parse_redis(self.server.endpoint), timeout=1.0)
        self.bus_conns.append(conns)
        b = RedisBus(conns, reactor, self.keys, block_ms=1000)
        self.buses.append(b)
        return b

    @defer.inlineCallbacks
    def expire(self, node: Node) -> Any:
        deadline = time.monotonic() + 5 * self.ttl_ms / 1000 + 2
        while (yield node.store.lease_holder(node.node_id)) is not None:
            assert time.monotonic() < deadline, "the lease did not lapse"
            yield task.deferLater(reactor, 0.02, lambda: None)

    def restart(self) -> None:
        self.server.kill9()
        self.server.restart()

    def outage(self) -> None:
        self.server.kill9()

    def recover(self) -> None:
        self.server.restart()

    def close(self) -> None:
        for b in self.buses:
            pytest_twisted.blockon(b.stop())
        pytest_twisted.blockon(defer.gatherResults(
            [c.disconnect() for c in self.conns + self.bus_conns]))
