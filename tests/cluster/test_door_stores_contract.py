"""What the doors may rely on from their cluster stores (docs/scaleout.md
"Stores of the other doors"), run against the verified fakes and a real
redis-server alike (same assertions)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer
from zope.interface.verify import verifyObject

from libchat.doors.platforms.seam import ICallbackBook
from libchat.doors.platforms.unified import ReplyTarget
from libchat.doors.postoffice.seam import IOfflineQueue
from libchat.interfaces import Unavailable

from .door_backends import DoorBackend, FakeDoorBackend, RealDoorBackend, retried
from .redis_server import RedisServer


class CallbackBookContract:
    """Platform dedupe (§10) and reply targets, cluster-wide."""

    def test_the_book_provides_its_interface(self, backend: DoorBackend) -> None:
        assert verifyObject(ICallbackBook, backend.callbacks())

    @pytest_twisted.inlineCallbacks
    def test_an_id_taken_on_one_node_is_a_repeat_on_every_node(self, backend: DoorBackend) -> Any:
        a, b = backend.callbacks(0), backend.callbacks(1)
        assert (yield a.accept("wecom:hr", "m1", "wecom:hr:u", None)) is False
        assert (yield b.accept("wecom:hr", "m1", "wecom:hr:u", None)) is True
        assert (yield a.accept("wecom:hr", "m1", "wecom:hr:u", None)) is True
        assert (b.dedupe_hits("wecom:hr"), a.dedupe_hits("wecom:hr")) == (1, 1)
        # ids are per app
        assert (yield b.accept("lark:bot", "m1", "lark:bot:u", None)) is False
        assert b.dedupe_hits("lark:bot") == 0

    @pytest_twisted.inlineCallbacks
    def test_the_reply_target_is_read_on_another_node(self, backend: DoorBackend) -> Any:
        a, b = backend.callbacks(0), backend.callbacks(1)
        assert (yield b.target("lark:bot:chat:ou")) is None
        yield a.accept("lark:bot", "e1", "lark:bot:chat:ou", ReplyTarget("oc_chat", "ou_1"))
        assert (yield b.target("lark:bot:chat:ou")) == {"to": "oc_chat", "m": "ou_1"}
        yield a.accept("wecom:hr", "m2", "wecom:hr:lisi", ReplyTarget("lisi"))
        assert (yield b.target("wecom:hr:lisi")) == {"to": "lisi", "m": None}

    @pytest_twisted.inlineCallbacks
    def test_a_taker_whose_answer_was_lost_does_not_make_the_retry_a_repeat(
            self, backend: DoorBackend) -> Any:
        """The write landed, the node answered 503: the platform's retry is routed."""
        yield backend.land_unconfirmed("wecom:hr", "m3")
        b = backend.callbacks(1)
        assert (yield b.accept("wecom:hr", "m3", "wecom:hr:u", None)) is False
        assert (yield b.accept("wecom:hr", "m3", "wecom:hr:u", None)) is True

    @pytest_twisted.inlineCallbacks
    def test_ids_are_forgotten_after_their_ttl(self, backend: DoorBackend) -> Any:
        a = backend.callbacks(0, ttl_ms=200)
        assert (yield a.accept("wecom:hr", "m4", "wecom:hr:u", None)) is False
        assert (yield a.accept("wecom:hr", "m4", "wecom:hr:u", None)) is True
        yield backend.pass_time(0.35)
        assert (yield a.accept("wecom:hr", "m4", "wecom:hr:u", None)) is False

    @pytest_twisted.inlineCallbacks
    def test_an_outage_fails_with_unavailable_never_a_false_seen(
            self, backend: DoorBackend) -> Any:
        a, b = backend.callbacks(0), backend.callbacks(1)
        yield a.accept("wecom:hr", "m5", "wecom:hr:u", ReplyTarget("u"))
        backend.outage()
        started = time.monotonic()
        with pytest.raises(Unavailable):
            yield a.accept("wecom:hr", "m6", "wecom:hr:u", None)
        with pytest.raises(Unavailable):
            yield b.target("wecom:hr:u")
        assert time.monotonic() - started < 5.0
        backend.recover()
        assert (yield retried(lambda: b.accept("wecom:hr", "m5", "wecom:hr:u", None))) is True
        assert (yield b.accept("wecom:hr", "m6", "wecom:hr:u", None)) is False
        assert (yield b.target("wecom:hr:u")) == {"to": "u", "m": None}


