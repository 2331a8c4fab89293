"""The callback routes over StubTreq with a FakeRouter: ack first and route on
the next turn, dedupe before routing, replies dispatched by the dialog's app,
and fuzzed requests always answered 2xx/4xx with nothing routed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from treq.testing import StubTreq
from twisted.internet.task import Clock

from libchat.doors.platforms.config import lark_app, wecom_app
from libchat.doors.platforms.door import PlatformDoor
from libchat.doors.platforms.ledger import Ledger
from libchat.storage.store import run_inline
from libchat.testing import FakeRouter

from .test_callbacks import TEXT_XML, wecom_post
from .test_wecom_crypto import AES_KEY, CORP, TOKEN

WECOM = wecom_app("hr", {"corp_id": CORP, "agent_id": 1, "token": TOKEN,
                         "encoding_aes_key": AES_KEY, "secret": "s", "fallback": "helper"})
LARK = lark_app("bot", {"app_id": "cli_a", "app_secret": "s", "verification_token": "vt-123"})


def door(tmp_path: Path) -> tuple[PlatformDoor, FakeRouter, Clock, StubTreq]:
    clock, router = Clock(), FakeRouter()
    d = PlatformDoor(router, Ledger(tmp_path / "l", run_inline, clock), clock, [WECOM], [LARK])
    for upstream in d.upstreams.values():
        router.attach(upstream)
    return d, router, clock, StubTreq(d.app.resource())


def test_answered_first_routed_on_the_next_turn_and_deduplicated(tmp_path: Path) -> None:
    d, router, clock, http = door(tmp_path)
    query, body = wecom_post(TEXT_XML)
    answers = []
    for _ in range(3):  # StubTreq answers synchronously
        r = []
        http.post("http://h/wecom/hr", body, params=query).addCallback(r.append)
        answers.append(r[0].code)
    assert answers == [200, 200, 200]
    assert router.received == [], "nothing routed before the callback was answered"
    clock.advance(0)
    assert len(router.received) == 1
    upstream, event = router.received[0]
    assert upstream.channel == "wecom" and upstream.fallback == "helper"
    assert event["dialog_id"] == "wecom:hr:lisi" and event["messages"]["content"] == "查天气"


def test_replies_go_to_the_app_the_dialog_id_names(tmp_path: Path) -> None:
    d, _, _, _ = door(tmp_path)
    seen: list[Any] = []
    d.senders[("wecom", "hr")].reply = seen.append  # type: ignore[method-assign]
    d.upstreams[("lark", "bot")].deliver({"event_type": 2001, "dialog_id": "lark:bot:ou"})
    d.upstreams[("wecom", "hr")].deliver({"event_type": 2003, "dialog_id": "wecom:hr:lisi"})
    d.upstreams[("wecom", "hr")].deliver({"event_type": 2002, "dialog_id": "wecom:hr:lisi"})
    assert seen == [{"dialog_id": "wecom:hr:lisi",
                     "messages": {"content": "Sorry, no tool here can help with that."}}]


def test_unknown_app_is_404(tmp_path: Path) -> None:
    _, router, clock, http = door(tmp_path)
    got: list[Any] = []
    http.post("http://h/wecom/nope", b"<xml/>").addCallback(got.append)
    http.post("http://h/lark/nope", b"{}").addCallback(got.append)
    assert [r.code for r in got] == [404, 404]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(["/wecom/hr", "/lark/bot"]),
       method=st.sampled_from(["GET", "POST", "PUT"]),
       query=st.dictionaries(st.sampled_from(["msg_signature", "timestamp", "nonce", "echostr", "x"]),
                             st.text(max_size=40), max_size=5),
       body=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode),
                      st.just(b"<xml><Encrypt>AAAA</Encrypt></xml>"),
                      st.just(b'{"encrypt": "AAAA"}'), st.just(b'{"type": "url_verification"}')))
def test_fuzzed_callbacks_are_answered_2xx_or_4xx_and_route_nothing(
        tmp_path: Path, path: str, method: str, query: dict[str, str], body: bytes) -> None:
    _, router, clock, http = door(tmp_path)
    got: list[Any] = []
    http.request(method, "http://h" + path, data=body, params=query).addCallback(got.append)
    assert got and (200 <= got[0].code < 300 or 400 <= got[0].code < 500), got
    clock.advance(0)
    assert router.received == []
