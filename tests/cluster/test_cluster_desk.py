"""The cluster's one operator desk (libchat/cluster/desk.py) on the verified
fakes and one task.Clock: three nodes in one process sharing a FakeRedis
world, each wired as tap.py wires a ``--redis`` node (docs/scaleout.md "One
operator desk for the cluster"). The fakes of the desk's lease and book are
checked against a real redis-server by test_door_stores_contract.py
(``DeskLeaseContract``) and test_opbook_contract.py (``SharedBookContract``);
the same behaviour on real processes: test_operator_desk.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, task

from libchat.cluster.desk import ClusterDesk
from libchat.cluster.dialogs import SharedDialogStore
from libchat.cluster.gate import GatedRuntime
from libchat.cluster.lease import NodeLease
from libchat.cluster.router import ClusterRouter
from libchat.cluster.interfaces import RedisUnavailable
from libchat.cluster.testing import FakeBus, FakeClusterStore, FakeRedis
from libchat.cluster.testing_doors import FakeDeskScripts, FakeOperatorBook, door_state
from libchat.core.library import ProgramLibrary
from libchat.core.router import Router
from libchat.interfaces import Receipt
from libchat.protocol import codes
from libchat.runtimes.operators.runtime import OperatorRuntime
from libchat.runtimes.switch import RuntimeSwitch
from libchat.testing import FakeRuntime, FakeUpstream

from ..helpers import user_message
from ..operators.test_desk import assigned
from ..operators.world import Sink, programs
from .test_cluster_router import run_for, settle

SNAPSHOT, REPLY_3102 = 3100, 3102


class DeskNode:
    """One cluster node as tap.py builds it ("human operators"): the
    operators runtime with its book, the runtime switch behind the gate, the
    engine, the cluster router, and the node's ClusterDesk (as
    ClusterNode.serve_desk makes it, started after the router joined)."""

    def __init__(self, name: str, world: FakeRedis, programs: Path, desk: bool = True,
                 **desk_kw: Any) -> None:
        self.name = name
        self.clock = world.clock
        self.cluster = FakeClusterStore(world)
        self.lease = NodeLease(self.cluster, name, self.clock,
                               on_lost=lambda: self.router.lease_lost(),
                               on_healthy=lambda: self.router.lease_healthy())
        self.store = SharedDialogStore(self.cluster, self.clock, lambda: self.lease.incarnation)
        self.library = ProgramLibrary([programs])
        self.book = FakeOperatorBook(world, name, self.cluster.keys)
        self.runtime = OperatorRuntime(self.clock, self.book)
        self.node = FakeRuntime()  # the "node" runtime (echo)
        switch = GatedRuntime(RuntimeSwitch(self.library, {"node": self.node,
                                                           "operators": self.runtime}),
                              self.store)
        self.engine = Router(self.clock, self.library, switch, self.store, kill_grace=2)
        self.router = ClusterRouter(self.engine, self.store, self.cluster, FakeBus(world),
                                    self.lease, self.clock, name, wall=self.clock.seconds)
        self.runtime.attach(self.engine)
        self.desk = ClusterDesk(self.runtime, self.book, self.library, self.router, self.clock,
                                scripts=FakeDeskScripts(world), **desk_kw)
        self.router.start()
        self.up = FakeUpstream()
        self.lease.start()
        self.router.join()
        self.router.attach(self.up)
        if desk:
            self.desk.start()

    def send(self, event: dict[str, Any]) -> Receipt:
        """A user's event received by this node; its receipt."""
        got = answer(self.router.receive(self.up, event), self.clock)
        assert isinstance(got, Receipt)
        return got

    def connect(self, operator_id: str) -> Sink:
        """An operator's socket on this node's web door."""
        sink = Sink()
        self.desk.operator_connected(operator_id, sink)
        settle_clock(self.clock)
        return sink

    def reply(self, operator_id: str, dialog_id: str, text: str) -> Any:
        """An operator's 3102 through this node's door; what the door answers."""
        return answer(self.desk.operator_event(operator_id, {
            "event_type": REPLY_3102, "dialog_id": dialog_id,
            "messages": {"content": text}}), self.clock)

    @defer.inlineCallbacks
    def stop(self) -> Any:
        """SIGTERM, in LibchatService's order: the router (its instances and
        dialogs), then ClusterNode.stop (the desk, the bus, the lease)."""
        yield self.router.stop()
        yield self.desk.stop()
        yield self.router.bus.stop()
        yield self.lease.stop(release=True)

    def die(self) -> None:
        """kill -9: nothing more runs (within the tests' few seconds: its
        tickets' 300 s waits are left armed); its leases run out on their own."""
        for loop in (self.router._sweep, self.lease._loop, self.desk._loop):
            if loop is not None and loop.running:
                loop.stop()
        self.lease._disarm()  # no "lost after 7 s" either: it is gone, not cut off
        self.router.bus.stop()  # its inbox is read no more


