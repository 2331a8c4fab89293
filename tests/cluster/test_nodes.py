"""Three real twistd nodes on one real redis-server (CONTRACT §14): any node
takes any event; one instance per dialog cluster-wide; replies reach the
upstream wherever it is, or wait in Redis; memory and web pushes are shared.

These tests share one cluster (module scope) and use dialog ids of their own;
the failure tests (a node killed, stopped, frozen; Redis killed) are in
``test_node_failures.py`` with a cluster each.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from .nodes import Node, gather, message, started_nodes
from .redis_server import RedisServer

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def nodes(redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Node]]:
    work = tmp_path_factory.mktemp("cluster")
    with started_nodes(work, redis, ("n1", "n2", "n3")) as started:
        yield started


def reply_of(event: dict[str, Any]) -> dict[str, Any]:
    assert event["event_type"] == 2001, event
    return json.loads(event["messages"]["content"])  # type: ignore[no-any-return]


def test_a_dialog_touched_on_every_node_has_one_instance_and_contiguous_seqs(
        nodes: list[Node]) -> None:
    conns = [n.front() for n in nodes]
    try:
        pids, seqs = set(), []
        for i in range(9):
            conn = conns[i % 3]
            conn.send(message(f"m{i}", "one-instance", intent="pid"))
            got = reply_of(conn.next())
            assert got["content"] == f"m{i}"
            pids.add(got["pid"])
        assert len(pids) == 1
        owners = [n.health()["owned_dialogs"] for n in nodes]
        assert sum(owners) >= 1
        # the owner (first touch: n1) read 6 forwarded events from its inbox
        figures = nodes[0].metrics()
        assert figures[("libchat_cluster_inbox_lag_seconds_count", ())] >= 6
        assert nodes[0].health()["inbox_lag_avg"] >= 0
        assert figures[("libchat_cluster_redis_seconds_count", ())] > 0
        # the transcript, read from any node: 1001 and 2001 alternate, seq 1..18
        conn = conns[1]
        conn.send({"event_type": 1002, "dialog_id": "one-instance", "user_id": "u1"})
        ended = conn.until(lambda e: e["event_type"] == 2002)
        seqs = [e.get("seq") for e in ended]
        assert ended[-1]["reason"] == "client_closed" and seqs[-1] == 19
    finally:
        for c in conns:
            c.close()


def test_50_dialogs_x_10_messages_to_random_nodes_arrive_once_in_order(
        nodes: list[Node]) -> None:
    rng = random.Random(7)
    conns = [n.front() for n in nodes]
    errors: list[BaseException] = []

    def dialog(k: int) -> None:
        mine = [n.front() for n in nodes]  # a connection of this dialog's to each node
        try:
            pid = None
            for i in range(10):
                conn = mine[rng.randrange(3)]
                conn.send(message(f"{k}:{i}", f"many-{k}", intent="seen"))
                got = reply_of(conn.next(20))
                # the program saw each message once, in order, in one instance
                assert got["seen"] == [f"{k}:{j}" for j in range(i + 1)]
                pid = pid or got["pid"]
                assert got["pid"] == pid
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)
        finally:
            for c in mine:
                c.close()

    threads = [threading.Thread(target=dialog, args=(k,)) for k in range(50)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(150)
        assert not any(t.is_alive() for t in threads)
        assert errors == []
    finally:
        for c in conns:
            c.close()


def test_20_simultaneous_first_messages_of_one_new_dialog_start_one_instance(
        nodes: list[Node], redis: RedisServer) -> None:
    conns = [nodes[i % 3].front() for i in range(20)]
    try:
        for i, conn in enumerate(conns):  # all sent before any answer is read
            conn.send(message(f"first-{i}", "stampede", intent="seen"))
        # replies go to the connection that sent last for the dialog: gather all
        replies = [reply_of(e) for e in gather(conns, 20, timeout=30)]
        assert len({r["pid"] for r in replies}) == 1
        longest = max((r["seen"] for r in replies), key=len)
        assert sorted(longest) == sorted(f"first-{i}" for i in range(20))
        # the shared transcript: seq 1..40 with no gap (20 messages, 20 replies)
        assert redis.call("HGET", "lc:dlg:stampede", "seq") == b"40"
        ids = redis.call("XRANGE", "lc:log:stampede", "-", "+")
        assert [int(entry[0].split(b"-")[0]) for entry in ids] == list(range(1, 41))
    finally:
        for c in conns:
            c.close()


def test_replies_follow_the_upstream_to_another_node_and_wait_in_redis_for_none(
        nodes: list[Node], redis: RedisServer) -> None:
    first, other = nodes[0].front(), nodes[1].front()
    try:
        first.send(message("countdown 3", "follow", intent="countdown"))
        first.until(lambda e: e["event_type"] == 2002)
        assert first.next()["messages"]["content"] == "3"
        first.close()  # its upstream left: the rest goes to another frame upstream
        got = other.until(lambda e: e["messages"]["content"] == "2", timeout=10)
        assert got[-1]["dialog_id"] == "follow" and got[-1]["background"] is True
        other.close()  # no frame upstream anywhere now: Redis keeps the rest
        # wait until the program is done (liftoff is kept, not lost)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and redis.call("LLEN", "lc:kept:frame") < 2:
            time.sleep(0.05)
        late = nodes[2].front()
        got = late.until(lambda e: e["messages"]["content"] == "liftoff!", timeout=10)
        assert [e["messages"]["content"] for e in got][-2:] == ["1", "liftoff!"]
        late.close()
    finally:
        first.close()
        other.close()


def test_memory_saved_through_one_node_is_read_through_another_and_only_by_its_user(
        nodes: list[Node]) -> None:
    a, b = nodes[0].front(), nodes[1].front()
    try:
        a.send(message("set colour teal", "mem-a", user_id="ada", intent="memory"))
        assert a.next()["messages"]["content"] == "saved colour"
        b.send(message("get colour", "mem-b", user_id="ada", intent="memory"))
        assert b.next()["messages"]["content"] == '"teal"'
        b.send(message("get colour", "mem-c", user_id="bob", intent="memory"))
        assert b.next()["messages"]["content"] == "null"
    finally:
        a.close()
        b.close()


def test_web_pushes_reach_the_users_sockets_on_two_nodes_and_a_third_replays(
        nodes: list[Node]) -> None:
    from websockets.sync.client import connect

    url = "ws://127.0.0.1:{}/ws?user_id=wendy"
    with connect(url.format(nodes[0].ports["web"])) as ws1, \
            connect(url.format(nodes[1].ports["web"])) as ws2:
        ws1.send(json.dumps({"event_type": 1001, "dialog_id": "web-1",
                             "messages": {"content": "/echo hello"}}))
        pushed = [json.loads(ws.recv(timeout=10)) for ws in (ws1, ws2)]
        assert [p["messages"]["content"] for p in pushed] == ["echo: /echo hello"] * 2
        seq = pushed[0]["seq"]
    with connect(url.format(nodes[2].ports["web"])) as ws3:
        ws3.send(json.dumps({"event_type": 1003, "dialog_id": "web-1", "after": 0}))
        replayed = json.loads(ws3.recv(timeout=10))
        assert replayed["event_type"] == 1001 and replayed["seq"] == 1
        replayed = json.loads(ws3.recv(timeout=10))
        assert replayed["seq"] == seq and replayed["messages"]["content"] == "echo: /echo hello"


def test_rest_sessions_work_through_any_node(nodes: list[Node]) -> None:
    status, created = nodes[0].http("POST", "/api/chat/sessions", {"intent": "echo"}, user="rita")
    assert status == 201
    sid = created["session_id"]
    status, sent = nodes[1].http("POST", f"/api/chat/sessions/{sid}/messages",
                                 {"content": "hi"}, user="rita")
    assert status == 202 and sent["seq"] == 1
    status, got = nodes[2].http("GET", f"/api/chat/sessions/{sid}/messages?after=1&wait=10",
                                user="rita")
    assert status == 200 and got["messages"][0]["messages"]["content"] == "echo: hi"
    status, _ = nodes[2].http("GET", f"/api/chat/sessions/{sid}/messages", user="mallory")
    assert status == 404
