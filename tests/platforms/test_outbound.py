"""Outbound bodies, answer classification and back-off; the bodies (and the
split parts) are accepted by the fakes, which enforce the platforms' limits."""

from __future__ import annotations

import json
from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from libchat.doors.platforms import outbound as ob
from libchat.doors.platforms.textsplit import split_lark, split_wecom
from libchat.doors.platforms.tokens import TokenCache

from .fakes.lark import FakeLark
from .fakes.wecom import FakeWeCom


def body(d: dict[str, Any]) -> bytes:
    return json.dumps(d).encode()


@pytest.mark.parametrize("status, answer, outcome", [
    (200, {"errcode": 0, "errmsg": "ok"}, ob.OK),
    (200, {"errcode": 40001}, ob.REFRESH_TOKEN), (200, {"errcode": 40014}, ob.REFRESH_TOKEN),
    (200, {"errcode": 42001}, ob.REFRESH_TOKEN),
    (200, {"errcode": -1}, ob.RETRY), (200, {"errcode": 45009}, ob.RETRY),
    (502, None, ob.RETRY), (None, None, ob.RETRY), (429, None, ob.RETRY),
    (200, {"errcode": 45002}, ob.PERMANENT), (200, {"errcode": 40003}, ob.PERMANENT),
    (200, None, ob.PERMANENT), (400, {"errmsg": "?"}, ob.PERMANENT),
])
def test_wecom_outcomes(status: int | None, answer: Any, outcome: str) -> None:
    raw = body(answer) if answer is not None else b"<html>"
    assert ob.wecom_outcome(status, raw) == outcome


@pytest.mark.parametrize("status, answer, outcome", [
    (200, {"code": 0, "msg": "success"}, ob.OK),
    (400, {"code": 99991661}, ob.REFRESH_TOKEN), (400, {"code": 99991663}, ob.REFRESH_TOKEN),
    (429, {"code": 99991400}, ob.RETRY), (400, {"code": 99991400}, ob.RETRY),
    (503, None, ob.RETRY), (None, None, ob.RETRY), (429, None, ob.RETRY),
    (400, {"code": 230001}, ob.PERMANENT), (400, {"code": 230002}, ob.PERMANENT),
    (200, None, ob.PERMANENT),
])
def test_lark_outcomes(status: int | None, answer: Any, outcome: str) -> None:
    raw = body(answer) if answer is not None else b"<html>"
    assert ob.lark_outcome(status, raw) == outcome