def settle_clock(clock: task.Clock) -> None:
    for _ in range(3):
        clock.advance(0)


def answer(result: Any, clock: task.Clock) -> Any:
    """What a door gets: the value, or what its Deferred fired with (the
    fake world answers at once)."""
    if not isinstance(result, defer.Deferred):
        return result
    got: list[Any] = []
    result.addCallback(got.append)
    settle_clock(clock)
    assert got, "no answer"
    return got[0]


def to_users(nodes: list[DeskNode], dialog_id: str) -> list[dict[str, Any]]:
    return [e for n in nodes for e in n.up.events if e.get("dialog_id") == dialog_id]


def endings(nodes: list[DeskNode]) -> list[dict[str, Any]]:
    return [e for n in nodes for e in n.up.events if e["event_type"] == codes.ENDED]


@pytest.fixture
def world() -> FakeRedis:
    return FakeRedis(task.Clock())


@pytest.fixture
def progs(tmp_path: Path) -> Path:
    """The bundled ``human`` program (one dialog per operator) and echo."""
    return programs(tmp_path, max_per_operator=1)


def cluster(world: FakeRedis, progs: Path, names: str = "abc", **desk_kw: Any
            ) -> list[DeskNode]:
    nodes = [DeskNode(n, world, progs, **desk_kw) for n in names]
    settle(world)
    return nodes


def the_desk(nodes: list[DeskNode]) -> DeskNode:
    (desk,) = [n for n in nodes if n.desk.ready]
    return desk


# -- who is the desk ------------------------------------------------------------------


def test_exactly_one_node_becomes_the_desk_and_every_node_names_it(
        world: FakeRedis, progs: Path) -> None:
    nodes = cluster(world, progs)
    run_for(world, 1)  # a tick on every node
    assert [n.desk.ready for n in nodes] == [True, False, False]
    assert [n.desk.desk_node for n in nodes] == ["a", "a", "a"]
    run_for(world, 30)  # refreshed past its ttl: still the one desk
    assert [n.desk.ready for n in nodes] == [True, False, False]
    assert [n.desk.desk_node for n in nodes] == ["a", "a", "a"]
    (value,) = [v for v, _ in door_state(world).desk_leases.values()]
    assert value.decode() == nodes[0].desk.value


def test_a_node_that_is_not_serving_never_takes_the_desk(
        world: FakeRedis, progs: Path) -> None:
    a = DeskNode("a", world, progs, desk=False)
    a.router.lease_lost()  # no lease: the router does not serve
    a.desk.start()
    run_for(world, 1.5)
    assert a.desk.desk_node is None and not a.desk.ready
    assert door_state(world).desk_leases == {}
    a.router.lease_healthy()
    run_for(world, 1)
    assert a.desk.ready and a.desk.desk_node == "a"


# -- placement --------------------------------------------------------------------------


def test_a_message_for_the_operators_program_is_routed_by_the_desk_node(
        world: FakeRedis, progs: Path) -> None:
    a, b, _ = cluster(world, progs)
    event = user_message("human please")
    assert b.desk.route(b.engine, b.up, event) == "a"
    receipt = b.send(event)
    settle(world)
    assert receipt.ok and receipt.seq == 1
    assert a.store.owns("d1") and not b.store.owns("d1")
    assert [t.dialog_id for t in a.runtime.queue()] == ["d1"] and b.runtime.queue() == []
    (told,) = b.up.events  # the user, on b, hears their place from the desk node
    assert told["event_type"] == codes.REPLY and told["status"] == "queued"
    assert told["place"] == 1


