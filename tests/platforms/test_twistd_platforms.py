"""WeCom and Lark behind a real ``twistd libchat`` and real Node programs; the
platforms are the loopback fakes (tests/platforms/fakes) in this test's
reactor, so every wait here is a Deferred the reactor keeps serving."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import pytest_twisted
import treq
from twisted.internet import defer, reactor, task

from libchat.doors.platforms.lark_crypto import LarkCrypto
from libchat.doors.platforms.wecom_crypto import WeComCrypto
from tests.launcher import Libchat

from .fakes import serve
from .fakes.lark import FakeLark
from .fakes.wecom import FakeWeCom
from .test_wecom_crypto import AES_KEY, CORP, ECHOSTR, TOKEN, URL_SIG

WECOM_SECRET = "wecom-secret-very-private-42"
LARK_SECRET = "lark-app-secret-very-private-43"
VT, EK = "vt-twistd-123", "ek-twistd-456"
AGENT = 1000002
T = 20.0

PROGRAM = r"""'use strict';
const chat = require('libchat');
chat.onMessage((msg) => {
  const text = msg.content.trim();
  if (text === 'long') return chat.reply('数据'.repeat(850));   // 5,100 bytes of UTF-8
  if (text === 'slow') return setTimeout(() => chat.reply('slow done'), 10000);
  if (text === 'picture') {
    return chat.reply({content: 'a picture', attachments: [{type: 'image', name: 'dot.png',
      option: {data: Buffer.from('PNG-BYTES-0123456789').toString('base64')}}]});
  }
  chat.reply(`echo: ${text}`);
});
"""


def until(check: Callable[[], Any], timeout: float = T, what: str = "") -> Any:
    """Fire once ``check()`` is truthy (bounded; polled on the reactor)."""
    deadline = time.monotonic() + timeout

    @defer.inlineCallbacks
    def loop() -> Any:
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {timeout}s: {what}")
            yield task.deferLater(reactor, 0.02, lambda: None)
    return loop()


@pytest.fixture
def fakes() -> Iterator[tuple[FakeWeCom, FakeLark, str, str]]:
    wecom, lark = FakeWeCom(reactor, corp_id=CORP, secret=WECOM_SECRET, agent_id=AGENT), \
        FakeLark(reactor, app_id="cli_twistd", app_secret=LARK_SECRET)
    w = pytest_twisted.blockon(serve.listen(wecom, reactor))
    k = pytest_twisted.blockon(serve.listen(lark, reactor))
    yield wecom, lark, w.base_url, k.base_url
    pytest_twisted.blockon(w.stop())
    pytest_twisted.blockon(k.stop())


def wecom_hr(api_base: str, intent: str) -> str:
    """The ``[wecom.hr]`` section of a test config (the fake WeCom at
    ``api_base``; the secret from ``TEST_WECOM_SECRET``)."""
    return f"""[wecom.hr]