class OfflineQueueContract:
    """The post-office offline queue (§12), cluster-wide."""

    def test_the_queue_provides_its_interface(self, backend: DoorBackend) -> None:
        assert verifyObject(IOfflineQueue, backend.offline())

    @pytest_twisted.inlineCallbacks
    def test_queued_on_one_node_taken_in_order_on_another_until_delivered(
            self, backend: DoorBackend) -> Any:
        a, b = backend.offline(0), backend.offline(1)
        soon = time.time() + 100
        for i in range(3):
            assert (yield a.offer("/svc/b", "/svc/a", f"s{i}", f"raw{i}", soon + i)) is True
        items = yield b.take("/svc/b")
        assert [(i["raw"], i["from"], i["subject"], i["target"]) for i in items] == \
            [(f"raw{i}", "/svc/a", f"s{i}", "/svc/b") for i in range(3)]
        assert [i["raw"] for i in (yield a.take("/svc/b"))] == ["raw0", "raw1", "raw2"], \
            "not forgotten before it is acknowledged"
        yield a.offer("/svc/b", "/svc/a", "s3", "raw3", soon + 3)  # after the take
        yield b.delivered("/svc/b", items)
        assert [i["raw"] for i in (yield a.take("/svc/b"))] == ["raw3"]
        assert (yield a.take("/svc/nobody")) == []

    @pytest_twisted.inlineCallbacks
    def test_the_bound_per_target_holds_across_nodes(self, backend: DoorBackend) -> Any:
        a, b = backend.offline(0, bound=2), backend.offline(1, bound=2)
        soon = time.time() + 100
        assert (yield a.offer("/svc/b", "/svc/a", "s", "1", soon)) is True
        assert (yield b.offer("/svc/b", "/svc/a", "s", "2", soon)) is True
        assert (yield a.offer("/svc/b", "/svc/a", "s", "3", soon)) is False
        assert (yield b.offer("/svc/c", "/svc/a", "s", "4", soon)) is True

    @pytest_twisted.inlineCallbacks
    def test_each_expired_item_is_popped_by_exactly_one_node(self, backend: DoorBackend) -> Any:
        a, b = backend.offline(0), backend.offline(1)
        base = time.time() + 100
        for i in range(4):
            yield a.offer("/svc/b", "/svc/a", f"s{i}", f"r{i}", base + i)
        yield a.offer("/svc/c", "/svc/a", "c", "rc", base)
        gone = yield defer.gatherResults([a.expire(base + 1.5), b.expire(base + 1.5)])
        raws = sorted(i["raw"] for i in gone[0] + gone[1])
        assert raws == ["r0", "r1", "rc"]
        assert [i["raw"] for i in (yield b.take("/svc/b"))] == ["r2", "r3"]
        assert (yield b.expire(base + 1.5)) == []
        assert [i["raw"] for i in (yield a.expire(base + 10))] == ["r2", "r3"]
        assert (yield a.take("/svc/b")) == []

    @pytest_twisted.inlineCallbacks
    def test_an_outage_fails_the_offer_and_loses_nothing_queued_before(
            self, backend: DoorBackend) -> Any:
        a = backend.offline(0)
        soon = time.time() + 100
        yield a.offer("/svc/b", "/svc/a", "s", "kept", soon)
        backend.outage()
        with pytest.raises(Unavailable):
            yield a.offer("/svc/b", "/svc/a", "s", "unknown", soon)
        backend.recover()
        items = yield retried(lambda: a.take("/svc/b"))
        assert [i["raw"] for i in items][:1] == ["kept"]


def holder(value: Any) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