def test_a_message_for_an_ordinary_program_stays_on_the_node_that_got_it(
        world: FakeRedis, progs: Path) -> None:
    a, b, _ = cluster(world, progs)
    event = user_message("echo hi")
    assert b.desk.route(b.engine, b.up, event) is None
    assert b.send(event).ok
    assert b.store.owns("d1") and not a.store.owns("d1")
    assert [i.program for i in b.node.started] == ["echo"] and a.runtime.queue() == []


def test_a_platform_apps_fallback_to_the_operators_program_is_routed_by_the_desk(
        world: FakeRedis, progs: Path) -> None:
    a, b, _ = cluster(world, progs)
    up = FakeUpstream("lark:bot")
    up.fallback = "human"  # type: ignore[attr-defined]
    assert b.desk.route(b.engine, up, user_message("where is my parcel?")) == "a"
    assert b.desk.route(b.engine, b.up, user_message("where is my parcel?")) is None


def test_with_no_desk_a_message_for_the_operators_program_is_a_2004_and_records_nothing(
        world: FakeRedis, progs: Path) -> None:
    a, b = DeskNode("a", world, progs, desk=False), DeskNode("b", world, progs, desk=False)
    receipt = b.send(user_message("human please"))
    assert receipt.error is not None and receipt.error["code"] == codes.INTERNAL_ERROR
    assert "d1" not in world.logs
    assert a.runtime.queue() == [] and b.runtime.queue() == [] and b.up.events == []
    assert b.send(user_message("echo hi", dialog_id="d2")).ok, "other programs are served"


# -- operators on any node ----------------------------------------------------------------


def test_an_operator_on_another_node_is_served_by_the_desk_through_its_node(
        world: FakeRedis, progs: Path) -> None:
    a, b, c = cluster(world, progs)
    ada = b.connect("ada")
    assert ada.types() == [SNAPSHOT]  # through a's RemoteSink and b's inbox
    (op,) = a.runtime.operators()
    assert op.operator_id == "ada" and len(op.sinks) == 1
    c.send(user_message("human please"))  # the user is on c
    settle(world)
    assert assigned(ada) == ["d1"]
    assert answer(b.desk.assigned_to("d1"), b.clock) == "ada"
    assert b.reply("ada", "d1", "hello, I am Ada") is None  # answered by a's runtime
    settle(world)
    (reply,) = [e for e in c.up.events if e.get("operator") == "ada"]
    assert reply["event_type"] == codes.REPLY
    assert reply["messages"]["content"] == "hello, I am Ada"
    refused = b.reply("bob", "d1", "me too")
    assert refused["event_type"] == codes.ERROR and refused["code"] == codes.BAD_REQUEST
    # the socket closes on b: the desk forgets it (ada is away)
    b.desk.operator_gone("ada", ada)
    settle(world)
    assert op.sinks == [] and op.away is not None


def test_a_3102_the_desk_does_not_answer_is_a_2004_after_exactly_ask_timeout(
        world: FakeRedis, progs: Path) -> None:
    a, b, _ = cluster(world, progs)
    ada = b.connect("ada")
    b.send(user_message("human please"))
    assert assigned(ada) == ["d1"]
    a.router.bus.stop()  # the desk node reads its inbox no more (it still holds its leases)
    got: list[Any] = []
    b.desk.operator_event("ada", {"event_type": REPLY_3102, "dialog_id": "d1",
                                  "messages": {"content": "anyone?"}}).addCallback(got.append)
    step = 1 / 1024
    world.clock.advance(b.desk.ask_timeout - step)
    assert got == []
    world.clock.advance(step)
    (failed,) = got
    assert failed["event_type"] == codes.ERROR and failed["code"] == codes.INTERNAL_ERROR
    assert failed["dialog_id"] == "d1"
    assert not [e for e in b.up.events if e.get("operator") == "ada"]


# -- the desk moves --------------------------------------------------------------------------