corp_id = "{CORP}"
agent_id = {AGENT}
token = "{TOKEN}"
encoding_aes_key = "{AES_KEY}"
secret_env = "TEST_WECOM_SECRET"
api_base = "{api_base}"
intent = "{intent}"
"""


@pytest.fixture
def server(tmp_path: Path, fakes: Any) -> Iterator[Libchat]:
    _, _, wecom_url, lark_url = fakes
    programs = tmp_path / "programs"
    (programs / "plat").mkdir(parents=True)
    (programs / "plat" / "plat.js").write_text(PROGRAM)
    (tmp_path / "secret").write_text(LARK_SECRET + "\n")
    config = tmp_path / "libchat.toml"
    config.write_text(f"""
{wecom_hr(wecom_url, "plat")}
[lark.bot]
app_id = "cli_twistd"
app_secret_file = "{tmp_path / 'secret'}"
verification_token = "{VT}"
encrypt_key = "{EK}"
api_base = "{lark_url}"
intent = "plat"
""")
    import os
    env = dict(os.environ, TEST_WECOM_SECRET=WECOM_SECRET)
    lc = Libchat(tmp_path / "lc", "--config", str(config), "--kill-grace", "1",
                 programs=programs, env=env)
    lc.start()
    yield lc
    lc.close()
    log = lc.output()
    for secret in (WECOM_SECRET, LARK_SECRET, AES_KEY, VT, EK):
        assert secret not in log, "a secret reached the log"


# -- requests as the platforms send them --------------------------------------------

def wecom_xml(text: str, msg_id: str = "1001", user: str = "lisi") -> bytes:
    return (f"<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><FromUserName><![CDATA[{user}]]>"
            f"</FromUserName><CreateTime>1700000000</CreateTime><MsgType><![CDATA[text]]></MsgType>"
            f"<Content><![CDATA[{text}]]></Content><MsgId>{msg_id}</MsgId>"
            f"<AgentID>{AGENT}</AgentID></xml>").encode()


def wecom_request(message: bytes, corp: str = CORP, forge: bool = False) -> tuple[dict[str, str], bytes]:
    crypto = WeComCrypto(TOKEN, AES_KEY, corp)
    enc = crypto.encrypt(message)
    sig = crypto.sign("1700000000", "n1", enc)
    if forge:
        sig = "0" * 40
    body = (f"<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><Encrypt><![CDATA[{enc}]]>"
            f"</Encrypt><AgentID><![CDATA[{AGENT}]]></AgentID></xml>").encode()
    return {"msg_signature": sig, "timestamp": "1700000000", "nonce": "n1"}, body


@defer.inlineCallbacks
def post(lc: Libchat, path: str, body: bytes, params: Any = None,
         headers: Any = None) -> Any:
    started = time.monotonic()
    response = yield treq.post(lc.url(path), body, params=params, headers=headers, timeout=T)
    content = yield response.content()
    return response.code, content, time.monotonic() - started


def wecom_post(lc: Libchat, text: str, msg_id: str = "1001") -> Any:
    params, body = wecom_request(wecom_xml(text, msg_id))
    return post(lc, "/hooks/wecom/hr", body, params)


def lark_body(text: str, event_id: str = "ev-1", chat_type: str = "p2p",
              mentions: list[dict[str, Any]] | None = None, encrypt: bool = False) -> bytes:
    payload = {"schema": "2.0",
               "header": {"event_id": event_id, "token": VT, "create_time": "1603977298000000",
                          "event_type": "im.message.receive_v1", "tenant_key": "tk",
                          "app_id": "cli_twistd"},
               "event": {"sender": {"sender_id": {"open_id": "ou_user", "user_id": "u1"},
                                    "sender_type": "user", "tenant_key": "tk"},
                         "message": {"message_id": "om_" + event_id, "chat_id": "oc_chat",
                                     "chat_type": chat_type, "message_type": "text",
                                     "create_time": "1609073151345",
                                     "content": json.dumps({"text": text}),
                                     "mentions": mentions or []}}}
    raw = json.dumps(payload).encode()
    if encrypt:
        raw = json.dumps({"encrypt": LarkCrypto(EK).encrypt(raw)}).encode()
    return raw


def program_turns(lc: Libchat) -> float:
    return lc.metrics().get(("libchat_events_total", (("direction", "in"), ("event_type", "1001"))), 0.0)


# -- WeCom ----------------------------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_wecom_text_in_reply_out_through_message_send(server: Libchat, fakes: Any) -> Any:
    wecom = fakes[0]
    status, body, _ = yield wecom_post(server, "hello there")
    assert (status, body) == (200, b"")
    yield until(lambda: wecom.texts(), what="a message/send")
    sent = wecom.delivered[0]
    assert sent["touser"] == "lisi" and sent["agentid"] == AGENT
    assert sent["text"]["content"] == "echo: hello there"


@pytest_twisted.inlineCallbacks
def test_wecom_url_verification_answers_the_decrypted_echostr_exactly(server: Libchat) -> Any:
    query = {"msg_signature": URL_SIG, "timestamp": "1411443780", "nonce": "437374425",
             "echostr": ECHOSTR}
    response = yield treq.get(server.url("/hooks/wecom/hr"), params=query, timeout=T)
    assert (response.code, (yield response.content())) == (200, b"5927782489442352469")
    response = yield treq.get(server.url("/hooks/wecom/hr"), params=dict(query, nonce="437374424"),
                              timeout=T)
    assert response.code == 403
    yield response.content()


@pytest_twisted.inlineCallbacks
def test_the_same_msgid_three_times_is_one_program_turn(server: Libchat, fakes: Any) -> Any:
    wecom = fakes[0]
    for _ in range(3):
        status, _, _ = yield wecom_post(server, "once", msg_id="777")
        assert status == 200
    yield until(lambda: wecom.texts(), what="the reply")
    yield wecom_post(server, "after", msg_id="778")
    yield until(lambda: len(wecom.texts()) == 2, what="the second reply")
    assert wecom.texts() == ["echo: once", "echo: after"]
    figures = server.metrics()
    assert figures[("libchat_platform_dedupe_hits_total",
                    (("app", "hr"), ("platform", "wecom")))] == 2
    assert figures[("libchat_platform_callbacks_total",
                    (("app", "hr"), ("platform", "wecom"), ("status", "200")))] == 4
    assert figures[("libchat_platform_callback_seconds_count",
                    (("app", "hr"), ("platform", "wecom")))] == 4


@pytest_twisted.inlineCallbacks
def test_a_5000_byte_cjk_reply_is_split_into_parts_of_at_most_2048_bytes(
        server: Libchat, fakes: Any) -> Any:
    wecom = fakes[0]
    yield wecom_post(server, "long")
    yield until(lambda: sum(len(t.encode()) for t in wecom.texts()) >= 5100, what="all parts")
    parts = wecom.texts()
    assert len(parts) == 3 and all(len(p.encode()) <= 2048 for p in parts)
    assert "".join(parts) == "数据" * 850


@pytest_twisted.inlineCallbacks
def test_token_cached_across_sends_and_refetched_after_42001(server: Libchat, fakes: Any) -> Any:
    wecom = fakes[0]
    yield wecom_post(server, "one", "1")
    yield until(lambda: len(wecom.texts()) == 1)
    yield wecom_post(server, "two", "2")
    yield until(lambda: len(wecom.texts()) == 2)
    assert len(wecom.script.to("gettoken")) == 1, "the token is kept across sends"
    wecom.expire_tokens()
    yield wecom_post(server, "three", "3")
    yield until(lambda: len(wecom.texts()) == 3)
    assert len(wecom.script.to("gettoken")) == 2, "refetched after 42001"
    assert wecom.texts()[2] == "echo: three"


@pytest_twisted.inlineCallbacks
def test_transient_failures_are_retried_until_success(server: Libchat, fakes: Any) -> Any:
    wecom = fakes[0]
    wecom.script.fail("send", status=502, times=2)
    wecom.script.fail("send", code=-1, times=1)
    yield wecom_post(server, "stubborn")
    yield until(lambda: wecom.texts(), timeout=30, what="the reply after 3 failures")
    assert wecom.texts() == ["echo: stubborn"]
    assert len(wecom.script.to("send")) == 4


@pytest_twisted.inlineCallbacks
def test_an_unsent_reply_survives_kill9_and_restart(server: Libchat, fakes: Any) -> Any:
    wecom = fakes[0]
    wecom.script.fail("send", status=503, times=1000)
    yield wecom_post(server, "durable")
    yield until(lambda: len(wecom.script.to("send")) >= 2, what="a retried send")
    server.kill9()
    wecom.script.faults.clear()
    server.restart()
    yield until(lambda: wecom.texts(), timeout=30, what="the reply after restart")
    assert wecom.texts() == ["echo: durable"]


@pytest_twisted.inlineCallbacks
def test_refused_callbacks_get_their_errors_and_route_nothing(server: Libchat, fakes: Any) -> Any:
    params, body = wecom_request(wecom_xml("forged"), forge=True)
    status, _, _ = yield post(server, "/hooks/wecom/hr", body, params)
    assert status == 403
    params, body = wecom_request(wecom_xml("other corp"), corp="wx0000000000000000")
    status, _, _ = yield post(server, "/hooks/wecom/hr", body, params)
    assert status == 400
    doctype = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><xml><Encrypt>&a;</Encrypt></xml>'
    status, _, _ = yield post(server, "/hooks/wecom/hr", doctype, params)
    assert status == 400
    status, _, _ = yield post(server, "/hooks/wecom/hr", b"<xml>" + b"a" * (1024 * 1024 + 10),
                              params)
    assert status == 413
    status, _, _ = yield post(server, "/hooks/wecom/nosuchapp", body, params)
    assert status == 404
    assert program_turns(server) == 0 and fakes[0].delivered == []


@pytest_twisted.inlineCallbacks
def test_the_callback_is_answered_in_under_a_second_while_the_program_takes_10(
        server: Libchat, fakes: Any) -> Any:
    status, _, took = yield wecom_post(server, "slow")
    assert status == 200 and took < 1.0
    yield until(lambda: program_turns(server) >= 1, what="the turn was routed")
    assert fakes[0].delivered == []


@pytest_twisted.inlineCallbacks
def test_an_image_attachment_is_uploaded_then_sent(server: Libchat, fakes: Any) -> Any:
    wecom = fakes[0]
    yield wecom_post(server, "picture")
    yield until(lambda: any(m["msgtype"] == "image" for m in wecom.delivered), what="the image")
    kinds = [m["msgtype"] for m in wecom.delivered]
    assert kinds == ["text", "image"]
    media_id = wecom.delivered[1]["image"]["media_id"]
    assert wecom.media[media_id][1] == b"PNG-BYTES-0123456789"


# -- Lark -------------------------------------------------------------------------------

@pytest_twisted.inlineCallbacks
def test_lark_challenge_plain_and_encrypted(server: Libchat) -> Any:
    plain = json.dumps({"challenge": "c-1", "token": VT, "type": "url_verification"}).encode()
    status, body, took = yield post(server, "/hooks/lark/bot", plain)
    assert (status, json.loads(body)) == (200, {"challenge": "c-1"}) and took < 1.0
    enc = json.dumps({"encrypt": LarkCrypto(EK).encrypt(
        json.dumps({"challenge": "c-2", "token": VT, "type": "url_verification"}).encode())})
    status, body, _ = yield post(server, "/hooks/lark/bot", enc.encode())
    assert (status, json.loads(body)) == (200, {"challenge": "c-2"})


@pytest_twisted.inlineCallbacks
def test_lark_message_in_reply_out_with_a_uuid_and_retries_deduplicated(
        server: Libchat, fakes: Any) -> Any:
    lark = fakes[1]
    for _ in range(3):
        status, body, _ = yield post(server, "/hooks/lark/bot", lark_body("hi lark", encrypt=True))
        assert status == 200
    yield until(lambda: lark.delivered, what="a Lark message")
    yield post(server, "/hooks/lark/bot", lark_body("again", event_id="ev-2"))
    yield until(lambda: len(lark.delivered) == 2, what="the second message")
    assert [c["text"] for c in lark.contents()] == ["echo: hi lark", "echo: again"]
    sent = lark.delivered[0]
    assert sent["receive_id"] == "oc_chat" and sent["receive_id_type"] == "chat_id"
    assert sent["uuid"] and sent["uuid"] != lark.delivered[1]["uuid"]


@pytest_twisted.inlineCallbacks
def test_a_lark_image_attachment_is_uploaded_then_sent(server: Libchat, fakes: Any) -> Any:
    lark = fakes[1]
    yield post(server, "/hooks/lark/bot", lark_body("picture", event_id="ev-pic"))
    yield until(lambda: len(lark.delivered) == 2, what="text and image")
    assert [m["msg_type"] for m in lark.delivered] == ["text", "image"]
    key = lark.contents()[1]["image_key"]
    assert lark.images[key] == b"PNG-BYTES-0123456789"


@pytest_twisted.inlineCallbacks
def test_lark_group_message_without_a_mention_is_ignored(server: Libchat, fakes: Any) -> Any:
    status, _, _ = yield post(server, "/hooks/lark/bot", lark_body("chatter", chat_type="group"))
    assert status == 200
    bot = {"key": "@_user_1", "id": {"open_id": "ou_fakebot"}, "name": "Bot", "tenant_key": "tk"}
    status, _, _ = yield post(server, "/hooks/lark/bot",
                              lark_body("@_user_1 hi", "ev-g2", "group", [bot]))
    yield until(lambda: fakes[1].delivered, what="the group reply")
    text = fakes[1].contents()[0]["text"]
    assert text.startswith('<at user_id="ou_user"></at>') and text.endswith("echo: hi")
    assert program_turns(server) == 1


@pytest_twisted.inlineCallbacks
def test_frame_upstreams_cannot_send_into_platform_dialogs(server: Libchat, fakes: Any) -> Any:
    from libchat.tools.client import connect
    yield wecom_post(server, "mine")
    yield until(lambda: fakes[0].texts())
    c = yield connect(reactor, f"tcp:host=127.0.0.1:port={server.ports['front']}")
    try:
        c.send({"event_type": 1001, "dialog_id": "wecom:hr:lisi", "user_id": f"wecom:{CORP}:lisi",
                "messages": {"content": "intrude", "attachments": []}})
        event = yield c.next_event(reactor, T)
    finally:
        c.transport.loseConnection()
        yield c.closed
    assert event["event_type"] == 2004 and event["code"] == "BAD_REQUEST"
    assert fakes[0].texts() == ["echo: mine"]