class DeskLeaseContract:
    """The operator desk's lease (``lua/desk_lease.lua``, ``desk_drop.lua``;
    libchat.cluster.desk): one holder at a time, free after its TTL or a drop."""

    def lease(self, backend: DoorBackend, node: int, value: str, ttl_ms: int = 10_000,
              may: str = "1") -> defer.Deferred[str | None]:
        d = backend.desk_scripts(node).call("desk_lease", [backend.keys.desk_lease],
                                            [value, ttl_ms, may])
        return d.addCallback(holder)

    def drop(self, backend: DoorBackend, node: int, value: str) -> defer.Deferred[Any]:
        return backend.desk_scripts(node).call("desk_drop", [backend.keys.desk_lease], [value])

    @pytest_twisted.inlineCallbacks
    def test_one_node_holds_the_lease_and_the_others_are_told_who(
            self, backend: DoorBackend) -> Any:
        assert (yield self.lease(backend, 0, "a 1")) == "a 1"
        assert (yield self.lease(backend, 1, "b 2")) == "a 1"
        assert (yield self.lease(backend, 1, "a 2")) == "a 1", "another process of node a"
        assert (yield self.lease(backend, 0, "a 1")) == "a 1"

    @pytest_twisted.inlineCallbacks
    def test_the_holder_keeps_the_lease_past_its_ttl_by_refreshing_it(
            self, backend: DoorBackend) -> Any:
        assert (yield self.lease(backend, 0, "a 1", ttl_ms=600)) == "a 1"
        for _ in range(2):  # 0.8 s in all: past the first ttl
            yield backend.pass_time(0.4)
            assert (yield self.lease(backend, 0, "a 1", ttl_ms=600)) == "a 1"
        assert (yield self.lease(backend, 1, "b 2")) == "a 1"

    @pytest_twisted.inlineCallbacks
    def test_the_lease_is_free_after_its_ttl(self, backend: DoorBackend) -> Any:
        assert (yield self.lease(backend, 0, "a 1", ttl_ms=200)) == "a 1"
        assert (yield self.lease(backend, 1, "b 2")) == "a 1"
        yield backend.pass_time(0.35)
        assert (yield self.lease(backend, 1, "b 2")) == "b 2"
        assert (yield self.lease(backend, 0, "a 1")) == "b 2"

    @pytest_twisted.inlineCallbacks
    def test_only_the_holder_drops_the_lease(self, backend: DoorBackend) -> Any:
        yield self.lease(backend, 0, "a 1")
        yield self.drop(backend, 1, "b 2")
        yield self.drop(backend, 1, "a 2")
        assert (yield self.lease(backend, 1, "b 2")) == "a 1"
        yield self.drop(backend, 0, "a 1")
        assert (yield self.lease(backend, 1, "b 2")) == "b 2"
        yield self.drop(backend, 0, "a 1")  # no longer its: nothing happens
        assert (yield self.lease(backend, 0, "a 1")) == "b 2"

    @pytest_twisted.inlineCallbacks
    def test_a_node_that_may_not_take_it_never_takes_a_free_lease(
            self, backend: DoorBackend) -> Any:
        assert (yield self.lease(backend, 0, "a 1", may="0")) is None
        assert (yield self.lease(backend, 1, "b 2", may="0")) is None
        assert (yield self.lease(backend, 1, "b 2")) == "b 2"
        assert (yield self.lease(backend, 0, "a 1", may="0")) == "b 2"
        assert (yield self.lease(backend, 1, "b 2", may="0")) == "b 2", "its holder refreshes"

    @pytest_twisted.inlineCallbacks
    def test_an_outage_fails_with_unavailable_and_the_lease_is_kept(
            self, backend: DoorBackend) -> Any:
        yield self.lease(backend, 0, "a 1", ttl_ms=60_000)
        backend.outage()
        with pytest.raises(Unavailable):
            yield self.lease(backend, 1, "b 2")
        backend.recover()
        assert (yield retried(lambda: self.lease(backend, 1, "b 2"))) == "a 1"


class DoorStoresContract(CallbackBookContract, OfflineQueueContract, DeskLeaseContract):
    """Every door store's contract; one subclass per backend."""


class TestFakeDoorStores(DoorStoresContract):
    @pytest.fixture
    def backend(self) -> Iterator[DoorBackend]:
        b = FakeDoorBackend()
        yield b
        b.close()


class TestRedisDoorStores(DoorStoresContract):
    @pytest.fixture
    def backend(self, redis_server: RedisServer, logged: Any) -> Iterator[DoorBackend]:
        logged.allow("confirming")
        b = RealDoorBackend(redis_server)
        yield b
        b.close()
