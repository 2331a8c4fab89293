"""One operator desk for three real twistd nodes on one redis-server
(CONTRACT §13 under §14; docs/scaleout.md "Operator desk").

Users and operators on real WebSockets (development mode: ``?user_id=`` and
``?role=operator``), each on a node of its own: the dialogs of the bundled
``human`` program live on the desk node wherever their users are, operators
reach the desk from any node, and the desk's death costs no one their place.
The tests share one cluster and run in file order; the last one kills the
desk node.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any, Callable

import pytest
from websockets.sync.client import ClientConnection, connect

from ..launcher import wait_until
from .nodes import Node, started_nodes
from .redis_server import RedisServer

pytestmark = pytest.mark.timeout(180)


class WS:
    """A blocking WebSocket client of one node's ``/ws``; every wait bounded."""

    def __init__(self, node: Node, user_id: str, operator: bool = False) -> None:
        role = "&role=operator" if operator else ""
        self.conn: ClientConnection = connect(
            f"ws://127.0.0.1:{node.ports['web']}/ws?user_id={user_id}{role}",
            open_timeout=10).__enter__()  # closed by close()
        self.seen: list[dict[str, Any]] = []

    def send(self, event: dict[str, Any]) -> None:
        self.conn.send(json.dumps(event))

    def say(self, dialog_id: str, text: str) -> None:
        self.send({"event_type": 1001, "dialog_id": dialog_id, "message_id": uuid.uuid4().hex,
                   "messages": {"content": text, "attachments": []}})

    def until(self, done: Callable[[dict[str, Any]], bool], timeout: float = 15.0
              ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"not within {timeout}s; seen: {self.seen[-10:]}")
            event = json.loads(self.conn.recv(timeout=left))
            self.seen.append(event)
            if done(event):
                return event

    def close(self) -> None:
        self.conn.close()


def of(event_type: int, dialog_id: str | None = None) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e.get("event_type") == event_type and (
        dialog_id is None or e.get("dialog_id") == dialog_id)


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def nodes(redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Node]]:
    work = tmp_path_factory.mktemp("desk")
    with started_nodes(work, redis, ("d1", "d2", "d3")) as started:
        yield started


def roles(nodes: list[Node], timeout: float = 30.0) -> tuple[Node, Node, Node]:
    """(the desk node, two others), once every live node serves (it holds its
    lease again after an outage) and names the same desk."""
    live = [n for n in nodes if n.running]

    def agreed() -> str | None:
        time.sleep(0.2)
        health = [n.health() for n in live]
        if not all(h.get("serving") for h in health):
            return None
        seen = {h.get("operator_desk") for h in health}
        desk = seen.pop() if len(seen) == 1 else None
        return desk if desk in {n.node_id for n in live} else None
    desk_id = wait_until(agreed, timeout, "every node serving, one operator desk named by all")
    desk = next(n for n in live if n.node_id == desk_id)
    others = [n for n in nodes if n is not desk]
    return desk, others[0], others[1]


def test_a_user_on_one_node_is_served_by_an_operator_on_another(nodes: list[Node]) -> None:
    """The human dialog lives on the desk node; neither the user nor the
    operator is connected there: 3101 with the user's words, 3102 -> the
    user's 2001 with ``operator``, 3103 -> 2002 ``completed``."""
    desk, a, b = roles(nodes)
    op_id, d = uid("op"), uid("d")
    op = WS(b, op_id, operator=True)
    alice = WS(a, uid("alice"))
    try:
        op.until(of(3100))
        alice.say(d, "转人工")
        assigned = op.until(of(3101, d))
        assert assigned["program"] == "human"
        assert [e["messages"]["content"] for e in assigned["transcript"]
                if e["event_type"] == 1001] == ["转人工"]
        op.send({"event_type": 3102, "dialog_id": d, "messages": {"content": "你好, 我是客服"}})
        reply = alice.until(of(2001, d))
        assert reply["operator"] == op_id and reply["messages"]["content"] == "你好, 我是客服"
        # the desk node owns it: the user's next words reach the operator
        alice.say(d, "谢谢")
        heard = op.until(lambda e: of(1001, d)(e) and e["messages"]["content"] == "谢谢")
        assert heard["seq"] > reply["seq"]
        op.send({"event_type": 3103, "dialog_id": d})
        ended = alice.until(of(2002, d))
        assert ended["reason"] == "completed"
        # another operator's write is refused wherever it comes from
        other = WS(a, uid("op"), operator=True)
        try:
            other.until(of(3100))
            other.send({"event_type": 3102, "dialog_id": d, "messages": {"content": "x"}})
            refused = other.until(of(2004))
            assert "not assigned to you" in refused["message"]
        finally:
            other.close()
    finally:
        op.close()
        alice.close()


