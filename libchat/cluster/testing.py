"""Verified in-memory fakes of the cluster seams, for unit tests.

:class:`FakeRedis` is the shared world (one per simulated cluster, on a
``task.Clock``); each node gets its own :class:`FakeClusterStore` and
:class:`FakeBus` on it. They keep the same promises as the Redis
implementations (``tests/cluster/`` runs one contract against both), and
``world.down = True`` is an outage: every call fails with
:class:`RedisUnavailable`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import attrs
from twisted.internet import defer, task
from zope.interface import implementer

from libchat.cluster.interfaces import (Entry, IBus, IClusterStore, LeaseTaken, Ownership,
                                        RedisUnavailable, StaleFence, Then)
from libchat.cluster.keys import Keys

T = TypeVar("T")


@attrs.define
class _Dialog:
    node: str | None = None
    inc: str | None = None
    fence: int = 0
    seq: int = 0
    rec: bytes | None = None


class FakeRedis:
    """The state one Redis would hold, with PX expiry on ``clock``."""

    def __init__(self, clock: task.Clock | None = None) -> None:
        self.clock = clock or task.Clock()
        self.down = False
        self.leases: dict[str, tuple[str, float]] = {}
        self.node_ids: set[str] = set()
        self.owned: dict[str, set[str]] = {}
        self.dialogs: dict[str, _Dialog] = {}
        self.memory: dict[tuple[str, str], bytes] = {}
        self.kept: dict[str, list[bytes]] = {}
        self.upstreams: dict[str, set[str]] = {}
        self.logs: dict[str, list[bytes]] = {}
        self.inboxes: dict[str, list[str | bytes]] = {}
        self.listeners: dict[str, list[tuple[Callable[[str], object],
                                             Callable[[bytes], object] | None]]] = {}
        self.channels: dict[str, list[Callable[[bytes], object]]] = {}

    def holder(self, node_id: str) -> str | None:
        held = self.leases.get(node_id)
        if held is None or held[1] <= self.clock.seconds():
            self.leases.pop(node_id, None)
            return None
        return held[0]

    def post(self, node_id: str, payload: bytes) -> None:
        """A message into the node's inbox, handed to its listeners at once."""
        self.inboxes.setdefault(node_id, []).append(payload)
        for _, on_message in list(self.listeners.get(node_id, [])):
            if on_message is not None:
                _safely(on_message, payload)

    def run(self, fn: Callable[[], T]) -> defer.Deferred[T]:
        if self.down:
            return defer.fail(RedisUnavailable("redis: (fake) outage"))
        return defer.execute(fn)


