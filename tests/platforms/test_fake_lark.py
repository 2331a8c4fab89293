"""The fake Lark API behaves like the real one: tenant token, messages with
``uuid`` idempotency, images, files, bot info, scripted codes, 429/5xx,
slowness, every request recorded."""

from __future__ import annotations

import json
from typing import Any

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from .fakes.lark import FakeLark
from .fakes.script import encode_multipart

BASE = "http://open.lark.test"


class FakeLarkTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.fake = FakeLark(self.clock, app_id="cli_a", app_secret="sec", bot_open_id="ou_bot")
        self.http: Any = StubTreq(self.fake.app.resource())

    def call(self, method: str, path: str, token: str | None = None, json_body: Any = None,
             files: dict[str, Any] | None = None, **kw: Any) -> tuple[int, Any, Any]:
        headers = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if json_body is not None:
            kw["data"] = json.dumps(json_body).encode()
            headers["Content-Type"] = "application/json; charset=utf-8"
        if files is not None:
            headers["Content-Type"], kw["data"] = encode_multipart(files)
        d = self.http.request(method, BASE + path, headers=headers, **kw)
        self.http.flush()
        response = self.successResultOf(d)
        body = self.successResultOf(response.content())
        try:
            return response.code, json.loads(body), response.headers
        except ValueError:
            return response.code, body, response.headers

    def token(self) -> str:
        code, body, _ = self.call("POST", "/open-apis/auth/v3/tenant_access_token/internal",
                                  json_body={"app_id": "cli_a", "app_secret": "sec"})
        assert code == 200 and body["code"] == 0
        return str(body["tenant_access_token"])

    def send(self, token: str | None, body: dict[str, Any], id_type: str = "chat_id") -> tuple[int, Any]:
        code, out, _ = self.call("POST", "/open-apis/im/v1/messages", token=token, json_body=body,
                                 params={"receive_id_type": id_type})
        return code, out

    def text(self, text: str, uuid: str | None = None) -> dict[str, Any]:
        body = {"receive_id": "oc_chat", "msg_type": "text", "content": json.dumps({"text": text})}
        if uuid:
            body["uuid"] = uuid
        return body

    def test_tenant_token_shape(self) -> None:
        code, body, _ = self.call("POST", "/open-apis/auth/v3/tenant_access_token/internal",
                                  json_body={"app_id": "cli_a", "app_secret": "sec"})
        assert code == 200 and set(body) == {"code", "msg", "tenant_access_token", "expire"}
        assert body["expire"] == 7200 and body["tenant_access_token"].startswith("t-")

    def test_tenant_token_wrong_secret_or_missing_fields(self) -> None:
        code, body, _ = self.call("POST", "/open-apis/auth/v3/tenant_access_token/internal",
                                  json_body={"app_id": "cli_a", "app_secret": "bad"})
        assert (code, body["code"]) == (400, 10014)
        code, body, _ = self.call("POST", "/open-apis/auth/v3/tenant_access_token/internal", json_body={})
        assert body["code"] == 10003

    def test_send_text_shape(self) -> None:
        code, out = self.send(self.token(), self.text("你好"))
        assert code == 200 and out["code"] == 0 and out["msg"] == "success"
        data = out["data"]
        assert data["message_id"].startswith("om_") and data["chat_id"] == "oc_chat"
        assert data["msg_type"] == "text" and data["create_time"] == "1700000000000"
        assert data["sender"] == {"id": "cli_a", "id_type": "app_id", "sender_type": "app",
                                  "tenant_key": "fake-tenant"}
        assert json.loads(data["body"]["content"]) == {"text": "你好"}
        assert self.fake.contents() == [{"text": "你好"}]

    def test_token_codes_99991661_and_99991663(self) -> None:
        assert self.send(None, self.text("x"))[1]["code"] == 99991661
        code, out = self.send("t-unknown", self.text("x"))
        assert (code, out["code"]) == (400, 99991663)
        token = self.token()
        self.fake.expire_tokens()
        assert self.send(token, self.text("x"))[1]["code"] == 99991663
        assert self.fake.delivered == []

    def test_same_uuid_delivers_once_within_an_hour(self) -> None:
        token = self.token()
        first = self.send(token, self.text("a", uuid="u-1"))[1]
        again = self.send(token, self.text("a", uuid="u-1"))[1]
        assert again["data"]["message_id"] == first["data"]["message_id"]
        assert len(self.fake.delivered) == 1
        self.clock.advance(3600)
        token = self.token()
        assert self.send(token, self.text("a", uuid="u-1"))[1]["data"]["message_id"] != first["data"]["message_id"]
        assert len(self.fake.delivered) == 2

    def test_content_must_be_a_json_string_of_the_type(self) -> None:
        token = self.token()
        assert self.send(token, dict(self.text("x"), content={"text": "x"}))[1]["code"] == 99992402
        assert self.send(token, dict(self.text("x"), content="{nope"))[1]["code"] == 230001
        assert self.send(token, dict(self.text("x"), content='{"text": ""}'))[1]["code"] == 230001
        assert self.send(token, self.text("x"), id_type="phone")[1]["code"] == 99992402

    def test_post_with_an_md_element(self) -> None:
        post = {"zh_cn": {"title": "", "content": [[{"tag": "md", "text": "**加粗**"}]]}}
        body = {"receive_id": "oc_chat", "msg_type": "post", "content": json.dumps(post)}
        assert self.send(self.token(), body)[1]["code"] == 0
        assert self.send(self.token(), dict(body, content='{"zh_cn": {"title": ""}}'))[1]["code"] == 230001

    def test_body_limits_150_kb_text_30_kb_post(self) -> None:
        token = self.token()
        assert self.send(token, self.text("x" * (150 * 1024)))[1]["code"] == 230025
        assert self.send(token, self.text("x" * (140 * 1024)))[1]["code"] == 0
        post = {"zh_cn": {"title": "", "content": [[{"tag": "md", "text": "y" * (31 * 1024)}]]}}
        body = {"receive_id": "oc_chat", "msg_type": "post", "content": json.dumps(post)}
        assert self.send(token, body)[1]["code"] == 230025

    def test_image_upload_then_image_message(self) -> None:
        token = self.token()
        png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
        code, out, _ = self.call("POST", "/open-apis/im/v1/images", token=token,
                                 files={"image_type": "message", "image": ("a.png", "image/png", png)})
        assert code == 200 and out["code"] == 0
        key = out["data"]["image_key"]
        assert self.fake.images[key] == png
        body = {"receive_id": "oc_chat", "msg_type": "image", "content": json.dumps({"image_key": key})}
        assert self.send(token, body)[1]["code"] == 0
        assert self.send(token, dict(body, content='{"image_key": "img_nope"}'))[1]["code"] == 230001

    def test_file_upload_then_file_message(self) -> None:
        token = self.token()
        code, out, _ = self.call("POST", "/open-apis/im/v1/files", token=token,
                                 files={"file_type": "pdf", "file_name": "报告.pdf",
                                        "file": ("报告.pdf", "application/pdf", b"%PDF-1.4")})
        assert out["code"] == 0
        key = out["data"]["file_key"]
        assert self.fake.files[key] == ("pdf", "报告.pdf", b"%PDF-1.4")
        body = {"receive_id": "oc_chat", "msg_type": "file", "content": json.dumps({"file_key": key})}
        assert self.send(token, body)[1]["code"] == 0

    def test_upload_errors(self) -> None:
        token = self.token()
        code, out, _ = self.call("POST", "/open-apis/im/v1/images", token=token,
                                 files={"image": ("a.png", "image/png", b"x")})
        assert out["code"] == 234001
        code, out, _ = self.call("POST", "/open-apis/im/v1/files", token=token,
                                 files={"file_type": "exe", "file_name": "a", "file": ("a", "x/y", b"x")})
        assert out["code"] == 234001
        code, out, _ = self.call("POST", "/open-apis/im/v1/images", files={"image_type": "message"})
        assert out["code"] == 99991661

    def test_bot_info_names_the_bot_open_id(self) -> None:
        code, out, _ = self.call("GET", "/open-apis/bot/v3/info", token=self.token())
        assert out["code"] == 0 and out["bot"]["open_id"] == "ou_bot"

    def test_scripted_rate_limit_is_429_with_headers(self) -> None:
        token = self.token()
        self.fake.script.fail("send", code=99991400)
        code, out, headers = self.call("POST", "/open-apis/im/v1/messages", token=token,
                                       json_body=self.text("x"), params={"receive_id_type": "chat_id"})
        assert (code, out["code"]) == (429, 99991400)
        assert headers.getRawHeaders("x-ogw-ratelimit-reset") == ["1"]
        assert self.send(token, self.text("x"))[1]["code"] == 0

    def test_scripted_5xx_code_and_slowness(self) -> None:
        token = self.token()
        self.fake.script.fail("send", status=502)
        self.fake.script.fail("send", code=99991663)
        self.fake.script.slow("send", 5.0)
        code, body = self.send(token, self.text("x"))
        assert code == 502 and isinstance(body, bytes)
        assert self.send(token, self.text("x"))[1]["code"] == 99991663
        d = self.http.post(BASE + "/open-apis/im/v1/messages", params={"receive_id_type": "chat_id"},
                           data=json.dumps(self.text("slow")).encode(),
                           headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        self.http.flush()
        self.assertNoResult(d)
        self.clock.advance(5)
        self.http.flush()
        assert self.successResultOf(d).code == 200
        assert self.fake.contents() == [{"text": "slow"}]

    def test_requests_recorded_with_auth_and_query(self) -> None:
        token = self.token()
        self.send(token, self.text("x", uuid="u-9"))
        rec = self.fake.script.to("send")[0]
        assert rec.headers["authorization"] == f"Bearer {token}"
        assert rec.arg("receive_id_type") == "chat_id" and rec.json["uuid"] == "u-9"
