"""The hub in a real ``twistd libchat --postoffice`` with a real WebSocket client."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterator

import jwt
import pytest
import pytest_twisted
import treq
from twisted.internet import defer

from tests.launcher import LOOPBACK_ZERO, Libchat
from tests.postoffice.hub.wsclient import Refused, connect

CONFIG = """
[postoffice]
max_connections = 4
offline_ttl = 300
token_key = "a-fixed-test-signing-key-of-32-bytes!"
[postoffice.apps.acme]
secret = "acme-secret"
clients = ["/service/acme/*"]
[postoffice.apps.other]
secret = "other-secret"
clients = ["/service/other/*"]
"""


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Libchat]:
    cfg = tmp_path / "libchat.toml"
    cfg.write_text(CONFIG)
    lc = Libchat(tmp_path / "lc", "--config", str(cfg), "--postoffice", LOOPBACK_ZERO)
    lc.start()
    yield lc
    lc.close()


def port(lc: Libchat) -> int:
    return lc.ports["postoffice"]


@defer.inlineCallbacks
def token(lc: Libchat, appid: str = "acme", secret: str = "acme-secret") -> Any:
    r = yield treq.get(f"http://127.0.0.1:{port(lc)}/token",
                       params={"appid": appid, "secret": secret})
    body = yield r.json()
    return r.code, body


@defer.inlineCallbacks
def refused(lc: Libchat, *a: Any, **kw: Any) -> Any:
    try:
        c = yield connect(port(lc), *a, **kw)
    except Refused as e:
        return e.status
    c.sendClose()
    raise AssertionError("connected")


@pytest_twisted.inlineCallbacks
def test_token_good_and_bad(hub: Libchat) -> Any:
    code, body = yield token(hub)
    assert code == 200 and body["ttl"] == 30 * 24 * 3600
    assert abs(body["expires"] / 1000 - time.time() - body["ttl"]) < 60
    code, _ = yield token(hub, secret="wrong")
    assert code == 401
    code, _ = yield token(hub, appid="nobody")
    assert code == 401


@pytest_twisted.inlineCallbacks
def test_every_refusal_before_the_upgrade(hub: Libchat) -> Any:
    _, body = yield token(hub)
    good = body["token"]
    assert (yield refused(hub, None, good)) == 400
    assert (yield refused(hub, "/service/acme/w", None)) == 401
    assert (yield refused(hub, "/service/acme/w", "not-a-token")) == 401
    forged = jwt.encode({"sub": "acme", "exp": int(time.time()) + 60}, "other-key-of-at-least-32-bytes-long",
                        algorithm="HS256")
    assert (yield refused(hub, "/service/acme/w", forged)) == 401
    expired = jwt.encode({"sub": "acme", "exp": int(time.time()) - 1},
                         "a-fixed-test-signing-key-of-32-bytes!", algorithm="HS256")
    assert (yield refused(hub, "/service/acme/w", expired)) == 401
    assert (yield refused(hub, "/service/other/w", good)) == 403
    assert (yield refused(hub, "/libchat/dialog/x", good)) == 403
    live = yield connect(port(hub), "/service/acme/w", good, startTime="2000")
    assert (yield refused(hub, "/service/acme/w", good, startTime="1000")) == 409
    more = []
    for i in range(3):
        more.append((yield connect(port(hub), f"/service/acme/n{i}", good)))
    assert (yield refused(hub, "/service/acme/full", good)) == 503
    for c in [live, *more]:
        c.sendClose()


@pytest_twisted.inlineCallbacks
def test_envelopes_errors_and_delivery(hub: Libchat) -> Any:
    _, body = yield token(hub)
    a = yield connect(port(hub), "/service/acme/a", body["token"])
    b = yield connect(port(hub), "/service/acme/b", body["token"], bearer=False)
    c = yield connect(port(hub), "/service/acme/c", body["token"])
    a.post(**{"from": "/service/acme/b", "to": "/service/acme/c", "subject": "s",
              "content": "x", "type": "msg"})
    assert (yield a.next())["code"] == "FORBIDDEN"
    a.sendMessage(b"{not json", False)
    assert (yield a.next())["code"] == "BAD_MESSAGE"
    raw = json.dumps({"from": "/service/acme/a", "to": "/service/acme/b", "subject": "天气",
                      "content": "北京", "type": "msg", "createTime": 1}, ensure_ascii=False)
    a.sendMessage(raw.encode(), False)        # still open after the errors
    got = yield b.factory.inbox.get()
    assert got == raw
    a.post(**{"from": "/service/acme/a", "to": ["/service/acme/b", "/service/acme/c"],
              "subject": "s", "content": "both", "type": "log"})
    assert (yield b.next())["content"] == "both"
    assert (yield c.next())["content"] == "both"
    for x in (a, b, c):
        x.sendClose()


@pytest_twisted.inlineCallbacks
def test_reconnect_replaces_the_old_connection(hub: Libchat) -> Any:
    _, body = yield token(hub)
    old = yield connect(port(hub), "/service/acme/r", body["token"])
    new = yield connect(port(hub), "/service/acme/r", body["token"])
    code, reason = yield old.factory.closed
    assert code == 4000 and "replaced" in reason
    new.sendClose()


@pytest_twisted.inlineCallbacks
def test_offline_delivery_after_kill_9_and_restart(hub: Libchat) -> Any:
    _, body = yield token(hub)
    a = yield connect(port(hub), "/service/acme/a", body["token"])
    for n in (1, 2):
        a.post(**{"from": "/service/acme/a", "to": "/service/acme/late", "subject": "s",
                  "content": f"m{n}", "type": "msg"})
    a.post(**{"from": "/service/acme/a", "to": "/service/acme/late", "subject": "s",
              "content": "hb", "type": "heartbeat"})
    # a round trip through the hub: the queue writes are behind us
    a.post(**{"from": "/service/acme/a", "to": "/service/acme/a", "subject": "s",
              "content": "sync", "type": "msg"})
    assert (yield a.next())["content"] == "sync"
    hub.kill9()
    hub.restart()
    _, body = yield token(hub)    # token_key configured: the old token would do too
    late = yield connect(port(hub), "/service/acme/late", body["token"])
    got = [(yield late.next())["content"], (yield late.next())["content"]]
    assert got == ["m1", "m2"]
    late.sendClose()


@pytest_twisted.inlineCallbacks
def test_metrics_and_healthz(hub: Libchat) -> Any:
    _, body = yield token(hub)
    assert (yield refused(hub, None, body["token"])) == 400
    a = yield connect(port(hub), "/service/acme/m", body["token"])
    a.post(**{"from": "/service/acme/m", "to": "/service/acme/m", "subject": "s",
              "content": "x", "type": "msg"})
    yield a.next()
    a.post(**{"from": "/service/acme/m", "to": "/service/acme/absent", "subject": "s",
              "content": "x", "type": "msg"})
    a.post(**{"from": "/service/acme/m", "to": "/service/acme/m", "subject": "s",
              "content": "sync", "type": "msg"})   # a round trip: the queueing is behind us
    yield a.next()
    m = hub.metrics()
    assert m[("libchat_postoffice_clients", ())] == 1
    assert m[("libchat_postoffice_deliveries_total", ())] >= 1
    assert m[("libchat_postoffice_refusals_total", (("reason", "400"),))] == 1
    r = yield treq.get(hub.url("/healthz"))
    health = yield r.json()
    assert health["postoffice"] == {"clients": 1, "queued": 1}
    a.sendClose()


@pytest_twisted.inlineCallbacks
def test_expiry_bounces_undeliverable(tmp_path: Path) -> Any:
    cfg = tmp_path / "short.toml"
    cfg.write_text(CONFIG.replace("offline_ttl = 300", "offline_ttl = 0.5"))
    lc = Libchat(tmp_path / "lc", "--config", str(cfg), "--postoffice", LOOPBACK_ZERO)
    lc.start()
    try:
        _, body = yield token(lc)
        a = yield connect(port(lc), "/service/acme/a", body["token"])
        a.post(**{"from": "/service/acme/a", "to": "/service/acme/never", "subject": "q",
                  "content": "x", "type": "msg"})
        frame = yield a.next(timeout=10)
        assert frame == {"type": "error", "code": "UNDELIVERABLE", "to": "/service/acme/never",
                         "subject": "q", "error": frame["error"]}
        a.sendClose()
    finally:
        lc.close()