@implementer(IClusterStore)
class FakeClusterStore:
    def __init__(self, world: FakeRedis) -> None:
        self.world = world
        self.keys = Keys()  # as RedisClusterStore's (the desk's fakes name keys by it)

    def acquire_lease(self, node_id: str, incarnation: str, ttl_ms: int) -> defer.Deferred[None]:
        w = self.world

        def op() -> None:
            if w.holder(node_id) not in (None, incarnation):
                raise LeaseTaken(f"node id {node_id} is in use by another live process")
            w.leases[node_id] = (incarnation, w.clock.seconds() + ttl_ms / 1000)
            w.node_ids.add(node_id)
        return w.run(op)

    def refresh_lease(self, node_id: str, incarnation: str, ttl_ms: int) -> defer.Deferred[bool]:
        w = self.world

        def op() -> bool:
            if w.holder(node_id) != incarnation:
                return False
            w.leases[node_id] = (incarnation, w.clock.seconds() + ttl_ms / 1000)
            return True
        return w.run(op)

    def drop_lease(self, node_id: str, incarnation: str) -> defer.Deferred[bool]:
        w = self.world

        def op() -> bool:
            if w.holder(node_id) != incarnation:
                return False
            del w.leases[node_id]
            return True
        return w.run(op)

    def lease_holder(self, node_id: str) -> defer.Deferred[str | None]:
        return self.world.run(lambda: self.world.holder(node_id))

    def claim(self, dialog_id: str, node_id: str, incarnation: str) -> defer.Deferred[Ownership]:
        w = self.world

        def op() -> Ownership:
            if w.holder(node_id) != incarnation:
                raise StaleFence(f"the lease of {node_id} is not held by this process")
            d = w.dialogs.setdefault(dialog_id, _Dialog())
            if d.inc == incarnation or (d.node is not None and w.holder(d.node) == d.inc):
                assert d.node is not None
                return Ownership(d.node, d.fence)
            if d.node is not None:
                w.owned.get(d.node, set()).discard(dialog_id)
            d.fence += 1
            d.node, d.inc = node_id, incarnation
            w.owned.setdefault(node_id, set()).add(dialog_id)
            return Ownership(node_id, d.fence)
        return w.run(op)

    def owner(self, dialog_id: str) -> defer.Deferred[Ownership | None]:
        def op() -> Ownership | None:
            d = self.world.dialogs.get(dialog_id)
            return None if d is None or d.node is None else Ownership(d.node, d.fence)
        return self.world.run(op)

    def _owned_by(self, dialog_id: str, incarnation: str, fence: int) -> _Dialog:
        d = self.world.dialogs.get(dialog_id)
        if d is None or d.inc != incarnation or d.fence != fence:
            raise StaleFence(f"not the owner under fence {fence}")
        assert d.node is not None
        if self.world.holder(d.node) != incarnation:
            raise StaleFence(f"the lease of {d.node} is gone")
        return d

    def append(self, dialog_id: str, incarnation: str, fence: int,
               data: bytes, record: bytes = b"", then: Then | None = None) -> defer.Deferred[int]:
        def op() -> int:
            d = self._owned_by(dialog_id, incarnation, fence)
            d.seq += 1
            self.world.logs.setdefault(dialog_id, []).append(bytes(data))
            if record:
                d.rec = bytes(record)
            if then is not None and then.seq == d.seq:
                self.world.post(then.node, bytes(then.payload))
            return d.seq
        return self.world.run(op)

    def put_record(self, dialog_id: str, incarnation: str, fence: int,
                   record: bytes) -> defer.Deferred[None]:
        def op() -> None:
            self._owned_by(dialog_id, incarnation, fence).rec = bytes(record)
        return self.world.run(op)

    def get_record(self, dialog_id: str) -> defer.Deferred[tuple[bytes | None, int]]:
        def op() -> tuple[bytes | None, int]:
            d = self.world.dialogs.get(dialog_id)
            return (None, 0) if d is None else (d.rec, d.seq)
        return self.world.run(op)

    def memory_get(self, user_id: str, slot: str) -> defer.Deferred[bytes | None]:
        return self.world.run(lambda: self.world.memory.get((user_id, slot)))

    def memory_set(self, user_id: str, slot: str, value: bytes) -> defer.Deferred[None]:
        def op() -> None:
            self.world.memory[(user_id, slot)] = bytes(value)
        return self.world.run(op)

    def keep(self, channel: str, data: bytes) -> defer.Deferred[None]:
        return self.world.run(lambda: self.world.kept.setdefault(channel, []).append(bytes(data)))

    def take_kept(self, channel: str, count: int) -> defer.Deferred[list[bytes]]:
        def op() -> list[bytes]:
            kept = self.world.kept.get(channel, [])
            taken, kept[:count] = kept[:count], []
            return taken
        return self.world.run(op)

    def forget_node(self, node_id: str) -> defer.Deferred[None]:
        return self.world.run(lambda: self.world.node_ids.discard(node_id))

    def upstream_join(self, channel: str, node_id: str) -> defer.Deferred[None]:
        return self.world.run(lambda: self.world.upstreams.setdefault(channel, set()).add(node_id))

    def upstream_leave(self, channel: str, node_id: str) -> defer.Deferred[None]:
        return self.world.run(lambda: self.world.upstreams.get(channel, set()).discard(node_id))

    def upstream_nodes(self, channel: str) -> defer.Deferred[set[str]]:
        return self.world.run(lambda: set(self.world.upstreams.get(channel, ())))

    def read(self, dialog_id: str, after: int = 0, limit: int = 1000) -> defer.Deferred[list[Entry]]:
        def op() -> list[Entry]:
            log = self.world.logs.get(dialog_id, [])
            return [Entry(i + 1, data) for i, data in enumerate(log)][after:after + limit]
        return self.world.run(op)

    def last_seq(self, dialog_id: str) -> defer.Deferred[int]:
        def op() -> int:
            d = self.world.dialogs.get(dialog_id)
            return 0 if d is None else d.seq
        return self.world.run(op)

    def release(self, dialog_id: str, incarnation: str) -> defer.Deferred[bool]:
        w = self.world

        def op() -> bool:
            d = w.dialogs.get(dialog_id)
            if d is None or d.inc != incarnation:
                return False
            assert d.node is not None
            w.owned.get(d.node, set()).discard(dialog_id)
            d.node = d.inc = None
            return True
        return w.run(op)

    def owned(self, node_id: str) -> defer.Deferred[set[str]]:
        return self.world.run(lambda: set(self.world.owned.get(node_id, set())))

    def nodes(self) -> defer.Deferred[set[str]]:
        return self.world.run(lambda: set(self.world.node_ids))