def queue_and_assign(nodes: list[DeskNode]) -> tuple[Sink, Sink]:
    """ada (on c) holds d1, bob (on b) holds d2, d3 and d4 wait in that order;
    users on b and c."""
    _, b, c = nodes
    ada = c.connect("ada")
    b.send(user_message("human", dialog_id="d1", user_id="u1"))
    bob = b.connect("bob")
    c.send(user_message("human", dialog_id="d2", user_id="u2"))
    b.send(user_message("human", dialog_id="d3", user_id="u3"))
    c.send(user_message("human", dialog_id="d4", user_id="u4"))
    assert (assigned(ada), assigned(bob)) == (["d1"], ["d2"])
    return ada, bob


def assert_took_over(desk: DeskNode, ada: Sink, bob: Sink) -> None:
    assert [t.dialog_id for t in desk.runtime.queue()] == ["d3", "d4"]
    assert [desk.runtime.assigned_to(d) for d in ("d1", "d2")] == ["ada", "bob"]
    assert all(desk.store.owns(d) for d in ("d1", "d2", "d3", "d4"))
    assert desk.runtime.kept() == []
    # each operator's socket was registered with the new desk: a new
    # snapshot, and its dialog again
    assert ada.types().count(SNAPSHOT) == 2 and assigned(ada) == ["d1", "d1"]
    assert bob.types().count(SNAPSHOT) == 2 and assigned(bob) == ["d2", "d2"]


def test_the_desk_node_stopped_hands_the_desk_and_its_tickets_over_without_a_2002(
        world: FakeRedis, progs: Path) -> None:
    nodes = cluster(world, progs)
    a, b, c = nodes
    ada, bob = queue_and_assign(nodes)
    stopped = a.stop()
    settle(world)
    assert stopped.called
    assert door_state(world).desk_leases == {}, "the desk lease was dropped"
    assert set(door_state(world).desks[a.book.key]) == {"d1", "d2", "d3", "d4"}
    run_for(world, 1)  # the next tick of the others
    desk = the_desk([b, c])
    assert b.desk.desk_node == c.desk.desk_node == desk.name
    assert_took_over(desk, ada, bob)
    assert endings(nodes) == []
    # the desk serves on: ada's 3102 reaches u1 (whose node is b)
    assert c.reply("ada", "d1", "still here") is None
    settle(world)
    assert [e["messages"]["content"] for e in to_users(nodes, "d1")
            if e.get("operator") == "ada"] == ["still here"]


def test_the_desk_node_dead_a_survivor_takes_over_once_the_desk_lease_runs_out(
        world: FakeRedis, progs: Path) -> None:
    nodes = cluster(world, progs)
    a, b, c = nodes
    run_for(world, 11)  # b and c are steady (they adopt a dead node's dialogs)
    ada, bob = queue_and_assign(nodes)
    a.die()
    run_for(world, 8)  # the desk lease (10 s, refreshed each second) still runs
    assert not b.desk.ready and not c.desk.ready
    assert b.desk.desk_node == c.desk.desk_node == "a"
    run_for(world, 3)
    desk = the_desk([b, c])
    assert b.desk.desk_node == c.desk.desk_node == desk.name
    assert_took_over(desk, ada, bob)
    assert endings(nodes) == []
    assert [n.runtime.queue() for n in (b, c) if n is not desk] == [[]]


def test_kept_tickets_whose_dialogs_a_live_lease_still_holds_are_claimed_once_it_runs_out(
        world: FakeRedis, progs: Path) -> None:
    """The new desk takes over while the dead node still holds its dialogs
    (a desk lease shorter than a node lease); it claims them again each tick,
    itself: it joined too recently to adopt them in its sweep."""
    a = DeskNode("a", world, progs, ttl_ms=3000)
    run_for(world, 11)
    b = DeskNode("b", world, progs, ttl_ms=3000)  # users and operators on b
    ada, bob = queue_and_assign([a, b, b])
    a.die()
    run_for(world, 4)  # the desk lease ran out; a's node lease has not
    assert b.desk.ready and world.holder("a") is not None
    assert sorted(b.runtime.kept()) == ["d1", "d2", "d3", "d4"]
    assert not any(b.store.owns(d) for d in ("d1", "d2", "d3", "d4"))
    while world.holder("a") is not None:  # b's tick as it runs out claims them
        run_for(world, 0.25)
    assert not b.lease.steady, "b's sweep adopts nothing yet"
    assert_took_over(b, ada, bob)
    assert endings([a, b]) == []


