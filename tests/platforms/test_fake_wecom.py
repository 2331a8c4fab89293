"""The fake WeCom API behaves like the real one: tokens, send, upload,
scripted errcodes, HTTP errors and slowness, every request recorded."""

from __future__ import annotations

import json
from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from .fakes.script import Fault, encode_multipart
from .fakes.wecom import FakeWeCom

BASE = "http://qyapi.test"


class FakeWeComTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.fake = FakeWeCom(self.clock, corp_id="ww1", secret="sec", agent_id=1000002)
        self.http: Any = StubTreq(self.fake.app.resource())

    def call(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        if "files" in kw:
            ctype, kw["data"] = encode_multipart(kw.pop("files"))
            kw["headers"] = {"Content-Type": ctype}
        d = self.http.request(method, BASE + path, **kw)
        self.http.flush()
        response = self.successResultOf(d)
        body = self.successResultOf(response.content())
        try:
            return response.code, json.loads(body)
        except ValueError:
            return response.code, body

    def token(self) -> str:
        code, body = self.call("GET", "/cgi-bin/gettoken", params={"corpid": "ww1", "corpsecret": "sec"})
        assert code == 200 and body["errcode"] == 0
        return str(body["access_token"])

    def send(self, token: str, body: dict[str, Any]) -> dict[str, Any]:
        code, out = self.call("POST", "/cgi-bin/message/send", params={"access_token": token},
                              data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        assert code == 200
        return dict(out)

    def text(self, content: str, touser: str = "zhangsan") -> dict[str, Any]:
        return {"touser": touser, "msgtype": "text", "agentid": 1000002, "text": {"content": content}}

    def test_gettoken_shape(self) -> None:
        code, body = self.call("GET", "/cgi-bin/gettoken", params={"corpid": "ww1", "corpsecret": "sec"})
        assert code == 200
        assert set(body) == {"errcode", "errmsg", "access_token", "expires_in"}
        assert body["errcode"] == 0 and body["errmsg"] == "ok" and body["expires_in"] == 7200

    def test_gettoken_wrong_or_missing_credentials(self) -> None:
        for params, errcode in (({"corpid": "x", "corpsecret": "sec"}, 40013),
                                ({"corpid": "ww1", "corpsecret": "bad"}, 40001),
                                ({"corpsecret": "sec"}, 41002), ({"corpid": "ww1"}, 41004)):
            code, body = self.call("GET", "/cgi-bin/gettoken", params=params)
            assert (code, body["errcode"]) == (200, errcode), params
            assert "access_token" not in body

    def test_send_text_shape_and_delivery(self) -> None:
        out = self.send(self.token(), self.text("你好"))
        assert out["errcode"] == 0 and out["errmsg"] == "ok" and out["msgid"]
        assert out["invaliduser"] == "" and out["invalidparty"] == "" and out["invalidtag"] == ""
        assert self.fake.texts() == ["你好"]

    def test_send_markdown(self) -> None:
        body = {"touser": "u", "msgtype": "markdown", "agentid": 1000002, "markdown": {"content": "**b**"}}
        assert self.send(self.token(), body)["errcode"] == 0

    def test_text_over_2048_bytes_is_45002_and_exactly_2048_is_accepted(self) -> None:
        token = self.token()
        assert self.send(token, self.text("中" * 683))["errcode"] == 45002  # 2049 bytes
        assert self.send(token, self.text("中" * 682 + "ab"))["errcode"] == 0  # 2048 bytes
        assert self.send(token, self.text(""))["errcode"] == 44004

    def test_token_errors_41001_40014_42001(self) -> None:
        token = self.token()
        code, body = self.call("POST", "/cgi-bin/message/send", data=b"{}")
        assert body["errcode"] == 41001
        assert self.send("nope", self.text("x"))["errcode"] == 40014
        self.fake.expire_tokens()
        assert self.send(token, self.text("x"))["errcode"] == 42001
        assert self.send(self.token(), self.text("x"))["errcode"] == 0

    def test_token_expires_by_the_clock(self) -> None:
        token = self.token()
        self.clock.advance(7199)
        assert self.send(token, self.text("x"))["errcode"] == 0
        self.clock.advance(1)
        assert self.send(token, self.text("x"))["errcode"] == 42001

    def test_wrong_agentid_type_or_recipient(self) -> None:
        token = self.token()
        assert self.send(token, dict(self.text("x"), agentid=1))["errcode"] == 40056
        assert self.send(token, dict(self.text("x"), msgtype="news"))["errcode"] == 40008
        assert self.send(token, dict(self.text("x"), touser=""))["errcode"] == 40003
        code, body = self.call("POST", "/cgi-bin/message/send", params={"access_token": token},
                               data=b"not json")
        assert body["errcode"] == 47001

    def test_upload_field_media_then_send_image_and_file(self) -> None:
        token = self.token()
        png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
        code, body = self.call("POST", "/cgi-bin/media/upload",
                               params={"access_token": token, "type": "image"},
                               files={"media": ("cat.png", "image/png", png)})
        assert code == 200 and body["errcode"] == 0 and body["type"] == "image"
        assert body["created_at"] == "1700000000" and isinstance(body["created_at"], str)
        assert self.fake.media[body["media_id"]] == ("image", png, "cat.png")
        image = {"touser": "u", "msgtype": "image", "agentid": 1000002, "image": {"media_id": body["media_id"]}}
        assert self.send(token, image)["errcode"] == 0
        code, f = self.call("POST", "/cgi-bin/media/upload", params={"access_token": token, "type": "file"},
                            files={"media": ("报告.pdf", "application/pdf", b"%PDF-1.4 x")})
        assert f["errcode"] == 0
        file_msg = {"touser": "u", "msgtype": "file", "agentid": 1000002, "file": {"media_id": f["media_id"]}}
        assert self.send(token, file_msg)["errcode"] == 0
        unknown = dict(file_msg, file={"media_id": "nope"})
        assert self.send(token, unknown)["errcode"] == 40007
        rec = self.fake.script.to("upload")[0]
        assert rec.arg("type") == "image" and rec.form["media"].filename == "cat.png"

    def test_upload_errors(self) -> None:
        token = self.token()
        for params, files, errcode in (
                ({"type": "gif"}, {"media": ("a", "x/y", b"123456")}, 40004),
                ({"type": "image"}, {"other": ("a", "x/y", b"123456")}, 41005),
                ({"type": "image"}, {"media": ("a", "x/y", b"1234")}, 40009),
                ({"type": "file"}, {"media": ("a", "x/y", b"12")}, 40006)):
            code, body = self.call("POST", "/cgi-bin/media/upload", params=dict(params, access_token=token),
                                   files=files)
            assert body["errcode"] == errcode, params

    def test_scripted_errcode_is_answered_once_then_normal(self) -> None:
        token = self.token()
        self.fake.script.fail("send", code=42001)
        self.fake.script.fail("send", code=-1)
        assert self.send(token, self.text("a"))["errcode"] == 42001
        assert self.send(token, self.text("b"))["errcode"] == -1
        assert self.send(token, self.text("c"))["errcode"] == 0
        assert self.fake.texts() == ["c"]

    def test_scripted_http_5xx_and_429_are_bare_errors(self) -> None:
        token = self.token()
        self.fake.script.fail("send", status=503)
        self.fake.script.fail("send", status=429, headers={"Retry-After": "2"})
        code, body = self.call("POST", "/cgi-bin/message/send", params={"access_token": token}, data=b"{}")
        assert code == 503 and isinstance(body, bytes)
        d = self.http.post(BASE + "/cgi-bin/message/send", params={"access_token": token}, data=b"{}")
        self.http.flush()
        response = self.successResultOf(d)
        assert response.code == 429 and response.headers.getRawHeaders("retry-after") == ["2"]
        assert self.fake.delivered == []

    def test_scripted_slowness_waits_for_the_clock(self) -> None:
        token = self.token()
        self.fake.script.slow("send", 10.0)
        d = self.http.post(BASE + "/cgi-bin/message/send", params={"access_token": token},
                           data=json.dumps(self.text("slow")).encode())
        self.http.flush()
        self.assertNoResult(d)
        self.clock.advance(9.9)
        self.http.flush()
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.http.flush()
        response = self.successResultOf(d)
        assert json.loads(self.successResultOf(response.content()))["errcode"] == 0
        assert self.fake.texts() == ["slow"]

    def test_every_request_is_recorded(self) -> None:
        token = self.token()
        self.send(token, self.text("x"))
        recs = self.fake.script.requests
        assert [r.endpoint for r in recs] == ["gettoken", "send"]
        assert recs[0].arg("corpid") == "ww1" and recs[1].json["text"] == {"content": "x"}
        assert recs[1].arg("access_token") == token and recs[1].at == 1_700_000_000

    def test_remote_scripting_routes(self) -> None:
        code, _ = self.call("POST", "/_fake/fault", data=json.dumps({"endpoint": "send", "code": 45009}).encode())
        assert code == 200
        assert self.send(self.token(), self.text("x"))["errcode"] == 45009
        code, recs = self.call("GET", "/_fake/requests")
        assert [r["endpoint"] for r in recs] == ["gettoken", "send"]


@pytest.mark.parametrize("fault", [Fault(code=40001), Fault(status=500), Fault(delay=1.0)])
def test_fault_copies_are_independent(fault: Fault) -> None:
    fake = FakeWeCom(Clock())
    fake.script.fail("send", fault, times=3)
    assert len(fake.script.faults["send"]) == 3
    assert fake.script.take("send") == fault and fake.script.take("send") is not fault
