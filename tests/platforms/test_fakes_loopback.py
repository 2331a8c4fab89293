"""The fakes on a real loopback port, driven by real treq (multipart with
``files=`` as the adapters will send it), and the standalone runner."""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import defer, protocol, reactor
from twisted.internet.task import deferLater
from twisted.web.client import HTTPConnectionPool

from .fakes.lark import FakeLark
from .fakes.serve import listen
from .fakes.wecom import FakeWeCom

ROOT = Path(__file__).resolve().parents[2]


def media_file(field: str, name: str, ctype: str, data: bytes) -> Any:
    """treq's ``files=``: the multipart encoding the adapters will use."""
    return {field: (name, ctype, io.BytesIO(data))}


@pytest_twisted.inlineCallbacks
def test_wecom_fake_on_loopback_token_upload_send() -> Generator[Any, Any, None]:
    fake = FakeWeCom(reactor, corp_id="ww1", secret="sec")
    served = yield listen(fake, reactor)
    base = served.base_url
    pool = HTTPConnectionPool(reactor)
    try:
        r = yield treq.get(base + "/cgi-bin/gettoken", params={"corpid": "ww1", "corpsecret": "sec"}, pool=pool)
        token = (yield r.json())["access_token"]
        r = yield treq.post(base + "/cgi-bin/media/upload", params={"access_token": token, "type": "file"},
                            files=media_file("media", "a.txt", "text/plain", b"hello file"), pool=pool)
        up = yield r.json()
        assert up["errcode"] == 0
        assert fake.media[up["media_id"]] == ("file", b"hello file", "a.txt")
        r = yield treq.post(base + "/cgi-bin/message/send", params={"access_token": token},
                            json={"touser": "u", "msgtype": "file", "agentid": 1000002,
                                  "file": {"media_id": up["media_id"]}}, pool=pool)
        assert (yield r.json())["errcode"] == 0
        fake.script.slow("send", 0.2)
        start = reactor.seconds()
        r = yield treq.post(base + "/cgi-bin/message/send", params={"access_token": token},
                            json={"touser": "u", "msgtype": "text", "agentid": 1000002,
                                  "text": {"content": "late"}}, timeout=5, pool=pool)
        assert (yield r.json())["errcode"] == 0 and reactor.seconds() - start >= 0.2
    finally:
        yield pool.closeCachedConnections()
        yield served.stop()


@pytest_twisted.inlineCallbacks
def test_lark_fake_on_loopback_token_image_send() -> Generator[Any, Any, None]:
    fake = FakeLark(reactor, app_id="cli_a", app_secret="sec")
    served = yield listen(fake, reactor)
    base = served.base_url
    pool = HTTPConnectionPool(reactor)
    try:
        r = yield treq.post(base + "/open-apis/auth/v3/tenant_access_token/internal",
                            json={"app_id": "cli_a", "app_secret": "sec"}, pool=pool)
        token = (yield r.json())["tenant_access_token"]
        auth: Any = {"Authorization": f"Bearer {token}"}
        png = b"\x89PNG\r\n\x1a\n" + os.urandom(2048)
        r = yield treq.post(base + "/open-apis/im/v1/images", headers=auth, data={"image_type": "message"},
                            files=media_file("image", "a.png", "image/png", png), pool=pool)
        key = (yield r.json())["data"]["image_key"]
        assert fake.images[key] == png
        r = yield treq.post(base + "/open-apis/im/v1/messages", params={"receive_id_type": "chat_id"},
                            headers=auth, json={"receive_id": "oc_1", "msg_type": "image",
                                                "content": json.dumps({"image_key": key}), "uuid": "u1"}, pool=pool)
        assert (yield r.json())["code"] == 0
    finally:
        yield pool.closeCachedConnections()
        yield served.stop()


class _Lines(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.first_line: defer.Deferred[str] = defer.Deferred()
        self.ended: defer.Deferred[None] = defer.Deferred()
        self.buf = b""

    def outReceived(self, data: bytes) -> None:
        self.buf += data
        if b"\n" in self.buf and not self.first_line.called:
            self.first_line.callback(self.buf.split(b"\n")[0].decode())

    def processEnded(self, reason: object) -> None:
        if not self.first_line.called:
            self.first_line.errback(RuntimeError("fake exited before listening"))
        self.ended.callback(None)


@pytest_twisted.inlineCallbacks
def test_standalone_runner_listens_and_is_scriptable_over_http() -> Generator[Any, Any, None]:
    proto = _Lines()
    pool = HTTPConnectionPool(reactor)
    proc = reactor.spawnProcess(proto, sys.executable, [sys.executable, "-m", "tests.platforms.fakes.serve", "wecom"],
                                env=dict(os.environ, PYTHONPATH=str(ROOT)), path=str(ROOT))
    try:
        line = yield proto.first_line.addTimeout(20, reactor)
        assert line.startswith("listening ")
        base = f"http://127.0.0.1:{int(line.split()[1])}"
        r = yield treq.post(base + "/_fake/fault", json={"endpoint": "gettoken", "status": 503}, pool=pool)
        assert r.code == 200
        r = yield treq.get(base + "/cgi-bin/gettoken", params={"corpid": "ww-fake-corp", "corpsecret": "fake-secret"}, pool=pool)
        assert r.code == 503
        yield r.content()
        r = yield treq.get(base + "/_fake/requests", pool=pool)
        assert [x["endpoint"] for x in (yield r.json())] == ["gettoken"]
    finally:
        yield pool.closeCachedConnections()
        try:
            proc.signalProcess("TERM")
        except Exception:
            pass
        yield proto.ended.addTimeout(10, reactor)


@pytest_twisted.inlineCallbacks
def test_stop_aborts_a_request_still_waiting_and_leaves_no_timer() -> Generator[Any, Any, None]:
    fake = FakeWeCom(reactor)
    fake.script.slow("gettoken", 300.0)
    served = yield listen(fake, reactor)
    pool = HTTPConnectionPool(reactor, persistent=False)
    d = treq.get(served.base_url + "/cgi-bin/gettoken", pool=pool)
    for _ in range(500):  # the request reaches the fake within 5 s
        if fake.script.requests:
            break
        yield deferLater(reactor, 0.01, lambda: None)
    assert fake.script.requests
    yield served.stop()
    with pytest.raises(Exception):
        yield d
    mine = [c for c in reactor.getDelayedCalls() if c.getTime() - reactor.seconds() > 250]
    assert mine == []