def test_a_redis_outage_during_a_tick_changes_nothing_and_the_next_tick_goes_on(
        world: FakeRedis, progs: Path) -> None:
    a, b, _ = cluster(world, progs)
    run_for(world, 1)
    leases = door_state(world).desk_leases
    (expires_before,) = [t for _, t in leases.values()]
    world.down = True
    ticked: list[Any] = []
    a.desk._tick().addBoth(ticked.append)
    b.desk._tick().addBoth(ticked.append)
    assert ticked == [None, None], "no exception escapes a tick"
    run_for(world, 2)  # the loops' ticks fail too
    assert a.desk._loop is not None and a.desk._loop.running
    assert b.desk._loop is not None and b.desk._loop.running
    assert a.desk.ready and a.desk.holder == a.desk.value
    assert b.desk.desk_node == "a" and not b.desk.ready
    assert [t for _, t in leases.values()] == [expires_before]
    world.down = False
    run_for(world, 1)
    assert [t for _, t in leases.values()] == [world.clock.seconds() + 10], "refreshed"
    assert a.desk.ready and b.desk.desk_node == "a"



def test_the_desk_forgets_the_sockets_of_a_dead_node_and_its_operator_comes_back_elsewhere(
        world: FakeRedis, progs: Path) -> None:
    a, b, c = cluster(world, progs)
    run_for(world, 11)  # a is steady: its sweep hands over what dead nodes held
    ada = c.connect("ada")
    b.send(user_message("human please"))
    assert assigned(ada) == ["d1"]
    c.die()
    run_for(world, 11)  # c's lease runs out; a's sweep finds it dead
    (op,) = a.runtime.operators()
    assert op.sinks == [] and op.away is not None, "ada is away (30 s to come back)"
    assert a.runtime.assigned_to("d1") == "ada"
    back = b.connect("ada")  # the console reconnects to another node
    assert back.types() == [SNAPSHOT, 3101] and assigned(back) == ["d1"]
    assert op.away is None and len(op.sinks) == 1


class LateAnswers:
    """A node's desk scripts whose answers it reads a reactor turn after
    Redis ran them (as a real node does: meanwhile other nodes see the result)."""

    def __init__(self, scripts: Any, clock: task.Clock) -> None:
        self.scripts, self.clock = scripts, clock

    def call(self, name: str, keys: list[str], args: list[Any]) -> defer.Deferred[Any]:
        d = self.scripts.call(name, keys, args)
        return d.addBoth(lambda result: task.deferLater(self.clock, 0, lambda: result))


def test_a_socket_registered_before_the_new_desk_read_its_own_take_is_registered(
        world: FakeRedis, progs: Path) -> None:
    """c sees b holding the lease and registers ada's socket there before b
    has read the answer of the script that gave it the lease."""
    a, b, c = cluster(world, progs)
    ada = c.connect("ada")
    b.desk.scripts = LateAnswers(b.desk.scripts, world.clock)
    a.stop()
    settle(world)
    run_for(world, 1)  # b's tick takes the lease; c's tick, in between, sees b
    assert b.desk.ready and c.desk.desk_node == "b"
    run_for(world, 3)
    assert ada.types() == [SNAPSHOT, SNAPSHOT]
    (op,) = b.runtime.operators()
    assert op.operator_id == "ada" and len(op.sinks) == 1


def test_a_socket_registered_with_a_node_that_is_not_the_desk_is_not_kept_there(
        world: FakeRedis, progs: Path) -> None:
    """A registration that reached a node which is not the desk (the sender's
    view was old) is dropped at that node's next tick: it never becomes a
    socket the node offers dialogs to once it is the desk."""
    a, b, c = cluster(world, progs)
    ada = c.connect("ada")
    c.desk.holder = b.desk.value  # c's view is wrong: bob's socket is registered with b
    bob = c.connect("bob")
    run_for(world, 1)  # c sees a: both sockets registered with a
    assert bob.types() == [SNAPSHOT]
    c.desk.operator_gone("bob", bob)  # bob leaves: a is told
    a.stop()
    settle(world)
    run_for(world, 1)
    assert b.desk.ready
    assert [op.operator_id for op in b.runtime.operators()] == ["ada"]
    assert ada.types().count(SNAPSHOT) == 3  # from a twice (c registered it again), then b


