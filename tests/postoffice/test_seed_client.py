"""Seed 004's weather service client, its handler code unchanged
(examples/remote_weather.py), serving a remote program behind a real
``twistd libchat --postoffice``; the user speaks the frame protocol."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import pytest_twisted
from twisted.internet import defer, reactor

from libchat.tools.client import connect
from tests.launcher import LOOPBACK_ZERO, ROOT, Libchat, Process

SECRET = "zhycit-app-secret-0123456789"
CONFIG = f"""
[postoffice]
token_key = "a-fixed-test-signing-key-of-32-bytes!"
[postoffice.apps.zhycit]
secret = "{SECRET}"
clients = ["/service/zhycit/*"]
"""
T = 20.0


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Libchat, Process]]:
    programs = tmp_path / "programs"
    (programs / "weather").mkdir(parents=True)
    (programs / "weather" / "package.json").write_text(json.dumps({"libchat": {
        "runtime": "postoffice", "client": "/service/zhycit/weather", "keywords": ["天气"]}}))
    cfg = tmp_path / "libchat.toml"
    cfg.write_text(CONFIG)
    lc = Libchat(tmp_path / "lc", "--config", str(cfg), "--postoffice", LOOPBACK_ZERO,
                 programs=programs)
    lc.start()
    port = lc.ports["postoffice"]
    env = dict(os.environ, APPID="zhycit", SECRET=SECRET,
               SOCKET_URL=f"ws://127.0.0.1:{port}/", TOKEN_URL=f"http://127.0.0.1:{port}/token")
    client = Process([sys.executable, "-u", str(ROOT / "examples" / "remote_weather.py")],
                     cwd=tmp_path, env=env, log_path=tmp_path / "client.log")
    client.spawn()
    try:
        client.wait_log(r"Connected to ws://", timeout=T)
        yield lc, client
    finally:
        client.close()
        lc.close()
        assert SECRET not in lc.output(), "the app secret reached the log"


@defer.inlineCallbacks
def ask(lc: Libchat, text: str, dialog: str = "d1") -> Any:
    c = yield connect(reactor, f"tcp:host=127.0.0.1:port={lc.ports['front']}")
    got: list[dict[str, Any]] = []
    try:
        c.send({"event_type": 1001, "dialog_id": dialog, "user_id": "u1", "intent": "weather",
                "messages": {"content": text, "attachments": []}})
        while not got or got[-1]["event_type"] not in (2002, 2003, 2004):
            got.append((yield c.next_event(reactor, T)))
    finally:
        c.transport.loseConnection()
        yield c.closed
    return got


@pytest_twisted.inlineCallbacks
def test_the_seed_weather_client_answers_a_frame_protocol_dialog(served: Any) -> Any:
    lc, client = served
    events = yield ask(lc, "北京天气")
    assert [e["event_type"] for e in events] == [2001, 2002]
    assert events[0]["messages"]["content"] == "北京的天气：晴天，温度25°C"
    assert events[1]["reason"] == "completed"
    received = json.loads(client.wait_log(r"Received: (\{.*\})", timeout=T).group(1))
    assert received["from"] == "/libchat/dialog/d1" and received["content"] == "北京天气"
    assert received["libchat"]["dialog_id"] == "d1" and received["type"] == "msg"