def test_users_on_two_nodes_queue_first_come_first_served(nodes: list[Node]) -> None:
    """Two users on two nodes wait in one queue (places 1 and 2); an operator
    connecting on the third node is offered them in that order."""
    desk, a, b = roles(nodes)
    d1, d2 = uid("q1"), uid("q2")
    u1, u2 = WS(a, uid("u1")), WS(b, uid("u2"))
    op = None
    try:
        u1.say(d1, "转人工")
        assert u1.until(of(2001, d1))["place"] == 1
        u2.say(d2, "人工客服")
        assert u2.until(of(2001, d2))["place"] == 2
        op = WS(desk, uid("op"), operator=True)
        snapshot = op.until(of(3100))
        assert [q["dialog_id"] for q in snapshot["queue"]] == [d1, d2]
        first = op.until(of(3101))
        second = op.until(of(3101))
        assert [first["dialog_id"], second["dialog_id"]] == [d1, d2]
        for d in (d1, d2):
            op.send({"event_type": 3103, "dialog_id": d})
        assert u1.until(of(2002, d1))["reason"] == "completed"
        assert u2.until(of(2002, d2))["reason"] == "completed"
    finally:
        for c in (u1, u2, op):
            if c is not None:
                c.close()


class HeldAndQueued:
    """An operator's assigned dialog (the operator then away: 30 s before
    losing it, counted again by a new desk) and two queued users, places 1
    and 2; users on the non-desk nodes ``a`` and ``b``."""

    def __init__(self, a: Node, b: Node, tag: str) -> None:
        self.op_id = uid("op")
        self.dialogs = held, q1, q2 = uid(f"{tag}h"), uid(f"{tag}1"), uid(f"{tag}2")
        self.users = {d: WS(n, uid("u")) for d, n in ((held, a), (q1, b), (q2, a))}
        op = WS(b, self.op_id, operator=True)
        try:
            op.until(of(3100))
            self.users[held].say(held, "转人工")
            op.until(of(3101, held))
        finally:
            op.close()
        for d, place in ((q1, 1), (q2, 2)):
            self.users[d].say(d, "转人工")
            assert self.users[d].until(of(2001, d))["place"] == place

    def served_after(self, nodes: list[Node]) -> Node:
        """After a failure: one desk again (returned); the operator, back on a
        live node, is offered all three (the queue's order kept), answers the
        held one and the first queued, ends all three; no user saw a 2002 but
        those ``completed``."""
        held, q1, q2 = self.dialogs
        desk, x, y = roles(nodes, timeout=40.0)
        op = WS(x if x.running else y, self.op_id, operator=True)
        try:
            op.until(of(3100), timeout=20.0)
            order: list[str] = []
            deadline = time.monotonic() + 30.0
            while not set(self.dialogs) <= set(order):
                e = op.until(of(3101), timeout=max(0.1, deadline - time.monotonic()))
                order.append(e["dialog_id"])
            assert order.index(q1) < order.index(q2), order  # the queue kept its order
            for d in (held, q1):
                op.send({"event_type": 3102, "dialog_id": d,
                         "messages": {"content": f"back {d}"}})
                reply = self.users[d].until(lambda e, d=d: of(2001, d)(e) and "operator" in e)
                assert reply["operator"] == self.op_id
            for d in self.dialogs:
                op.send({"event_type": 3103, "dialog_id": d})
                assert self.users[d].until(of(2002, d))["reason"] == "completed"
            for user in self.users.values():
                assert [e["reason"] for e in user.seen if e.get("event_type") == 2002] == [
                    "completed"], user.seen
        finally:
            op.close()
        return desk

    def close(self) -> None:
        for user in self.users.values():
            user.close()


