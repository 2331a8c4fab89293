"""What a node may rely on from IClusterStore and IBus, run against the
verified in-memory fake and a real redis-server alike (same assertions)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from zope.interface.verify import verifyObject

from libchat.cluster.interfaces import (IBus, IClusterStore, LeaseTaken, Ownership,
                                        RedisUnavailable, StaleFence, Then)

from .backends import Backend, FakeBackend, RealBackend
from .redis_server import RedisServer

WAIT = 10.0  # the bound on any wait for something that arrives over Redis


def arrival(timeout: float = WAIT) -> defer.Deferred[Any]:
    """A Deferred a callback fires, failing after ``timeout`` seconds."""
    d: defer.Deferred[Any] = defer.Deferred()
    return d.addTimeout(timeout, reactor)


def fire(d: defer.Deferred[Any], value: Any) -> None:
    if not d.called:
        d.callback(value)


@defer.inlineCallbacks
def inbox_until(node: Any, last: bytes) -> Any:
    """The node listens to its inbox: (what arrives, doorbells and messages
    in order; a Deferred fired when the message ``last`` has)."""
    got: list[Any] = []
    done = arrival()

    def message(payload: bytes) -> None:
        got.append(payload)
        if payload == last:
            fire(done, None)
    yield node.bus.listen(node.node_id, got.append, message)
    return got, done


class ClusterContract:
    """Mixed into one class per backend, which defines the ``backend`` fixture."""

    def test_store_and_bus_provide_their_interfaces(self, backend: Backend) -> None:
        assert verifyObject(IClusterStore, backend.store(0))
        assert verifyObject(IBus, backend.bus(0))

    # -- leases ------------------------------------------------------------------------

    @pytest_twisted.inlineCallbacks
    def test_a_held_lease_is_refused_to_another_incarnation_and_retaken_by_its_own(
            self, backend: Backend) -> Any:
        a = yield backend.node("a", ttl_ms=10000)
        assert (yield a.store.lease_holder("a")) == a.inc
        with pytest.raises(LeaseTaken):
            yield a.store.acquire_lease("a", "a~other", 10000)
        yield a.store.acquire_lease("a", a.inc, 10000)  # a retry after a timeout
        assert (yield a.store.refresh_lease("a", a.inc, 10000)) is True
        assert (yield a.store.refresh_lease("a", "a~other", 10000)) is False
        assert "a" in (yield a.store.nodes())
        assert (yield a.store.drop_lease("a", "a~other")) is False
        assert (yield a.store.drop_lease("a", a.inc)) is True
        assert (yield a.store.lease_holder("a")) is None

    # -- claims ------------------------------------------------------------------------

    @pytest_twisted.inlineCallbacks
    def test_first_claim_wins_and_a_second_claim_by_another_node_is_told_the_owner(
            self, backend: Backend) -> Any:
        a = yield backend.node(ttl_ms=10000)
        b = yield backend.node(ttl_ms=10000)
        assert (yield b.store.owner("d1")) is None
        assert (yield a.store.claim("d1", a.node_id, a.inc)) == Ownership(a.node_id, 1)
        assert (yield b.store.claim("d1", b.node_id, b.inc)) == Ownership(a.node_id, 1)
        # already ours: the same token, no bump
        assert (yield a.store.claim("d1", a.node_id, a.inc)) == Ownership(a.node_id, 1)
        assert (yield b.store.owner("d1")) == Ownership(a.node_id, 1)
        assert (yield b.store.owned(a.node_id)) == {"d1"}

    @pytest_twisted.inlineCallbacks
    def test_twenty_concurrent_claimers_one_winner_per_fence_bump(self, backend: Backend) -> Any:
        nodes = []
        for _ in range(20):
            nodes.append((yield backend.node(ttl_ms=10000)))
        results = yield defer.gatherResults(
            [n.store.claim("race", n.node_id, n.inc) for n in nodes])
        assert len(set(results)) == 1, results
        winner = results[0]
        assert winner.fence == 1 and winner.node in {n.node_id for n in nodes}
        # the winner goes away: the other 19 race again, and again one wins, once
        gone = next(n for n in nodes if n.node_id == winner.node)
        yield gone.store.drop_lease(gone.node_id, gone.inc)
        rest = [n for n in nodes if n is not gone]
        again = yield defer.gatherResults(
            [n.store.claim("race", n.node_id, n.inc) for n in rest])
        assert len(set(again)) == 1, again
        assert again[0].fence == 2 and again[0].node in {n.node_id for n in rest}
        assert (yield gone.store.owned(gone.node_id)) == set()
        assert (yield gone.store.owned(again[0].node)) == {"race"}

    @pytest_twisted.inlineCallbacks
    def test_lease_expiry_lets_another_node_claim_with_a_larger_fence(
            self, backend: Backend) -> Any:
        a = yield backend.node()  # the short lease, never refreshed
        b = yield backend.node(ttl_ms=60000)
        assert (yield a.store.claim("d", a.node_id, a.inc)).node == a.node_id
        yield backend.expire(a)
        assert (yield b.store.claim("d", b.node_id, b.inc)) == Ownership(b.node_id, 2)
        assert (yield b.store.owned(a.node_id)) == set()
        assert (yield b.store.owned(b.node_id)) == {"d"}
        with pytest.raises(StaleFence):  # a node whose lease is gone claims nothing
            yield a.store.claim("other", a.node_id, a.inc)

    @pytest_twisted.inlineCallbacks
    def test_release_gives_up_only_our_own_ownership(self, backend: Backend) -> Any:
        a = yield backend.node(ttl_ms=10000)
        b = yield backend.node(ttl_ms=10000)
        yield a.store.claim("d", a.node_id, a.inc)
        assert (yield b.store.release("d", b.inc)) is False
        assert (yield a.store.release("d", a.inc)) is True
        assert (yield a.store.owner("d")) is None
        assert (yield b.store.claim("d", b.node_id, b.inc)) == Ownership(b.node_id, 2)
        assert (yield a.store.release("d", a.inc)) is False
        assert (yield a.store.owner("d")) == Ownership(b.node_id, 2)

    # -- the transcript -----------------------------------------------------------------

    @pytest_twisted.inlineCallbacks
    def test_concurrent_appends_get_contiguous_seqs_and_read_back_in_order(
            self, backend: Backend) -> Any:
        a = yield backend.node(ttl_ms=10000)
        own = yield a.store.claim("d", a.node_id, a.inc)
        # the owner's appends race over three connections
        stores = [backend.store(i) for i in range(3)]
        seqs = yield defer.gatherResults(
            [stores[i % 3].append("d", a.inc, own.fence, b"m%d" % i) for i in range(60)])
        assert sorted(seqs) == list(range(1, 61))
        entries = yield a.store.read("d")
        assert [e.seq for e in entries] == list(range(1, 61))
        by_seq = {s: b"m%d" % i for i, s in enumerate(seqs)}
        assert all(e.data == by_seq[e.seq] for e in entries)
        assert (yield a.store.last_seq("d")) == 60
        assert [e.seq for e in (yield a.store.read("d", after=57))] == [58, 59, 60]
        assert [e.seq for e in (yield a.store.read("d", after=10, limit=2))] == [11, 12]
        assert (yield a.store.read("d", after=60)) == []
        assert (yield a.store.read("never")) == [] and (yield a.store.last_seq("never")) == 0

    @pytest_twisted.inlineCallbacks
    def test_a_stale_fence_is_refused_and_the_new_owner_continues_the_seq(
            self, backend: Backend) -> Any:
        a = yield backend.node()
        b = yield backend.node(ttl_ms=60000)
        own = yield a.store.claim("d", a.node_id, a.inc)
        assert (yield a.store.append("d", a.inc, own.fence, b"one")) == 1
        with pytest.raises(StaleFence):
            yield a.store.append("d", a.inc, own.fence + 1, b"wrong fence")
        with pytest.raises(StaleFence):
            yield b.store.append("d", b.inc, own.fence, b"not the owner")
        yield backend.expire(a)
        with pytest.raises(StaleFence):  # the owner's lease is gone: not yet claimed
            yield a.store.append("d", a.inc, own.fence, b"too late")
        new = yield b.store.claim("d", b.node_id, b.inc)
        with pytest.raises(StaleFence):
            yield a.store.append("d", a.inc, own.fence, b"stale")
        assert (yield b.store.append("d", b.inc, new.fence, b"two")) == 2
        assert [e.data for e in (yield b.store.read("d"))] == [b"one", b"two"]

    @pytest_twisted.inlineCallbacks
    def test_after_a_redis_restart_the_scripts_work_and_the_data_is_there(
            self, backend: Backend) -> Any:
        a = yield backend.node(ttl_ms=20000)
        own = yield a.store.claim("d", a.node_id, a.inc)
        for i in range(3):
            yield a.store.append("d", a.inc, own.fence, b"before %d" % i)
        backend.restart()
        seq = yield retried(lambda: a.store.append("d", a.inc, own.fence, b"after"))
        assert seq == 4
        assert [e.seq for e in (yield a.store.read("d"))] == [1, 2, 3, 4]
        assert (yield a.store.claim("d", a.node_id, a.inc)) == own

    @pytest_twisted.inlineCallbacks
    def test_an_outage_fails_calls_with_redis_unavailable_not_a_hang(
            self, backend: Backend) -> Any:
        a = yield backend.node(ttl_ms=20000)
        own = yield a.store.claim("d", a.node_id, a.inc)
        backend.outage()
        started = time.monotonic()
        with pytest.raises(RedisUnavailable):
            yield a.store.append("d", a.inc, own.fence, b"lost?")
        assert time.monotonic() - started < 3.0
        backend.recover()
        seq = yield retried(lambda: a.store.append("d", a.inc, own.fence, b"after"))
        assert seq == 1

    # -- the bus -----------------------------------------------------------------------

    @pytest_twisted.inlineCallbacks
    def test_the_record_rides_with_an_append_and_only_the_owner_may_put_it(
            self, backend: Backend) -> Any:
        a = yield backend.node(ttl_ms=10000)
        b = yield backend.node(ttl_ms=10000)
        assert (yield a.store.get_record("r")) == (None, 0)
        own = yield a.store.claim("r", a.node_id, a.inc)
        yield a.store.append("r", a.inc, own.fence, b"e1", b'{"state":"open"}')
        yield a.store.append("r", a.inc, own.fence, b"e2")  # no record: the old one stays
        assert (yield b.store.get_record("r")) == (b'{"state":"open"}', 2)
        yield a.store.put_record("r", a.inc, own.fence, b'{"state":"closed"}')
        assert (yield b.store.get_record("r")) == (b'{"state":"closed"}', 2)
        with pytest.raises(StaleFence):
            yield b.store.put_record("r", b.inc, own.fence, b"forged")
        with pytest.raises(StaleFence):
            yield b.store.append("r", b.inc, own.fence, b"e3", b"forged")
        assert (yield a.store.get_record("r")) == (b'{"state":"closed"}', 2)

    @pytest_twisted.inlineCallbacks
    def test_memory_is_per_user_and_kept_replies_are_taken_oldest_first_once(
            self, backend: Backend) -> Any:
        a = yield backend.node()
        b = yield backend.node()
        yield a.store.memory_set("u1", "prog/k", b'"v1"')
        assert (yield b.store.memory_get("u1", "prog/k")) == b'"v1"'
        assert (yield b.store.memory_get("u2", "prog/k")) is None
        for i in range(5):
            yield a.store.keep("frame", b"r%d" % i)
        assert (yield b.store.take_kept("frame", 2)) == [b"r0", b"r1"]
        assert (yield a.store.take_kept("frame", 10)) == [b"r2", b"r3", b"r4"]
        assert (yield a.store.take_kept("frame", 10)) == []
        assert (yield a.store.take_kept("web", 10)) == []

    @pytest_twisted.inlineCallbacks
    def test_messages_and_doorbells_share_the_inbox_in_order(self, backend: Backend) -> Any:
        a = yield backend.node("a")
        b = yield backend.node("b")
        got, done = yield inbox_until(b, b"m2")
        yield a.bus.send("b", b"m1")
        yield a.bus.ring("b", "d1")
        yield a.bus.send("b", b"m2")
        yield done
        assert got == [b"m1", "d1", b"m2"]
        yield a.bus.stop()
        yield b.bus.stop()

    @pytest_twisted.inlineCallbacks
    def test_a_message_rides_with_an_append_only_if_the_entry_got_its_seq(
            self, backend: Backend) -> Any:
        a = yield backend.node("a", ttl_ms=10000)
        b = yield backend.node("b", ttl_ms=10000)
        got, synced = yield inbox_until(b, b"sync")
        own = yield a.store.claim("t", a.node_id, a.inc)
        assert (yield a.store.append("t", a.inc, own.fence, b"e1", b"",
                                     Then("b", b"after e1", 1))) == 1
        # numbered 2, not 5: the entry is written, the message is not sent
        assert (yield a.store.append("t", a.inc, own.fence, b"e2", b"",
                                     Then("b", b"wrong seq", 5))) == 2
        with pytest.raises(StaleFence):  # fenced: neither the entry nor the message
            yield a.store.append("t", a.inc, own.fence + 1, b"e3", b"",
                                 Then("b", b"fenced", 3))
        yield a.bus.send("b", b"sync")
        yield synced
        assert got == [b"after e1", b"sync"]
        assert [e.data for e in (yield a.store.read("t"))] == [b"e1", b"e2"]
        yield b.bus.stop()

    @pytest_twisted.inlineCallbacks
    def test_a_doorbell_wakes_the_blocked_reader_of_that_node_only(
            self, backend: Backend) -> Any:
        a = yield backend.node("a")
        b = yield backend.node("b")
        got_b, got_a = arrival(), []
        yield b.bus.listen("b", lambda dialog: fire(got_b, dialog))
        yield a.bus.listen("a", got_a.append)
        yield a.bus.ring("b", "d42")
        assert (yield got_b) == "d42"
        assert got_a == []
        yield a.bus.stop()
        yield b.bus.stop()

    @pytest_twisted.inlineCallbacks
    def test_doorbells_arrive_in_order_and_after_a_redis_restart(self, backend: Backend) -> Any:
        a = yield backend.node("a")
        b = yield backend.node("b")
        seen: list[str] = []
        third = arrival()

        def bell(dialog: str) -> None:
            seen.append(dialog)
            if dialog == "d3":
                fire(third, None)
        yield b.bus.listen("b", bell)
        yield a.bus.ring("b", "d1")
        yield a.bus.ring("b", "d2")
        backend.restart()
        yield retried(lambda: a.bus.ring("b", "d3"))
        yield third
        assert seen == ["d1", "d2", "d3"]
        yield b.bus.stop()

    @pytest_twisted.inlineCallbacks
    def test_a_subscription_gets_published_messages_and_survives_a_redis_restart(
            self, backend: Backend) -> Any:
        a = yield backend.node("a")
        b = yield backend.node("b")
        first, second = arrival(), arrival()
        yield b.bus.subscribe("user:u1", lambda p: fire(first if not first.called else second, p))
        assert (yield a.bus.publish("user:u1", b"hello")) == 1
        assert (yield first) == b"hello"
        backend.restart()
        # the subscriber reconnects on its own back-off: publish until it is back
        deadline = time.monotonic() + WAIT
        while not second.called:
            assert time.monotonic() < deadline, "the subscription was not renewed"
            try:
                yield a.bus.publish("user:u1", b"again")
            except RedisUnavailable:
                pass
            yield task.deferLater(reactor, 0.05, lambda: None)
        assert (yield second) == b"again"
        yield b.bus.unsubscribe("user:u1")
        assert (yield a.bus.publish("user:u1", b"nobody")) == 0
        yield b.bus.stop()

    @pytest_twisted.inlineCallbacks
    def test_reconcile_runs_periodically_until_stop(self, backend: Backend) -> Any:
        a = yield backend.node("a")
        runs: list[int] = []
        twice = arrival()

        def reconcile() -> None:
            runs.append(1)
            if len(runs) == 2:
                fire(twice, None)
            if len(runs) == 1:
                raise RuntimeError("a failing reconcile is logged, and runs again")
        a.bus.on_reconcile(reconcile, every=0.05)
        advance(backend, 0.05)
        advance(backend, 0.05)
        yield twice
        yield a.bus.stop()
        n = len(runs)
        advance(backend, 0.2)
        assert len(runs) == n


def advance(backend: Backend, seconds: float) -> None:
    """The fake's bus runs on the world clock; the real one on the reactor."""
    if isinstance(backend, FakeBackend):
        backend.world.clock.advance(seconds)


@defer.inlineCallbacks
def retried(call: Any, within: float = WAIT) -> Any:
    """``call()`` until it stops failing with RedisUnavailable (Redis coming back)."""
    deadline = time.monotonic() + within
    while True:
        try:
            return (yield call())
        except RedisUnavailable:
            if time.monotonic() > deadline:
                raise
            yield task.deferLater(reactor, 0.05, lambda: None)


class TestFakeCluster(ClusterContract):
    @pytest.fixture
    def backend(self, logged: Any) -> Iterator[Backend]:
        logged.allow("a failing reconcile")
        b = FakeBackend()
        yield b
        b.close()


class TestRedisCluster(ClusterContract):
    @pytest.fixture
    def backend(self, redis_server: RedisServer, logged: Any) -> Iterator[Backend]:
        logged.allow("a failing reconcile")
        b = RealBackend(redis_server)
        yield b
        b.close()
