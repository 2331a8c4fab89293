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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .nodes import FrameConn, Node, message
from .redis_server import RedisServer

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def nodes(redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Node]]:
    work = tmp_path_factory.mktemp("cluster")
    started: list[Node] = []
    try:
        for name in ("n1", "n2", "n3"):
            started.append(Node(work, redis, name).start())
        yield started
    finally:
        for n in started:
            n.stop()
            n.close()


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
        status, body = nodes[2].http("GET", "/healthz")
        owners = [n.health()["owned_dialogs"] for n in nodes]
        assert sum(owners) >= 1 and status == 200
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
