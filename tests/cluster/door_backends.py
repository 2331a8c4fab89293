"""The two backends the door-store contracts run on: the verified fakes on a
:class:`FakeRedis` world, and the Redis implementations on a private
redis-server. Each hands out per-node stores sharing one world/server."""

from __future__ import annotations

import time
from typing import Any

import pytest_twisted
from twisted.internet import defer, reactor, task

from libchat.cluster.connect import RedisConnections, parse_redis
from libchat.cluster.dedupe import RedisCallbackBook
from libchat.cluster.keys import Keys
from libchat.cluster.testing import FakeRedis
from libchat.cluster.offline import DoorScripts, RedisOfflineQueue
from libchat.cluster.outbox import RedisOutbox
from libchat.cluster.testing_doors import (FakeCallbackBook, FakeDeskScripts, FakeOfflineQueue,
                                           FakeOutbox)

from .redis_server import RedisServer


class DoorBackend:
    """``clock`` is what a store's expiry runs on (a ``task.Clock`` or the reactor)."""

    clock: Any
    keys = Keys()

    def callbacks(self, node: int = 0, ttl_ms: int | None = None) -> Any:
        raise NotImplementedError

    def offline(self, node: int = 0, bound: int = 1000) -> Any:
        raise NotImplementedError

    def outbox(self, node_id: str, node: int = 0) -> Any:
        """The platform outbox of ``node_id`` (a new object: a restart)."""
        raise NotImplementedError

    def desk_scripts(self, node: int = 0) -> Any:
        """The operator desk's scripts (``desk_lease``, ``desk_drop``) as node
        ``node`` calls them."""
        raise NotImplementedError

    def hold_lease(self, node_id: str) -> defer.Deferred[None]:
        """``node_id`` holds its lease (it is alive, or back)."""
        raise NotImplementedError

    def land_unconfirmed(self, app: str, key: str) -> defer.Deferred[None]:
        """A first taker's write landed but its answer was lost (it answered 503)."""
        raise NotImplementedError

    def pass_time(self, seconds: float) -> defer.Deferred[None]:
        """Fires once ``seconds`` have passed on the stores' clock."""
        raise NotImplementedError

    def outage(self) -> None:
        raise NotImplementedError

    def recover(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class FakeDoorBackend(DoorBackend):
    def __init__(self) -> None:
        self.world = FakeRedis(task.Clock())
        self.clock = self.world.clock

    def callbacks(self, node: int = 0, ttl_ms: int | None = None) -> Any:
        return FakeCallbackBook(self.world, **({} if ttl_ms is None else {"ttl_ms": ttl_ms}))

    def offline(self, node: int = 0, bound: int = 1000) -> Any:
        return FakeOfflineQueue(self.world, bound)

    def outbox(self, node_id: str, node: int = 0) -> Any:
        return FakeOutbox(self.world, node_id)

    def desk_scripts(self, node: int = 0) -> Any:
        return FakeDeskScripts(self.world)

    def hold_lease(self, node_id: str) -> defer.Deferred[None]:
        self.world.leases[node_id] = ("inc", self.world.clock.seconds() + 60)
        return defer.succeed(None)

    def land_unconfirmed(self, app: str, key: str) -> defer.Deferred[None]:
        book = FakeCallbackBook(self.world)
        book.lose_answers = True
        d = book.accept(app, key, "d", None)
        return d.addErrback(lambda f: None)

    def pass_time(self, seconds: float) -> defer.Deferred[None]:
        self.world.clock.advance(seconds)
        return defer.succeed(None)

    def outage(self) -> None:
        self.world.down = True

    def recover(self) -> None:
        self.world.down = False


class RealDoorBackend(DoorBackend):
    """Node i uses connection set i % 2 of one private redis-server."""

    def __init__(self, server: RedisServer, prefix: str = "t:") -> None:
        self.server = server
        self.keys = Keys(prefix)
        self.clock = reactor
        self.conns = [RedisConnections(reactor, parse_redis(server.endpoint), timeout=1.0)
                      for _ in range(2)]
        pytest_twisted.blockon(defer.gatherResults([c.ready() for c in self.conns]))

    def callbacks(self, node: int = 0, ttl_ms: int | None = None) -> Any:
        return RedisCallbackBook(self.conns[node % 2], self.keys,
                                 **({} if ttl_ms is None else {"ttl_ms": ttl_ms}))

    def offline(self, node: int = 0, bound: int = 1000) -> Any:
        return RedisOfflineQueue(self.conns[node % 2], self.keys, bound, clock=reactor)

    def outbox(self, node_id: str, node: int = 0) -> Any:
        return RedisOutbox(self.conns[node % 2], self.keys, node_id, reactor)

    def desk_scripts(self, node: int = 0) -> Any:
        return DoorScripts(self.conns[node % 2])

    def hold_lease(self, node_id: str) -> defer.Deferred[None]:
        d = self.conns[0].call("SET", self.keys.lease(node_id), b"inc", "PX", 60000)
        return d.addCallback(lambda _: None)

    def land_unconfirmed(self, app: str, key: str) -> defer.Deferred[None]:
        d = self.conns[0].call("SET", self.keys.callback(app, key), b"p", "NX", "PX", 60000)
        return d.addCallback(lambda _: None)

    @defer.inlineCallbacks
    def pass_time(self, seconds: float) -> Any:
        # waiting for a Redis PX expiry is itself the condition under test
        yield task.deferLater(reactor, seconds, lambda: None)

    def outage(self) -> None:
        self.server.kill9()

    def recover(self) -> None:
        self.server.restart()

    def close(self) -> None:
        pytest_twisted.blockon(defer.gatherResults([c.disconnect() for c in self.conns]))


@defer.inlineCallbacks
def retried(call: Any, within: float = 10.0) -> Any:
    """``call()`` until it stops failing with ``Unavailable`` (Redis coming back)."""
    from libchat.interfaces import Unavailable
    deadline = time.monotonic() + within
    while True:
        try:
            return (yield call())
        except Unavailable:
            if time.monotonic() > deadline:
                raise
            yield task.deferLater(reactor, 0.05, lambda: None)
