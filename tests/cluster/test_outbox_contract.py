"""What the platform door may rely on from its outbox with ``--redis``
(docs/scaleout.md "Stores of the other doors"): written behind, read back by
a restart, handed to exactly one survivor with its progress, and kept in
memory through a Redis outage. One contract, run against the verified fake
(:class:`libchat.cluster.testing_doors.FakeOutbox`) and
:class:`libchat.cluster.outbox.RedisOutbox` on a private redis-server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer
from zope.interface.verify import verifyObject

from libchat.doors.platforms.ledger import Ledger
from libchat.doors.platforms.seam import IOutbox
from libchat.interfaces import Unavailable
from libchat.storage.store import run_inline

from .door_backends import DoorBackend, FakeDoorBackend, RealDoorBackend, retried
from .redis_server import RedisServer

pytestmark = pytest.mark.timeout(60)


def item(n: int, dialog: str = "wecom:hr:lisi", text: str = "hello") -> dict[str, Any]:
    return {"id": f"item{n}", "app": "hr", "platform": "wecom", "dialog": dialog,
            "n": 0, "kind": "text", "text": f"{text} {n}"}


def restarted(backend: DoorBackend, node_id: str) -> Any:
    """A fresh outbox of ``node_id`` that read its hash; fires with (outbox, items seen)."""
    box = backend.outbox(node_id)
    seen: list[dict[str, Any]] = []
    box.on_items = seen.extend
    return box.flush().addCallback(lambda _: (box, seen))


class OutboxContract:
    def test_the_outboxes_provide_the_interface(self, backend: DoorBackend,
                                                tmp_path: Path) -> None:
        assert verifyObject(IOutbox, backend.outbox("a"))
        assert verifyObject(IOutbox, Ledger(tmp_path, run_inline, None))

    @pytest_twisted.inlineCallbacks
    def test_items_and_their_progress_are_read_back_by_a_restart(
            self, backend: DoorBackend) -> Any:
        a = backend.outbox("a")
        one, two, three = item(1), item(2), item(3)
        for i in (one, two, three):
            a.put(i)
        a.progress(one, 2)
        a.finish("item2")
        three["text"] = "merged"
        a.put(three)
        yield a.settle()
        assert a.unsaved == 0
        b, seen = yield restarted(backend, "a")
        assert [(i["id"], i["n"], i["started"]) for i in seen] == \
            [("item1", 2, True), ("item3", 0, True)]
        assert seen[1]["text"] == "merged" and list(b.items) == ["item1", "item3"]

    @pytest_twisted.inlineCallbacks
    def test_exactly_one_survivor_takes_a_dead_nodes_outbox_with_its_progress(
            self, backend: DoorBackend) -> Any:
        a = backend.outbox("a")
        for n in range(1, 4):
            a.put(item(n))
        a.progress(a.items["item1"], 1)
        yield a.settle()
        b, c = backend.outbox("b", 0), backend.outbox("c", 1)
        got_b, got_c = yield defer.gatherResults([b.adopt("a"), c.adopt("a")])
        winner, won = (b, got_b) if got_b else (c, got_c)
        assert (got_b == []) != (got_c == []), "one survivor, not both, not none"
        assert [(i["id"], i["n"]) for i in won] == [("item1", 1), ("item2", 0), ("item3", 0)]
        assert list(winner.items) == ["item1", "item2", "item3"]
        assert (yield b.adopt("a")) == [] and (yield c.adopt("a")) == [], "idempotent"
        _, kept = yield restarted(backend, winner.node_id)
        assert [i["id"] for i in kept] == ["item1", "item2", "item3"], \
            "in the survivor's own outbox now"
        _, left = yield restarted(backend, "a")
        assert left == []

    @pytest_twisted.inlineCallbacks
    def test_a_node_holding_its_lease_again_keeps_its_outbox(self, backend: DoorBackend) -> Any:
        a = backend.outbox("a")
        a.put(item(1))
        yield a.settle()
        yield backend.hold_lease("a")
        assert (yield backend.outbox("b").adopt("a")) == []
        _, kept = yield restarted(backend, "a")
        assert [i["id"] for i in kept] == ["item1"]

    @pytest_twisted.inlineCallbacks
    def test_an_item_handed_over_is_let_go_by_its_old_node(self, backend: DoorBackend) -> Any:
        a, b = backend.outbox("a"), backend.outbox("b")
        one = item(1)
        a.put(one)
        yield a.settle()
        assert a.holds(one)
        yield b.adopt("a")
        a.progress(one, 1)  # the old node woke up and sent part 0
        yield a.settle()
        assert not a.holds(one) and b.holds(b.items["item1"])
        a.finish("item1")
        yield a.settle()
        _, kept = yield restarted(backend, "b")
        assert [(i["id"], i["n"]) for i in kept] == [("item1", 0)], "its progress is b's"

    @pytest_twisted.inlineCallbacks
    def test_an_outage_keeps_changes_in_memory_and_writes_them_when_redis_is_back(
            self, backend: DoorBackend) -> Any:
        a = backend.outbox("a")
        one, two = item(1), item(2)
        a.put(one)
        a.put(two)
        yield a.settle()
        backend.outage()
        three = item(3)
        a.put(three)
        a.progress(one, 1)
        a.finish("item2")
        with pytest.raises(Unavailable):
            yield a.settle()
        assert a.unsaved == 3 and list(a.items) == ["item1", "item3"], "nothing dropped"
        backend.recover()
        yield retried(a.settle, within=15.0)
        assert a.unsaved == 0
        _, kept = yield restarted(backend, "a")
        assert [(i["id"], i["n"]) for i in kept] == [("item1", 1), ("item3", 0)]


class TestFakeOutbox(OutboxContract):
    @pytest.fixture
    def backend(self) -> Iterator[DoorBackend]:
        b = FakeDoorBackend()
        yield b
        b.close()


class TestRedisOutbox(OutboxContract):
    @pytest.fixture
    def backend(self, redis_server: RedisServer, logged: Any) -> Iterator[DoorBackend]:
        logged.allow("platform outbox")
        b = RealDoorBackend(redis_server)
        yield b
        b.close()