def test_a_registration_of_a_socket_its_node_no_longer_has_is_undone_by_that_node(
        world: FakeRedis, progs: Path) -> None:
    """b keeps a registration from c's old view and becomes the desk before
    its next tick, after the socket closed (told to a): c answers the desk's
    first event to it with a close, so no dialog is offered to no one."""
    a, b, c = cluster(world, progs)
    ada = c.connect("ada")
    c.desk.holder = b.desk.value  # c's old view: bob's socket registered with b
    bob = c.connect("bob")
    c.desk.holder = a.desk.value
    c.desk.operator_gone("bob", bob)  # bob leaves: a is told, not b
    a.stop()
    settle(world)
    run_for(world, 1)  # b's next tick takes the desk
    assert b.desk.ready
    assert [op.operator_id for op in b.runtime.operators() if op.sinks] == ["ada"]
    assert ada.types().count(SNAPSHOT) == 2
    b.send(user_message("human please"))
    assert assigned(ada) == ["d1"]


# -- the desk node loses its lease alive ------------------------------------------------------

RELEASED_3105 = 3105


class Cut:
    """One node's way to the shared world, which can be cut while the other
    nodes still reach Redis (a partition, or the node frozen): every call it
    makes fails while ``cut``. (Messages others post to its inbox still
    arrive; it cannot answer them.)"""

    def __init__(self, world: FakeRedis) -> None:
        self.world = world
        self.cut = False

    def run(self, fn: Any) -> defer.Deferred[Any]:
        if self.cut:
            return defer.fail(RedisUnavailable("redis: (fake) this node is cut off"))
        return self.world.run(fn)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.world, name)


def cut_off(node: DeskNode, world: FakeRedis) -> Cut:
    cut = Cut(world)
    for part in (node.cluster, node.router.bus, node.book, node.book.scripts,
                 node.desk.scripts):
        part.world = cut  # type: ignore[attr-defined]
    return cut


class Watched:
    """A node's desk scripts, watched: how often it let go of the desk lease
    and every refresh or take of it while its router was not serving."""

    def __init__(self, node: DeskNode, world: FakeRedis) -> None:
        self.node, self.scripts, self.state = node, node.desk.scripts, door_state(world)
        self.drops = 0
        self.kept_while_not_serving: list[tuple[bytes, float]] = []
        node.desk.scripts = self

    def call(self, name: str, keys: list[str], args: list[Any]) -> defer.Deferred[Any]:
        before = dict(self.state.desk_leases)
        d = self.scripts.call(name, keys, args)
        if not self.node.router.ready:
            self.drops += name == "desk_drop"
            after = self.state.desk_leases.get(keys[0])
            if name == "desk_lease" and after is not None and after != before.get(keys[0]):
                self.kept_while_not_serving.append(after)
        return d


def after_a_lease_refresh(world: FakeRedis, nodes: list[DeskNode]) -> None:
    """Run until every node's lease was refreshed this very step: an outage
    from now on loses the leases after 7 s and lets them run out after 10."""
    while any(n.lease.last_ok != world.clock.seconds() for n in nodes):
        world.clock.advance(0.25)


def assert_served_on(nodes: list[DeskNode], desk: DeskNode, ada: Sink, bob: Sink) -> None:
    """queue_and_assign's dialogs as the desk holds them after a move: the
    queue in its order, the assignments with their operators (told again),
    all owned by the desk, no 2002 to any user, no 3105 to an operator; ada
    (whose socket is on c) replies and the user (on b) gets it."""
    assert [n.desk.desk_node for n in nodes] == [desk.name] * len(nodes)
    assert [t.dialog_id for t in desk.runtime.queue()] == ["d3", "d4"]
    assert [desk.runtime.assigned_to(d) for d in ("d1", "d2")] == ["ada", "bob"]
    assert all(desk.store.owns(d) for d in ("d1", "d2", "d3", "d4"))
    assert desk.runtime.kept() == []
    assert not any(n.store.owns(d) for n in nodes if n is not desk
                   for d in ("d1", "d2", "d3", "d4"))
    assert ada.types()[-2:] == [SNAPSHOT, 3101] and assigned(ada)[-1] == "d1"
    assert bob.types()[-2:] == [SNAPSHOT, 3101] and assigned(bob)[-1] == "d2"
    assert endings(nodes) == []
    assert ada.of(RELEASED_3105) == [] and bob.of(RELEASED_3105) == []
    assert nodes[2].reply("ada", "d1", "still here") is None
    for _ in range(3):
        desk.clock.advance(0)
    assert [e["messages"]["content"] for e in to_users(nodes, "d1")
            if e.get("operator") == "ada"] == ["still here"]


