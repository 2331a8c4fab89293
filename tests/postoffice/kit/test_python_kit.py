"""examples/postoffice_kit.py against a real ``twistd libchat --postoffice``."""
from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest
from websockets.sync.client import connect

from tests.launcher import LOOPBACK_ZERO, Libchat, wait_until
from tests.postoffice.hub.test_twistd import CONFIG

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "examples"))
import postoffice_kit  # noqa: E402


def test_backoff_is_jittered_and_capped() -> None:
    assert postoffice_kit.backoff(3, base=1, cap=30, rand=lambda: 0.999) == pytest.approx(7.992)
    assert postoffice_kit.backoff(50, base=1, cap=30, rand=lambda: 1.0) == 30
    assert postoffice_kit.backoff(0, base=1, cap=30, rand=lambda: 0.0) == 0
    samples = {postoffice_kit.backoff(4) for _ in range(50)}
    assert len(samples) > 40 and all(0 <= s < 8 for s in samples)


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Libchat]:
    cfg = tmp_path / "libchat.toml"
    cfg.write_text(CONFIG)
    lc = Libchat(tmp_path / "lc", "--config", str(cfg), "--postoffice", LOOPBACK_ZERO)
    lc.start()
    yield lc
    lc.close()


class Running:
    """The kit on its own asyncio loop in a thread."""

    def __init__(self, port: int) -> None:
        async def handler(env: dict[str, Any]) -> Any:
            return None if env["content"] == "quiet" else f"re: {env['content']}"
        self.client = postoffice_kit.ServiceClient(
            f"ws://127.0.0.1:{port}/ws", f"http://127.0.0.1:{port}/token", "acme",
            "acme-secret", "/service/acme/kit", handler, heartbeat=0.2, base=0.05, cap=0.5)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_until_complete,
                                       args=(self.client.run(),), daemon=True)
        self.thread.start()

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.client.stop(), self.loop).result(10)
        self.thread.join(10)
        assert not self.thread.is_alive()
        self.loop.close()


def ask(port: int, text: str) -> dict[str, Any]:
    token = postoffice_kit.fetch_token(f"http://127.0.0.1:{port}/token", "acme", "acme-secret")
    with connect(f"ws://127.0.0.1:{port}/ws?clientID=/service/acme/asker",
                 additional_headers={"Authorization": f"Bearer {token['token']}"}) as ws:
        ws.send(json.dumps({"from": "/service/acme/asker", "to": "/service/acme/kit",
                            "subject": "q", "content": text, "type": "msg"}))
        return dict(json.loads(ws.recv(timeout=10)))


def test_answers_and_comes_back_after_being_replaced(hub: Libchat) -> None:
    port = hub.ports["postoffice"]
    kit = Running(port)
    try:
        wait_until(lambda: kit.client.connects == 1, 10, "kit connected")
        got = ask(port, "北京")
        assert got["content"] == "re: 北京" and got["to"] == "/service/acme/asker"
        assert got["from"] == "/service/acme/kit"
        # the hub closes the kit's connection (replaced by another with its clientID)
        token = postoffice_kit.fetch_token(f"http://127.0.0.1:{port}/token", "acme", "acme-secret")
        with connect(f"ws://127.0.0.1:{port}/ws?clientID=/service/acme/kit",
                     additional_headers={"Authorization": f"Bearer {token['token']}"}):
            pass
        wait_until(lambda: kit.client.connects >= 2, 10, "kit reconnected")
        assert ask(port, "again")["content"] == "re: again"
    finally:
        kit.close()


def test_reconnects_to_a_restarted_hub(tmp_path: Path) -> None:
    with socket.socket() as s:          # a fixed port, so the restarted hub is at the same URL
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = tmp_path / "libchat.toml"
    cfg.write_text(CONFIG)
    hub = Libchat(tmp_path / "lc", "--config", str(cfg), "--postoffice",
                  f"tcp:{port}:interface=127.0.0.1")
    hub.start()
    kit = Running(port)
    try:
        wait_until(lambda: kit.client.connects == 1, 10, "kit connected")
        hub.kill9()
        hub.start()
        wait_until(lambda: kit.client.connects >= 2, 15, "kit reconnected")
        assert ask(port, "back")["content"] == "re: back"
    finally:
        kit.close()
        hub.close()


def test_node_kit_answers_and_comes_back_after_being_replaced(hub: Libchat) -> None:
    port = hub.ports["postoffice"]
    kit = Path(__file__).resolve().parents[3] / "examples" / "node" / "postoffice.js"
    node = subprocess.Popen(["node", str(kit), f"ws://127.0.0.1:{port}/ws",
                             f"http://127.0.0.1:{port}/token", "acme", "acme-secret",
                             "/service/acme/kit"])
    try:
        got = wait_until(lambda: _try_ask(port, "北京"), 15, "node kit answered")
        assert got["content"] == "re: 北京" and got["from"] == "/service/acme/kit"
        token = postoffice_kit.fetch_token(f"http://127.0.0.1:{port}/token", "acme", "acme-secret")
        with connect(f"ws://127.0.0.1:{port}/ws?clientID=/service/acme/kit",
                     additional_headers={"Authorization": f"Bearer {token['token']}"}):
            pass                        # replaces the node kit's connection, then closes
        got = wait_until(lambda: _try_ask(port, "again"), 15, "node kit reconnected")
        assert got["content"] == "re: again"
    finally:
        node.terminate()
        assert node.wait(10) is not None


def _try_ask(port: int, text: str) -> dict[str, Any] | None:
    """One ask; None while the kit is not connected (the hub queues, we time out)."""
    try:
        return _ask_within(port, text, 1.0)
    except TimeoutError:
        return None


def _ask_within(port: int, text: str, timeout: float) -> dict[str, Any]:
    token = postoffice_kit.fetch_token(f"http://127.0.0.1:{port}/token", "acme", "acme-secret")
    with connect(f"ws://127.0.0.1:{port}/ws?clientID=/service/acme/asker",
                 additional_headers={"Authorization": f"Bearer {token['token']}"}) as ws:
        ws.send(json.dumps({"from": "/service/acme/asker", "to": "/service/acme/kit",
                            "subject": "q", "content": text, "type": "msg"}))
        while True:
            got = dict(json.loads(ws.recv(timeout=timeout)))
            if got.get("content") == f"re: {text}":
                return got


def test_refreshes_the_token_before_it_expires(tmp_path: Path) -> None:
    cfg = tmp_path / "libchat.toml"
    cfg.write_text(CONFIG.replace("offline_ttl = 300", "offline_ttl = 300\ntoken_ttl = 4"))
    hub = Libchat(tmp_path / "lc", "--config", str(cfg), "--postoffice", LOOPBACK_ZERO)
    hub.start()
    port = hub.ports["postoffice"]
    kit = Running(port)
    kit.client.refresh_margin = 2.5     # refresh ~1.5 s after each fetch, before the 4 s expiry
    try:
        first = wait_until(lambda: kit.client._token, 10, "first token")["token"]
        wait_until(lambda: kit.client.connects >= 3, 15, "two refreshes")
        assert kit.client._token is None or kit.client._token["token"] != first
        assert ask(port, "fresh")["content"] == "re: fresh"
    finally:
        kit.close()
        hub.close()