def _safely(callback: Callable[..., object], *args: Any) -> None:
    from twisted.logger import Logger
    try:
        callback(*args)
    except Exception:
        Logger().failure("cluster: (fake) a bus callback failed")


@implementer(IBus)
class FakeBus:
    """Doorbells and messages are handed over at once (the fake's "network")."""

    def __init__(self, world: FakeRedis) -> None:
        self.world = world
        self._listening: tuple[str, Callable[[str], object],
                               Callable[[bytes], object] | None] | None = None
        self._loops: list[task.LoopingCall] = []
        self._subscribed: dict[str, Callable[[bytes], object]] = {}

    def ring(self, node_id: str, dialog_id: str) -> defer.Deferred[None]:
        def op() -> None:
            self.world.inboxes.setdefault(node_id, []).append(dialog_id)
            for listener, _ in list(self.world.listeners.get(node_id, [])):
                _safely(listener, dialog_id)
        return self.world.run(op)

    def send(self, node_id: str, payload: bytes) -> defer.Deferred[None]:
        return self.world.run(lambda: self.world.post(node_id, bytes(payload)))

    def listen(self, node_id: str, callback: Callable[[str], object],
               on_message: Callable[[bytes], object] | None = None) -> defer.Deferred[None]:
        assert self._listening is None, "already listening"
        self._listening = (node_id, callback, on_message)
        self.world.listeners.setdefault(node_id, []).append((callback, on_message))
        return defer.succeed(None)

    def on_reconcile(self, callback: Callable[[], object], every: float) -> None:
        loop = task.LoopingCall(_safely, callback)
        loop.clock = self.world.clock
        self._loops.append(loop)
        loop.start(every, now=False)

    def publish(self, channel: str, payload: bytes) -> defer.Deferred[int]:
        def op() -> int:
            listeners = list(self.world.channels.get(channel, []))
            for listener in listeners:
                _safely(listener, payload)
            return len(listeners)
        return self.world.run(op)

    def subscribe(self, channel: str, callback: Callable[[bytes], object]) -> defer.Deferred[None]:
        def op() -> None:
            self.unsubscribe_now(channel)
            self._subscribed[channel] = callback
            self.world.channels.setdefault(channel, []).append(callback)
        return self.world.run(op)

    def unsubscribe_now(self, channel: str) -> None:
        old = self._subscribed.pop(channel, None)
        if old is not None:
            self.world.channels[channel].remove(old)

    def unsubscribe(self, channel: str) -> defer.Deferred[None]:
        return self.world.run(lambda: self.unsubscribe_now(channel))

    def stop(self) -> defer.Deferred[None]:
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops = []
        if self._listening is not None:
            node_id, callback, on_message = self._listening
            self.world.listeners[node_id].remove((callback, on_message))
            self._listening = None
        for channel in list(self._subscribed):
            self.unsubscribe_now(channel)
        return defer.succeed(None)