def assert_suspended(node: DeskNode, world: FakeRedis) -> None:
    """No longer the desk, nothing held in memory, every ticket in its hash."""
    assert not node.desk.ready and not node.router.ready
    assert node.runtime.queue() == [] and node.runtime.operators() == []
    assert node.runtime.kept() == [] and node.book.load() == []
    assert node.engine.instances() == [], "the forgotten instances' bindings went too"
    assert sorted(door_state(world).desks[node.book.key]) == ["d1", "d2", "d3", "d4"]


def losing_desk(world: FakeRedis, progs: Path, logged: Any, steady: bool = False
                ) -> tuple[list[DeskNode], Sink, Sink, Watched]:
    """Three nodes (b and c steady first if ``steady``), a the desk with
    queue_and_assign's dialogs, a's desk scripts watched; what a lease lost
    or gone logs is expected."""
    logged.allow("stops acknowledging")
    logged.allow("its dialogs are no longer its own")
    nodes = cluster(world, progs)
    if steady:
        run_for(world, 11)
    ada, bob = queue_and_assign(nodes)
    return nodes, ada, bob, Watched(nodes[0], world)


def test_a_redis_outage_past_the_leases_keeps_every_ticket_and_the_next_desk_resumes_them(
        world: FakeRedis, progs: Path, logged: Any) -> None:
    nodes, ada, bob, watch = losing_desk(world, progs, logged)
    a = nodes[0]
    world.down = True
    run_for(world, 7.5)  # every node's lease is lost (7 s without a refresh)
    assert_suspended(a, world)
    assert endings(nodes) == []
    run_for(world, 5)  # past 10 s: every lease ran out, the desk lease too
    world.down = False
    run_for(world, 6)  # new leases (new incarnations), a desk, its take-over
    assert all(n.router.ready for n in nodes)
    assert_served_on(nodes, the_desk(nodes), ada, bob)
    assert watch.drops >= 1 and watch.kept_while_not_serving == []


def test_a_desk_node_whose_lease_refreshes_stall_drops_no_ticket_though_redis_answers(
        world: FakeRedis, progs: Path, logged: Any) -> None:
    """Only its lease's refreshes stop (a stuck loop, say): it loses its lease
    with Redis answering every other write, so a ticket dropped would be gone
    for good. It lets go of the desk lease at once; another node takes the
    desk and the tickets, and the dialogs once a's lease ran out."""
    nodes, ada, bob, watch = losing_desk(world, progs, logged)
    a, b, c = nodes
    assert a.lease._loop is not None
    a.lease._loop.stop()
    run_for(world, 7.5)
    assert watch.drops >= 1 and door_state(world).desk_leases != {}, "let go, and taken"
    desk = the_desk([b, c])
    assert not a.desk.ready and desk.desk.desk_node == desk.name
    run_for(world, 4)  # a's lease ran out: the new desk claims a's dialogs
    a.lease._loop.start(a.lease.every)  # a comes back (a new lease)
    run_for(world, 5)
    assert a.router.ready and not a.desk.ready
    assert_served_on(nodes, desk, ada, bob)
    assert watch.kept_while_not_serving == []


def test_the_desk_node_cut_off_past_its_lease_the_others_take_the_desk_and_every_ticket(
        world: FakeRedis, progs: Path, logged: Any) -> None:
    """The others serve on: one of them takes the desk lease once it runs
    out, a's hash (it dropped nothing) and a's dialogs once a's lease ran out
    too; a, back, names the new desk and is not it. (b and c are steady:
    they adopt a dead node's dialogs.)"""
    nodes, ada, bob, watch = losing_desk(world, progs, logged, steady=True)
    a, b, c = nodes
    cut = cut_off(a, world)
    cut.cut = True
    run_for(world, 7.5)
    assert not a.router.ready and not a.desk.ready and a.runtime.queue() == []
    run_for(world, 5)
    desk = the_desk([b, c])
    assert_served_on([a, b, c], desk, ada, bob)
    cut.cut = False
    run_for(world, 5)  # a holds a new lease, serves again and is not the desk
    assert a.router.ready and the_desk(nodes) is desk
    assert a.runtime.queue() == [] and a.book.load() == []
    assert endings(nodes) == [] and a.desk.desk_node == desk.name
    assert watch.kept_while_not_serving == []