def test_backoff_doubles_from_1_to_60_seconds_for_10_minutes() -> None:
    assert [ob.backoff(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert not ob.give_up(1000.0, 1599.9) and ob.give_up(1000.0, 1600.0)


def test_lark_mention_and_file_types() -> None:
    assert ob.lark_mention('ou_1"><x') == '<at user_id="ou_1x"></at>'
    assert json.loads(ob.lark_text("oc", "hi", "u", mention="ou_a")["content"]) == {
        "text": '<at user_id="ou_a"></at> hi'}
    assert [ob.lark_file_type(n) for n in ("a.PDF", "b.docx", "c", "d.zip")] == ["pdf", "doc", "stream", "stream"]
    with pytest.raises(ValueError):
        ob.wecom_media("u", 1, "news", "m")


class AcceptedByTheFakes(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.wecom = FakeWeCom(self.clock, corp_id="ww1", secret="s", agent_id=7)
        self.lark = FakeLark(self.clock, app_id="cli", app_secret="s")
        self.w: Any = StubTreq(self.wecom.app.resource())
        self.l: Any = StubTreq(self.lark.app.resource())

    def answer(self, http: Any, d: Any) -> tuple[int, bytes]:
        http.flush()
        response = self.successResultOf(d)
        return response.code, self.successResultOf(response.content())

    def wecom_token(self) -> str:
        _, raw = self.answer(self.w, self.w.get("http://w/cgi-bin/gettoken",
                                                params={"corpid": "ww1", "corpsecret": "s"}))
        return str(json.loads(raw)["access_token"])

    def wecom_send(self, token: str, msg: dict[str, Any]) -> str:
        status, raw = self.answer(self.w, self.w.post("http://w/cgi-bin/message/send",
                                                      params={"access_token": token}, data=body(msg)))
        return ob.wecom_outcome(status, raw)

    def lark_send(self, token: str, msg: dict[str, Any]) -> str:
        status, raw = self.answer(self.l, self.l.post(
            "http://l/open-apis/im/v1/messages", params={"receive_id_type": "chat_id"},
            data=json.dumps(msg, ensure_ascii=False).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"}))
        return ob.lark_outcome(status, raw)

    def test_5000_byte_cjk_reply_goes_out_in_parts_that_concatenate_back(self) -> None:
        text = "企业微信按字节计算长度，" * 139  # 5004 bytes
        token = self.wecom_token()
        outcomes = [self.wecom_send(token, ob.wecom_text("zhangsan", 7, p)) for p in split_wecom(text)]
        assert outcomes == [ob.OK] * 3
        assert "".join(self.wecom.texts()) == text
        assert all(len(t.encode()) <= 2048 for t in self.wecom.texts())

    def test_unsplit_text_is_a_permanent_refusal(self) -> None:
        assert self.wecom_send(self.wecom_token(), ob.wecom_text("u", 7, "字" * 1000)) == ob.PERMANENT

    def test_expired_token_asks_for_a_refresh(self) -> None:
        token = self.wecom_token()
        self.wecom.expire_tokens()
        assert self.wecom_send(token, ob.wecom_text("u", 7, "x")) == ob.REFRESH_TOKEN
        assert self.wecom_send(self.wecom_token(), ob.wecom_text("u", 7, "x")) == ob.OK

    def test_token_cached_across_sends_and_refetched_after_42001(self) -> None:
        cache = TokenCache(self.clock)

        def send(msg: dict[str, Any]) -> str:
            token = cache.current()
            if token is None:
                token = self.wecom_token()
                cache.store(token, 7200)
            outcome = self.wecom_send(token, msg)
            if outcome == ob.REFRESH_TOKEN:  # refetch, then retry the send once
                cache.invalidate(token)
                token = self.wecom_token()
                cache.store(token, 7200)
                outcome = self.wecom_send(token, msg)
            return outcome

        assert [send(ob.wecom_text("u", 7, f"m{i}")) for i in range(3)] == [ob.OK] * 3
        assert len(self.wecom.script.to("gettoken")) == 1
        self.wecom.expire_tokens()
        assert send(ob.wecom_text("u", 7, "after")) == ob.OK
        assert len(self.wecom.script.to("gettoken")) == 2
        assert self.wecom.texts() == ["m0", "m1", "m2", "after"]

    def lark_token(self) -> str:
        _, raw = self.answer(self.l, self.l.post(
            "http://l/open-apis/auth/v3/tenant_access_token/internal",
            data=body({"app_id": "cli", "app_secret": "s"}), headers={"Content-Type": "application/json"}))
        return str(json.loads(raw)["tenant_access_token"])

    def test_lark_long_text_with_a_mention_fits_150_kb_per_message(self) -> None:
        text = '回答"引号"\\和换行\n' * 30000
        token = self.lark_token()
        parts = split_lark(text)
        assert len(parts) > 1
        for i, p in enumerate(parts):
            assert self.lark_send(token, ob.lark_text("oc_1", p, f"uuid-{i}", mention="ou_" + "a" * 32)) == ob.OK
        got = [c["text"].split("</at> ", 1)[1] for c in self.lark.contents()]
        assert "".join(got) == text

    def test_lark_markdown_post_parts_fit_30_kb(self) -> None:
        text = "**第一条** 内容。\n" * 5000
        token = self.lark_token()
        for i, p in enumerate(split_lark(text, post=True)):
            assert self.lark_send(token, ob.lark_post_md("oc_1", p, f"u{i}")) == ob.OK
        texts = [c["zh_cn"]["content"][0][0]["text"] for c in self.lark.contents()]
        assert "".join(texts) == text

    def test_lark_retry_with_the_same_uuid_delivers_once(self) -> None:
        token = self.lark_token()
        self.lark.script.fail("send", status=503)
        msg = ob.lark_text("oc_1", "hello", "uuid-1")
        assert self.lark_send(token, msg) == ob.RETRY
        assert self.lark_send(token, msg) == ob.OK
        assert self.lark_send(token, msg) == ob.OK  # a duplicate retry after a lost answer
        assert self.lark.contents() == [{"text": "hello"}]
