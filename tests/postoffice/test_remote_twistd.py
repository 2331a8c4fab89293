"""Remote programs behind a real ``twistd libchat --postoffice``: two service
instances share dialogs (each sticky), a bound client's disconnect is
``program_exited``, and ``state`` 2003 reaches the front door as a 2003."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest
import pytest_twisted
import treq
from twisted.internet import defer, reactor

from libchat.tools.client import connect as frame_connect
from tests.launcher import LOOPBACK_ZERO, Libchat
from tests.postoffice.hub.wsclient import connect as ws_connect

CONFIG = """
[postoffice]
token_key = "a-fixed-test-signing-key-of-32-bytes!"
[postoffice.apps.acme]
secret = "acme-secret"
clients = ["/service/acme/*"]
"""
T = 15.0


@pytest.fixture
def lc(tmp_path: Path) -> Iterator[Libchat]:
    programs = tmp_path / "programs"
    (programs / "calc").mkdir(parents=True)
    (programs / "calc" / "package.json").write_text(json.dumps({"libchat": {
        "runtime": "postoffice", "client": "/service/acme/calc", "turns": "multi",
        "wait": 5, "keywords": ["calc"]}}))
    cfg = tmp_path / "libchat.toml"
    cfg.write_text(CONFIG)
    server = Libchat(tmp_path / "lc", "--config", str(cfg), "--postoffice", LOOPBACK_ZERO,
                     programs=programs)
    server.start()
    yield server
    server.close()


@defer.inlineCallbacks
def service(lc: Libchat, client_id: str) -> Any:
    port = lc.ports["postoffice"]
    r = yield treq.get(f"http://127.0.0.1:{port}/token",
                       params={"appid": "acme", "secret": "acme-secret"})
    token = (yield r.json())["token"]
    client = yield ws_connect(port, client_id, token)
    return client


def user(dialog: str, text: str) -> dict[str, Any]:
    return {"event_type": 1001, "dialog_id": dialog, "user_id": "u-" + dialog,
            "messages": {"content": text, "attachments": []}}


@pytest_twisted.inlineCallbacks
def test_two_instances_share_dialogs_each_sticky_then_exit_and_decline(lc: Libchat) -> Any:
    one = yield service(lc, "/service/acme/calc_1")
    two = yield service(lc, "/service/acme/calc_2")
    front = yield frame_connect(reactor, f"tcp:host=127.0.0.1:port={lc.ports['front']}")
    try:
        served: dict[str, Any] = {}
        for dialog in ("a", "b"):
            front.send(user(dialog, "calc 1+1"))
        for _ in range(2):  # the two dialogs went to different clients
            for client in (one, two):
                if client not in served.values():
                    try:
                        env = yield client.next(2.0)
                    except defer.TimeoutError:
                        continue
                    served[env["libchat"]["dialog_id"]] = client
        assert set(served) == {"a", "b"} and served["a"] is not served["b"]
        for dialog, client in served.items():
            client.post(**{"from": f"/service/acme/calc_{1 if client is one else 2}",
                           "to": f"/libchat/dialog/{dialog}", "subject": "r",
                           "content": f"2 for {dialog}", "type": "msg"})
        replies = {}
        for _ in range(2):
            event = yield front.next_event(reactor, T)
            replies[event["dialog_id"]] = event
        assert {d: e["messages"]["content"] for d, e in replies.items()} == {
            "a": "2 for a", "b": "2 for b"}
        front.send(user("a", "calc again"))  # sticky: the same client gets it
        env = yield served["a"].next(T)
        assert env["libchat"]["dialog_id"] == "a" and env["content"] == "calc again"
        # the client of b declines b's next message: 2003 with the user's text
        front.send(user("b", "calc decline"))
        env = yield served["b"].next(T)
        me = "/service/acme/calc_1" if served["b"] is one else "/service/acme/calc_2"
        served["b"].post(**{"from": me, "to": env["from"], "subject": "r", "content": "",
                            "type": "msg", "state": 2003})
        event = yield front.next_event(reactor, T)
        assert (event["event_type"], event["dialog_id"]) == (2003, "b")
        assert event["messages"]["content"] == "calc decline"
        # a's client goes away: a ends program_exited
        served["a"].sendClose()
        yield served["a"].factory.closed
        event = yield front.next_event(reactor, T)
        assert (event["event_type"], event["dialog_id"], event["reason"]) == (
            2002, "a", "program_exited")
    finally:
        front.transport.loseConnection()
        yield front.closed
        for client in (one, two):
            if client.state != client.STATE_CLOSED:
                client.sendClose()
                yield client.factory.closed