def test_an_outage_the_node_lease_outlives_ends_with_every_dialog_resumed_by_the_new_desk(
        world: FakeRedis, progs: Path, logged: Any) -> None:
    """Cut off for 7.5 s: a's lease is lost, not gone; back, it is the same
    lease, under which a still claims the dialogs it forgot. b, the desk
    meanwhile (a desk lease of 3 s), cannot claim them while a lives: a
    releases them when its lease is healthy again, and b resumes them."""
    logged.allow("stops acknowledging")
    a = DeskNode("a", world, progs, ttl_ms=3000)
    run_for(world, 11)
    b = DeskNode("b", world, progs, ttl_ms=3000)  # users and operators on b
    ada, bob = queue_and_assign([a, b, b])
    after_a_lease_refresh(world, [a])
    incarnation = a.lease.incarnation
    cut = cut_off(a, world)
    cut.cut = True
    run_for(world, 7.5)
    assert not a.router.ready and not a.desk.ready and a.runtime.queue() == []
    assert b.desk.ready and sorted(b.runtime.kept()) == ["d1", "d2", "d3", "d4"]
    assert world.holder("a") == incarnation, "a still claims them"
    cut.cut = False
    run_for(world, 2)
    assert a.router.ready and a.lease.incarnation == incarnation, "the same lease"
    assert_took_over(b, ada, bob)
    assert endings([a, b]) == [] and ada.of(RELEASED_3105) == []
    assert b.reply("ada", "d1", "still here") is None
    settle(world)
    assert [e["messages"]["content"] for e in to_users([a, b], "d1")
            if e.get("operator") == "ada"] == ["still here"]


def test_a_whole_outage_the_leases_outlive_ends_with_every_dialog_resumed(
        world: FakeRedis, progs: Path, logged: Any) -> None:
    """Redis gone for 7.5 s for every node: every lease is lost and comes
    back the same; whichever node takes the desk resumes every dialog."""
    logged.allow("stops acknowledging")
    nodes = cluster(world, progs)
    a, b, c = nodes
    ada, bob = queue_and_assign(nodes)
    after_a_lease_refresh(world, nodes)
    incarnations = [n.lease.incarnation for n in nodes]
    watch = Watched(a, world)
    world.down = True
    run_for(world, 7.5)
    assert_suspended(a, world)
    world.down = False
    run_for(world, 3)
    assert [n.lease.incarnation for n in nodes] == incarnations
    assert_served_on(nodes, the_desk(nodes), ada, bob)
    assert watch.kept_while_not_serving == []


def test_a_desk_that_finds_the_desk_lease_taken_hands_its_dialogs_and_tickets_over(
        world: FakeRedis, progs: Path) -> None:
    """Its node lease is fine, the desk lease is not its own any more (lost
    with a Redis fail-over, say): it stops being the desk keeping every
    ticket and releases the desk's dialogs; the new desk resumes them."""
    nodes = cluster(world, progs)
    a, b, c = nodes
    ada, bob = queue_and_assign(nodes)
    door_state(world).desk_leases.clear()
    b.desk._tick()  # b takes it: a's tickets, a's dialogs not yet (a holds them)
    settle(world)
    assert b.desk.ready and sorted(b.runtime.kept()) == ["d1", "d2", "d3", "d4"]
    a.desk._tick()  # a sees b
    settle(world)
    assert not a.desk.ready and a.router.ready
    assert a.runtime.queue() == [] and a.book.load() == [] and a.engine.instances() == []
    assert not any(a.store.owns(d) for d in ("d1", "d2", "d3", "d4"))
    assert world.owned.get("a", set()) == set(), "released for b to claim"
    run_for(world, 1.5)
    assert_served_on(nodes, b, ada, bob)