OUTAGE = 12.0  # seconds without Redis: past the 7 s after which a node stops
# serving and the 10 s TTL of every lease (node leases and the desk lease)


def test_a_redis_outage_past_every_lease_keeps_the_queue_and_the_assignments(
        nodes: list[Node], redis: RedisServer) -> None:
    """redis-server gone for 12 s: every node loses its lease, the desk node
    stops being the desk keeping its tickets (docs/scaleout.md "A desk node
    that loses its lease alive"); once Redis is back one node is the desk
    again and resumes them all, no 2002."""
    _, a, b = roles(nodes)
    three = HeldAndQueued(a, b, "o")
    try:
        redis.kill9()
        time.sleep(OUTAGE)  # the scenario's length, not a wait for something
        redis.restart()
        three.served_after(nodes)
    finally:
        three.close()


FREEZE = 7.5  # seconds: past the 7 s after which a node stops serving, short of
# the 10 s TTL of its leases (they are still its own when it wakes)


def test_a_desk_node_frozen_past_its_lease_check_drops_no_ticket(nodes: list[Node]) -> None:
    """The desk node frozen (``SIGSTOP``) for 7.5 s while Redis answers: it
    wakes having lost its lease (7 s without a refresh), still holding both
    leases in Redis. Its router forgets its dialogs, which used to drop their
    tickets from Redis; now it stops being the desk keeping them
    (``ClusterRouter.on_lease_lost``), lets go of the desk lease, releases
    the dialogs, and the next desk resumes all three, no 2002."""
    desk, a, b = roles(nodes)
    three = HeldAndQueued(a, b, "f")
    try:
        desk.signal(signal.SIGSTOP)
        try:
            time.sleep(FREEZE)  # the scenario's length, not a wait for something
        finally:
            desk.signal(signal.SIGCONT)
        desk.wait_log(r"operator desk: this node is no longer the desk", 15)
        three.served_after(nodes)
    finally:
        three.close()


def test_the_desk_node_killed_a_survivor_takes_the_queue_and_the_assignments(
        nodes: list[Node]) -> None:
    """kill -9 of the desk node: within seconds of its lease running out a
    survivor holds the desk and its tickets; the queued users keep their
    order, the assigned dialog its operator (who is back within 30 s, on a
    survivor), and no user gets a 2002 ``program_exited``."""
    desk, a, b = roles(nodes)
    three = HeldAndQueued(a, b, "k")
    try:
        desk.kill9()
        new_desk = three.served_after(nodes)
        assert new_desk is not desk and new_desk.running
    finally:
        three.close()


def test_the_desk_node_stopped_hands_the_desk_over_at_once(nodes: list[Node]) -> None:
    """SIGTERM of the desk node: it lets go of the lease, the last node takes
    the desk and the queued dialog (resumed, no 2002) within a few seconds."""
    desk, a, b = roles(nodes)
    survivor = a if a.running else b
    d = uid("t")
    user = WS(survivor, uid("u"))
    op = None
    try:
        user.say(d, "转人工")
        queued = user.until(of(2001, d))
        assert queued["status"] == "queued"
        desk.stop()
        started = time.monotonic()
        new_desk, _, _ = roles(nodes, timeout=20.0)
        assert new_desk is survivor
        assert time.monotonic() - started < 8.0  # no lease to wait out
        op = WS(survivor, uid("op"), operator=True)
        op.until(of(3101, d), timeout=15.0)
        op.send({"event_type": 3102, "dialog_id": d, "messages": {"content": "here"}})
        assert user.until(lambda e: of(2001, d)(e) and "operator" in e)["messages"][
            "content"] == "here"
        assert not [e for e in user.seen if e.get("event_type") == 2002], user.seen
    finally:
        for c in (user, op):
            if c is not None:
                c.close()
