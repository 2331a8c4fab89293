"""Post-office envelopes across two real ``twistd libchat --redis --postoffice``
nodes on one real redis-server (CONTRACT §12 under §14; docs/scaleout.md
"Post-office envelopes across nodes"): a remote program served by a client of
node B for a dialog owned by node A; envelopes between clients of different
nodes; queued envelopes reaching a client that reconnects elsewhere; a newer
connection on another node replacing the old one; expiry bounces reaching a
sender on either node.

Blocking clients (websockets' sync client, the frame client of
``tests/cluster/nodes.py``), every wait bounded.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.cluster.nodes import Node, http, started_nodes
from tests.cluster.redis_server import RedisServer
from tests.launcher import LOOPBACK_ZERO

pytestmark = pytest.mark.timeout(180)

CONFIG = """
[postoffice]
token_key = "a-fixed-test-signing-key-of-32-bytes!"
offline_ttl = 8
[postoffice.apps.acme]
secret = "acme-secret"
clients = ["/service/acme/*"]
"""
T = 10.0


@pytest.fixture(scope="module")
def nodes(redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Node]]:
    work = tmp_path_factory.mktemp("po-cluster")
    programs = work / "programs"
    (programs / "calc").mkdir(parents=True)
    (programs / "calc" / "package.json").write_text(json.dumps({"libchat": {
        "runtime": "postoffice", "client": "/service/acme/calc", "turns": "single",
        "wait": 8, "keywords": ["calc"]}}))
    cfg = work / "libchat.toml"
    cfg.write_text(CONFIG)
    with started_nodes(work, redis, ("pa", "pb"), "--config", str(cfg),
                       "--postoffice", LOOPBACK_ZERO, programs=str(programs)) as started:
        wait_live(started, 2)
        yield started


def wait_live(nodes: list[Node], count: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not all(len(n.health().get("live_nodes", [])) >= count for n in nodes):
        assert time.monotonic() < deadline, [n.health() for n in nodes]
        time.sleep(0.2)


class Client:
    """A post-office client on a blocking WebSocket."""

    def __init__(self, node: Node, client_id: str) -> None:
        self.client_id = client_id
        port = node.ports["postoffice"]
        status, body = http(port, "GET", "/token?" + urlencode(
            {"appid": "acme", "secret": "acme-secret"}))
        assert status == 200, body
        self.ws: ClientConnection = connect(
            f"ws://127.0.0.1:{port}/ws?" + urlencode({"clientID": client_id}),
            additional_headers={"Authorization": f"Bearer {body['token']}"},
            open_timeout=T).__enter__()  # closed by close()

    def post(self, to: Any, content: Any, **extra: Any) -> str:
        text = json.dumps({"from": self.client_id, "to": to, "subject": "s",
                           "content": content, "type": "msg", **extra})
        self.ws.send(text)
        return text

    def raw(self, timeout: float = T) -> str:
        got = self.ws.recv(timeout=timeout)
        assert isinstance(got, str)
        return got

    def next(self, timeout: float = T) -> dict[str, Any]:
        return json.loads(self.raw(timeout))  # type: ignore[no-any-return]

    def quiet(self, seconds: float) -> bool:
        try:
            self.ws.recv(timeout=seconds)
        except TimeoutError:
            return True
        return False

    def close(self) -> None:
        self.ws.close()


def cli(redis: RedisServer, *args: str) -> Any:
    got = redis.call(*args)
    return got.decode() if isinstance(got, bytes) else got


def until(predicate: Any, timeout: float = T, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.1)


def known_everywhere(nodes: list[Node], redis: RedisServer, client_id: str,
                     node: Node) -> None:
    """The registry names ``node`` for the client (a connect is registered)."""
    until(lambda: cli(redis, "HGET", "lc:po:at", client_id) == node.node_id,
          what=f"{client_id} registered on {node.node_id}")


def user(dialog: str, text: str) -> dict[str, Any]:
    return {"event_type": 1001, "dialog_id": dialog, "user_id": "u-" + dialog,
            "messages": {"content": text, "attachments": []}}


def test_a_client_on_b_serves_a_dialog_owned_by_a(nodes: list[Node], redis: RedisServer) -> None:
    a, b = nodes
    service = Client(b, "/service/acme/calc_1")
    front = a.front()
    try:
        known_everywhere(nodes, redis, service.client_id, b)
        front.send(user("poc-1", "calc 1+1"))
        env = service.next(T)
        assert env["from"] == "/libchat/dialog/poc-1" and env["to"] == service.client_id
        assert env["content"] == "calc 1+1" and env["libchat"]["dialog_id"] == "poc-1"
        # node A owns the dialog (its instance runs there), node B holds the socket
        assert cli(redis, "HGET", "lc:dlg:poc-1", "node") == a.node_id
        service.post(env["from"], "2")
        got = front.until(lambda e: e["event_type"] == 2002, T)
        assert [e["event_type"] for e in got] == [2001, 2002]
        assert got[0]["messages"]["content"] == "2" and got[-1]["reason"] == "completed"
        # the next message of the dialog, sent through node B this time
        front_b = b.front()
        try:
            front_b.send(user("poc-1", "calc 2+2"))
            env = service.next(T)
            assert env["content"] == "calc 2+2"
            service.post(env["from"], "4")
            got = front_b.until(lambda e: e["event_type"] == 2002, T)
            assert got[0]["event_type"] == 2001 and got[0]["messages"]["content"] == "4"
        finally:
            front_b.close()
    finally:
        front.close()
        service.close()


def test_the_bound_client_leaving_node_b_ends_the_dialog_on_a_as_exited(
        nodes: list[Node], redis: RedisServer) -> None:
    a, b = nodes
    service = Client(b, "/service/acme/calc_2")
    front = a.front()
    try:
        known_everywhere(nodes, redis, service.client_id, b)
        front.send(user("poc-2", "calc 3"))
        env = service.next(T)
        assert env["libchat"]["dialog_id"] == "poc-2"
        service.close()
        got = front.until(lambda e: e["event_type"] == 2002, T)
        assert got[-1]["reason"] == "program_exited"
    finally:
        front.close()
        service.close()


def test_envelopes_between_clients_of_different_nodes(nodes: list[Node],
                                                      redis: RedisServer) -> None:
    a, b = nodes
    one = Client(a, "/service/acme/one")
    sent: list[str] = []
    halfway = threading.Event()

    def stream() -> None:
        """One envelope every ~0.3 ms (180: within the 200-envelope burst
        the rate limit allows) while two connects, so that node A learns
        where two is between two of them."""
        for i in range(180):
            sent.append(one.post("/service/acme/two", f"hello {i}"))
            if i == 20:
                halfway.set()
            time.sleep(0.0003)  # pacing, not a wait for anything
    sender = threading.Thread(target=stream, daemon=True)
    sender.start()
    clients = [one]
    try:
        assert halfway.wait(T)
        two = Client(b, "/service/acme/two")
        clients.append(two)
        # envelopes are on their way while node A learns that two is on B:
        # the first ones queued, the rest forwarded; in order all the same
        sender.join(T)
        assert not sender.is_alive()
        assert [two.raw() for _ in sent] == sent  # the exact text, in order
        assert one.quiet(0.2)  # no error frame (UNDELIVERABLE, rate limit)
        known_everywhere(nodes, redis, one.client_id, a)
        known_everywhere(nodes, redis, two.client_id, b)
        back = two.post([one.client_id], {"ok": True})
        assert one.raw() == back
        # a heartbeat crosses too
        beat = one.post(two.client_id, "", type="heartbeat")
        assert two.raw() == beat
    finally:
        sender.join(T)
        for c in clients:
            c.close()


def test_queued_envelopes_reach_a_client_that_reconnects_on_the_other_node(
        nodes: list[Node], redis: RedisServer) -> None:
    a, b = nodes
    sender = Client(a, "/service/acme/sender")
    mover = Client(b, "/service/acme/mover")
    try:
        known_everywhere(nodes, redis, mover.client_id, b)
        first = sender.post(mover.client_id, "while on b")
        assert mover.raw() == first
        mover.close()
        until(lambda: cli(redis, "HGET", "lc:po:at", mover.client_id) is None,
              what="the registry forgets the mover")
        queued = [sender.post(mover.client_id, f"queued {i}") for i in range(3)]
        until(lambda: cli(redis, "LLEN", f"lc:po:q:{mover.client_id}") == 3,
              what="three envelopes queued")
        mover = Client(a, "/service/acme/mover")  # elsewhere: node A this time
        assert [mover.raw() for _ in queued] == queued
        after = sender.post(mover.client_id, "direct")
        assert mover.raw() == after
        until(lambda: cli(redis, "LLEN", f"lc:po:q:{mover.client_id}") == 0,
              what="the queue acknowledged")
    finally:
        sender.close()
        mover.close()


def test_a_newer_connection_on_another_node_replaces_the_old_one(
        nodes: list[Node], redis: RedisServer) -> None:
    a, b = nodes
    old = Client(b, "/service/acme/twin")
    sender = Client(b, "/service/acme/twin-sender")
    new = None
    try:
        known_everywhere(nodes, redis, old.client_id, b)
        new = Client(a, "/service/acme/twin")
        with pytest.raises(ConnectionClosed) as closed:
            old.raw(T)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4000
        known_everywhere(nodes, redis, new.client_id, a)
        text = sender.post(new.client_id, "to the new one")
        assert new.raw() == text
    finally:
        old.close()
        sender.close()
        if new is not None:
            new.close()


def test_expiry_bounces_reach_the_sender_whichever_node_sweeps(
        nodes: list[Node], redis: RedisServer) -> None:
    a, b = nodes
    senders = [Client(a, "/service/acme/bouncer-a"), Client(b, "/service/acme/bouncer-b")]
    try:
        for s, n in zip(senders, nodes):
            known_everywhere(nodes, redis, s.client_id, n)
        for s in senders:
            for i in range(4):
                s.post(f"/service/acme/nobody-{s.client_id[-1]}-{i}", "x")
        for s in senders:
            frames = [s.next(20.0) for _ in range(4)]
            assert all(f["code"] == "UNDELIVERABLE" for f in frames), frames
            assert sorted(f["to"] for f in frames) == [
                f"/service/acme/nobody-{s.client_id[-1]}-{i}" for i in range(4)]
    finally:
        for s in senders:
            s.close()


@pytest.fixture
def pair(redis: RedisServer, tmp_path: Path) -> Iterator[list[Node]]:
    """Two nodes of this test's own (one of them gets killed)."""
    programs = tmp_path / "programs"
    (programs / "calc").mkdir(parents=True)
    (programs / "calc" / "package.json").write_text(json.dumps({"libchat": {
        "runtime": "postoffice", "client": "/service/acme/calc", "wait": 8,
        "keywords": ["calc"]}}))
    cfg = tmp_path / "libchat.toml"
    cfg.write_text(CONFIG)
    started: list[Node] = []
    try:
        for name in ("pk1", "pk2"):
            started.append(Node(tmp_path, redis, name, "--config", str(cfg),
                                "--postoffice", LOOPBACK_ZERO, programs=str(programs)).start())
        wait_live(started, 2)
        yield started
    finally:
        for n in started:
            if n.running:
                n.stop()
            n.close()


def test_kill_9_of_the_clients_node_ends_its_dialogs_and_forgets_its_clients(
        pair: list[Node], redis: RedisServer) -> None:
    a, b = pair
    service = Client(b, "/service/acme/calc_7")
    front = a.front()
    try:
        known_everywhere(pair, redis, service.client_id, b)
        front.send(user("pok-1", "calc 1"))
        env = service.next(T)
        assert env["libchat"]["dialog_id"] == "pok-1"
        started = time.monotonic()
        b.kill9()
        got = front.until(lambda e: e["event_type"] == 2002, 20.0)
        assert got[-1]["reason"] == "program_exited" and time.monotonic() - started < 15
        until(lambda: cli(redis, "HGET", "lc:po:at", service.client_id) is None,
              what="the dead node's registry entry removed")
        service.close()
        service = Client(a, "/service/acme/calc_7")  # it reconnects to the survivor
        front.send(user("pok-1", "calc 2"))
        env = service.next(T)
        assert env["content"] == "calc 2"
        service.post(env["from"], "ok")
        got = front.until(lambda e: e["event_type"] == 2002, T)
        assert got[0]["event_type"] == 2001 and got[-1]["reason"] == "completed"
    finally:
        front.close()
        service.close()
