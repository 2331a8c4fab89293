"""The cluster router's rules on the verified fakes and one task.Clock: two
nodes in one process sharing a FakeRedis world (docs/scaleout.md). The same
behaviour on real processes and a real redis-server: test_nodes.py and
test_node_failures.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet import task

from libchat.cluster.dialogs import SharedDialogStore
from libchat.cluster.gate import GatedRuntime
from libchat.cluster.lease import NodeLease
from libchat.cluster.router import ClusterRouter
from libchat.cluster.testing import FakeBus, FakeClusterStore, FakeRedis
from libchat.core.library import ProgramLibrary
from libchat.core.router import Router
from libchat.interfaces import Receipt
from libchat.protocol import codes
from libchat.testing import FakeRuntime, FakeUpstream

from ..helpers import make_program, user_message


class Node:
    def __init__(self, name: str, world: FakeRedis, programs: Path) -> None:
        self.clock = world.clock
        self.cluster = FakeClusterStore(world)
        self.lease = NodeLease(self.cluster, name, self.clock, on_lost=self.lost,
                               on_healthy=self.healthy)
        self.store = SharedDialogStore(self.cluster, self.clock, lambda: self.lease.incarnation)
        self.runtime = FakeRuntime()
        library = ProgramLibrary([programs], now=self.clock.seconds)
        self.engine = Router(self.clock, library, GatedRuntime(self.runtime, self.store),
                             self.store, kill_grace=2)
        self.router = ClusterRouter(self.engine, self.store, self.cluster, FakeBus(world),
                                    self.lease, self.clock, name, wall=self.clock.seconds)
        self.router.start()
        self.up = FakeUpstream()
        self.lease.start()
        self.router.join()
        self.router.attach(self.up)

    def lost(self) -> None:
        self.router.lease_lost()

    def healthy(self) -> None:
        self.router.lease_healthy()

    def send(self, event: dict[str, Any]) -> Receipt:
        """Route one event and let the fake world answer; the receipt."""
        result = self.router.receive(self.up, event)
        self.clock.advance(0)
        got: list[Receipt] = []
        if isinstance(result, Receipt):
            return result
        result.addCallback(got.append)
        self.clock.advance(0)
        assert got, "no receipt"
        return got[0]

    def stop_sweeping(self) -> None:
        if self.router._sweep is not None and self.router._sweep.running:
            self.router._sweep.stop()


@pytest.fixture
def world() -> FakeRedis:
    return FakeRedis(task.Clock())


@pytest.fixture
def programs(tmp_path: Path) -> Path:
    make_program(tmp_path / "programs", "echo", keywords=["echo"])
    return tmp_path / "programs"


def settle(world: FakeRedis) -> None:
    for _ in range(3):
        world.clock.advance(0)


def run_for(world: FakeRedis, seconds: float, step: float = 0.25) -> None:
    """Let the clock run (every timer fires in its turn, as on a reactor)."""
    for _ in range(int(seconds / step)):
        world.clock.advance(step)


def test_an_event_received_by_another_node_reaches_the_owners_instance_once(
        world: FakeRedis, programs: Path) -> None:
    a, b = Node("a", world, programs), Node("b", world, programs)
    assert a.send(user_message("echo one")).seq == 1
    receipt = b.send(user_message("echo two", message_id="m2"))
    settle(world)
    assert receipt.ok and receipt.seq == 2
    assert b.runtime.started == []
    (instance,) = a.runtime.started
    assert [e["messages"]["content"] for e in instance.sent] == ["echo one", "echo two"]
    # its reply goes to b's upstream, which sent last (the fake answers at once)
    instance.say({"event_type": codes.REPLY, "messages": {"content": "hi"}})
    settle(world)
    assert b.up.types() == [codes.REPLY] and a.up.types() == []
    assert [e.seq for e in world.dialogs.values()] == [3]


def test_a_reply_to_another_nodes_upstream_rides_on_its_append_and_dies_with_it(
        world: FakeRedis, programs: Path) -> None:
    a, b = Node("a", world, programs), Node("b", world, programs)
    a.send(user_message("echo one"))
    b.send(user_message("echo two", message_id="m2"))
    settle(world)
    (instance,) = a.runtime.started
    sent: list[bytes] = []
    real_send = a.router.bus.send
    a.router.bus.send = lambda node, payload: (sent.append(payload), real_send(node, payload))[1]
    instance.say({"event_type": codes.REPLY, "messages": {"content": "hi"}})
    settle(world)
    assert b.up.types() == [codes.REPLY] and b.up.events[-1]["seq"] == 3
    assert sent == []  # no separate XADD: the append carried it (SharedDialogStore.synced_sending)
    # an append Redis refuses (the owner is fenced out) sends nothing either
    world.dialogs["d1"].fence += 1
    instance.say({"event_type": codes.REPLY, "messages": {"content": "fenced"}})
    settle(world)
    assert b.up.types() == [codes.REPLY] and sent == []
    assert [bytes(x) for x in world.logs["d1"]][-1].count(b"fenced") == 0


def test_a_forwarded_events_receipt_rides_on_its_append_and_the_program_waits_for_it(
        world: FakeRedis, programs: Path) -> None:
    a, b = Node("a", world, programs), Node("b", world, programs)
    a.send(user_message("echo one"))
    (instance,) = a.runtime.started
    sent: list[bytes] = []
    real_send = a.router.bus.send
    a.router.bus.send = lambda node, payload: (sent.append(payload), real_send(node, payload))[1]
    receipt = b.send(user_message("echo two", message_id="m2"))
    settle(world)
    assert receipt.ok and receipt.seq == 2
    assert [bytes(x) for x in world.logs["d1"]][-1].count(b"echo two") == 1
    assert [e["messages"]["content"] for e in instance.sent] == ["echo one", "echo two"]
    assert sent == []  # the receipt went with the append (SharedDialogStore.hold)
    # refused by Redis (the owner fenced out): b is told 2004 by a receipt
    # sent apart, and the program never sees the message
    world.dialogs["d1"].fence += 1
    receipt = b.send(user_message("echo three", message_id="m3"))
    settle(world)
    assert receipt.error is not None and receipt.error["code"] == codes.INTERNAL_ERROR
    assert [e["messages"]["content"] for e in instance.sent] == ["echo one", "echo two"]
    assert len(sent) == 1 and b'"t":"rc"' in sent[0]


def test_a_write_redis_does_not_take_is_never_acknowledged_nor_delivered(
        world: FakeRedis, programs: Path) -> None:
    a = Node("a", world, programs)
    a.send(user_message("echo one"))
    (instance,) = a.runtime.started
    world.down = True
    receipt = a.send(user_message("echo two", message_id="m2"))
    assert receipt.error is not None and receipt.error["code"] == codes.INTERNAL_ERROR
    assert instance.gone  # the dialog is forgotten: its instance stopped
    before = list(a.up.events)
    instance.say({"event_type": codes.REPLY, "messages": {"content": "late"}})
    settle(world)
    assert a.up.events == before  # a stopped instance of a forgotten dialog reaches no one
    world.down = False
    # the next event claims it again from Redis: one 2002 program_exited first
    receipt = a.send(user_message("echo three", message_id="m3"))
    settle(world)
    assert receipt.ok
    ended = [e for e in a.up.events if e["event_type"] == codes.ENDED]
    assert [e["reason"] for e in ended] == [codes.PROGRAM_EXITED]
    assert len(a.runtime.started) == 2


def test_a_dead_nodes_dialogs_are_adopted_by_a_steady_survivor_with_one_2002(
        world: FakeRedis, programs: Path, logged: Any) -> None:
    logged.allow("stops acknowledging")
    a, b = Node("a", world, programs), Node("b", world, programs)
    a.send(user_message("echo one"))
    run_for(world, 11)  # b has been steady for a whole lease; a keeps its lease too
    assert b.router.adopted == 0
    a.stop_sweeping()
    a.lease._loop.stop()  # a dies: no more refreshes
    run_for(world, 11)  # its lease runs out; b's sweep adopts
    assert b.router.adopted == 1
    ended = [e for e in b.up.events if e["event_type"] == codes.ENDED]
    assert [(e["dialog_id"], e["reason"]) for e in ended] == [("d1", codes.PROGRAM_EXITED)]
    run_for(world, 5)  # later sweeps adopt nothing more
    assert b.router.adopted == 1
    receipt = b.send(user_message("echo again", message_id="m9"))
    settle(world)
    assert receipt.ok and len(b.runtime.started) == 1


def test_a_node_that_loses_its_lease_stops_its_instances_and_acknowledges_nothing(
        world: FakeRedis, programs: Path, logged: Any) -> None:
    logged.allow("stops acknowledging")
    a = Node("a", world, programs)
    a.send(user_message("echo one"))
    (instance,) = a.runtime.started
    world.down = True
    run_for(world, 7.5)  # lost_after: no refresh for 7 s
    assert instance.gone and not a.router.ready
    receipt = a.send(user_message("echo two", message_id="m2"))
    assert receipt.error is not None and receipt.error["code"] == codes.INTERNAL_ERROR
    world.down = False
    run_for(world, 2.5)  # the next refresh succeeds: serving again
    assert a.router.ready


class Placement:
    """The router's placement hook as libchat.cluster.desk answers it: a
    user message in a dialog with no foreground that asks for "human" must
    be routed by node ``b`` (or, with ``desk`` None, by no node now)."""

    def __init__(self) -> None:
        self.desk: str | None = "b"

    def route(self, engine: Any, up: Any, event: dict[str, Any]) -> str | None:
        info = engine.info(event["dialog_id"])
        if info is not None and info.state == "foreground":
            return None
        if "human" not in event["messages"]["content"]:
            return None
        if self.desk is None:
            from libchat.interfaces import Unavailable
            raise Unavailable("no desk")
        return self.desk

    def recovered(self, record: Any) -> str | None:
        return None


def test_placement_hands_a_dialog_over_to_the_node_it_names(
        world: FakeRedis, programs: Path) -> None:
    """The owner lets go of the dialog and forwards the message; the named
    node claims it and starts the program; the transcript stays contiguous."""
    make_program(programs, "human", keywords=["human"])
    a, b = Node("a", world, programs), Node("b", world, programs)
    for n in (a, b):
        n.router.placement = Placement()
    assert a.send(user_message("hello")).seq == 1  # no program: a 2003, owned by a
    assert a.store.owns("d1")
    receipt = a.send(user_message("human please", message_id="m2"))
    settle(world)
    assert receipt.ok and receipt.seq == 3
    assert not a.store.owns("d1") and b.store.owns("d1")
    assert a.runtime.started == []
    (instance,) = b.runtime.started
    assert [e["messages"]["content"] for e in instance.sent] == ["human please"]
    # a message received by a is forwarded to the new owner
    receipt = a.send(user_message("more", message_id="m3"))
    settle(world)
    assert receipt.seq == 4 and [e["messages"]["content"] for e in instance.sent][-1] == "more"


def test_placement_with_no_node_now_is_a_2004_and_records_nothing(
        world: FakeRedis, programs: Path) -> None:
    make_program(programs, "human", keywords=["human"])
    a = Node("a", world, programs)
    a.router.placement = Placement()
    a.router.placement.desk = None
    a.send(user_message("hello"))
    receipt = a.send(user_message("human please", message_id="m2"))
    assert receipt.error is not None and receipt.error["code"] == codes.INTERNAL_ERROR
    assert a.runtime.started == [] and a.store.owns("d1")


def test_the_lease_lost_hooks_run_before_any_dialog_is_forgotten(
        world: FakeRedis, programs: Path, logged: Any) -> None:
    logged.allow("stops acknowledging")
    logged.allow("a lease-lost hook failed")
    a = Node("a", world, programs)
    a.send(user_message("echo one"))
    (instance,) = a.runtime.started
    seen: list[tuple[str, bool, bool, bool]] = []

    def hook(name: str) -> None:
        seen.append((name, a.router.ready, a.store.owns("d1"), instance.gone))
    a.router.on_lease_lost(lambda: hook("first"))
    a.router.on_lease_lost(lambda: 1 / 0)  # a failing hook stops neither the others nor the rest
    a.router.on_lease_lost(lambda: hook("second"))
    world.down = True
    run_for(world, 7.5)
    assert seen == [("first", False, True, False), ("second", False, True, False)], \
        "not serving, the dialog still owned and its instance running"
    assert instance.gone and not a.store.owns("d1")


def test_a_lease_back_with_the_same_incarnation_releases_the_dialogs_it_forgot(
        world: FakeRedis, programs: Path, logged: Any) -> None:
    """Its claims in Redis would keep every other node from the dialogs while
    this node lives; released, the next event anywhere recovers them."""
    logged.allow("stops acknowledging")
    a, b = Node("a", world, programs), Node("b", world, programs)
    a.send(user_message("echo one"))
    a.send(user_message("echo two", dialog_id="d2"))
    run_for(world, 2)  # just after a refresh of the leases
    incarnation = a.lease.incarnation
    world.down = True
    run_for(world, 7.5)  # lost (7 s), not expired (10 s)
    assert not a.router.ready and not a.store.owned()
    world.down = False
    run_for(world, 0.5)  # the next refresh: the same lease
    assert a.router.ready and a.lease.incarnation == incarnation
    assert world.owned.get("a") == set(), "released"
    assert {d.node for d in world.dialogs.values()} == {None}
    receipt = b.send(user_message("echo three", message_id="m3"))
    settle(world)
    assert receipt.ok and b.store.owns("d1") and not a.store.owns("d1")
    ended = [e for e in b.up.events if e["event_type"] == codes.ENDED]
    assert [e["reason"] for e in ended] == [codes.PROGRAM_EXITED], "its program was stopped"


def test_every_survivor_runs_its_dead_node_callbacks_though_another_forgot_the_node(
        world: FakeRedis, programs: Path, logged: Any) -> None:
    """The first survivor to hand a dead node over removes it from the set
    of nodes; every other survivor must still treat it as dead and run its
    own callbacks (a post-office hub drops that node's clients from memory)
    once, and never forward to it."""
    logged.allow("stops acknowledging")
    a, b, c = Node("a", world, programs), Node("b", world, programs), Node("c", world, programs)
    heard: dict[str, list[str]] = {"a": [], "b": []}
    for name, node in (("a", a), ("b", b)):
        node.router.on_dead(heard[name].append)
    run_for(world, 11)  # all steady
    c.stop_sweeping()
    c.lease._loop.stop()  # c dies, owning no dialog
    run_for(world, 11)  # its lease runs out; the first sweep to see it forgets it
    assert "c" not in world.node_ids
    assert heard == {"a": ["c"], "b": ["c"]}
    assert "c" in a.router.dead and "c" in b.router.dead
    run_for(world, 5)  # later sweeps: not again
    assert heard == {"a": ["c"], "b": ["c"]}


def test_a_reply_spilled_for_a_channel_of_a_dead_node_is_kept_not_sent_to_it(
        world: FakeRedis, programs: Path) -> None:
    """A killed node stays in the channel's set of upstream nodes; a node
    that never saw it alive must not pick its inbox (the reply would be lost)."""
    a = Node("a", world, programs)
    run_for(world, 2)
    world.upstreams["web"] = {"z"}  # a node that died before a started
    a.router.spill("web", {"event_type": 2001, "dialog_id": "d9"}, hops=0)
    settle(world)
    assert len(world.kept.get("web", [])) == 1
