"""A fake WeCom (企业微信) API: gettoken, message/send, media/upload.

Shapes and error codes as the WeCom server API documents them:

- ``GET /cgi-bin/gettoken?corpid=&corpsecret=`` -> ``{"errcode": 0, "errmsg": "ok",
  "access_token", "expires_in": 7200}``; 41002/40013 for a missing/wrong corpid,
  41004/40001 for a missing/wrong secret.
- ``POST /cgi-bin/message/send?access_token=`` with ``touser``, ``msgtype``
  (text/markdown/image/file), ``agentid`` -> ``{"errcode": 0, "errmsg": "ok",
  "invaliduser": "", "invalidparty": "", "invalidtag": "", "unlicenseduser": "",
  "msgid"}``. Text over 2048 bytes (markdown 4096) is 45002, empty 44004, an
  unknown media_id 40007, another agentid 40056, another msgtype 40008.
- ``POST /cgi-bin/media/upload?access_token=&type=`` multipart field ``media``
  -> ``{"errcode": 0, "errmsg": "", "type", "media_id", "created_at": "<epoch>"}``;
  40004 bad type, 41005 no media, 40006/40009/40010/40011 size.

Token errors on send/upload: 41001 missing, 40014 unknown, 42001 expired
(:meth:`FakeWeCom.expire_tokens` ages every issued token). Business errors
are HTTP 200, as on the real server.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from klein import Klein
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest

from .script import Recorded, Script, add_remote_routes, after, bare_error, json_answer

TEXT_LIMIT = 2048
MARKDOWN_LIMIT = 4096
MEDIA_LIMITS = {"image": (10 * 1024 * 1024, 40009), "voice": (2 * 1024 * 1024, 40010),
                "video": (10 * 1024 * 1024, 40011), "file": (20 * 1024 * 1024, 40006)}
ERRMSG = {40001: "invalid credential", 40013: "invalid corpid", 41002: "corpid missing",
          41004: "corpsecret missing", 41001: "access_token missing",
          40014: "invalid access_token", 42001: "access_token expired",
          40007: "invalid media_id", 40008: "invalid message type", 40056: "invalid agentid",
          44004: "empty content", 45002: "content size out of limit", 40003: "invalid userid",
          40004: "invalid media type", 41005: "media data missing", 47001: "data format error",
          -1: "system busy", 45009: "api freq out of limit"}


class FakeWeCom:
    app = Klein()

    def __init__(self, clock: IReactorTime, corp_id: str = "ww-fake-corp",
                 secret: str = "fake-secret", agent_id: int = 1000002,
                 token_ttl: int = 7200) -> None:
        self.clock = clock
        self.script = Script(clock)
        self.corp_id, self.secret, self.agent_id = corp_id, secret, agent_id
        self.token_ttl = token_ttl
        self.tokens: dict[str, float] = {}  # token -> expiry
        self.media: dict[str, tuple[str, bytes, str | None]] = {}  # id -> (type, data, filename)
        self.delivered: list[dict[str, Any]] = []  # accepted message/send bodies
        self._ids = itertools.count(1)

    # -- test helpers ------------------------------------------------------

    def expire_tokens(self) -> None:
        """Every token issued so far answers 42001 from now on."""
        now = self.clock.seconds()
        self.tokens = {t: min(exp, now - 1) for t, exp in self.tokens.items()}

    def texts(self) -> list[str]:
        return [m.get("text", {}).get("content", "") for m in self.delivered if m.get("msgtype") == "text"]

    # -- common ------------------------------------------------------------

    def _error(self, request: IRequest, code: int, status: int = 200) -> bytes:
        return json_answer(request, status, {"errcode": code, "errmsg": ERRMSG.get(code, "error")})

    def _serve(self, endpoint: str, request: IRequest, handler: Any) -> Any:
        rec = self.script.record(endpoint, request)
        fault = self.script.take(endpoint)

        def answer() -> bytes:
            if fault is not None and fault.code is not None:
                return json_answer(request, fault.status or 200,
                                   {"errcode": fault.code,
                                    "errmsg": fault.msg or ERRMSG.get(fault.code, "error")},
                                   fault.headers)
            if fault is not None and fault.status is not None:
                return bare_error(request, fault.status, fault.headers)
            result: bytes = handler(request, rec)
            return result

        return after(self.clock, fault, answer)

    def _token_error(self, rec: Recorded) -> int | None:
        token = rec.arg("access_token")
        if not token:
            return 41001
        expiry = self.tokens.get(token)
        if expiry is None:
            return 40014
        if expiry <= self.clock.seconds():
            return 42001
        return None

    # -- routes ------------------------------------------------------------

    @app.route("/cgi-bin/gettoken", methods=["GET"])
    def gettoken(self, request: IRequest) -> Any:
        return self._serve("gettoken", request, self._gettoken)

    def _gettoken(self, request: IRequest, rec: Recorded) -> bytes:
        corp, secret = rec.arg("corpid"), rec.arg("corpsecret")
        for missing, wrong, value, want in ((41002, 40013, corp, self.corp_id),
                                            (41004, 40001, secret, self.secret)):
            if not value:
                return self._error(request, missing)
            if value != want:
                return self._error(request, wrong)
        token = f"wecom-token-{next(self._ids)}"
        self.tokens[token] = self.clock.seconds() + self.token_ttl
        return json_answer(request, 200, {"errcode": 0, "errmsg": "ok", "access_token": token,
                                          "expires_in": self.token_ttl})

    @app.route("/cgi-bin/message/send", methods=["POST"])
    def send(self, request: IRequest) -> Any:
        return self._serve("send", request, self._send)

    def _send(self, request: IRequest, rec: Recorded) -> bytes:
        code = self._token_error(rec)
        if code is not None:
            return self._error(request, code)
        try:
            body = json.loads(rec.body)
        except (ValueError, UnicodeDecodeError):
            return self._error(request, 47001)
        if not isinstance(body, dict):
            return self._error(request, 47001)
        if body.get("agentid") != self.agent_id:
            return self._error(request, 40056)
        if not (body.get("touser") or body.get("toparty") or body.get("totag")):
            return self._error(request, 40003)
        code = self._check_message(body)
        if code is not None:
            return self._error(request, code)
        self.delivered.append(body)
        return json_answer(request, 200, {"errcode": 0, "errmsg": "ok", "invaliduser": "",
                                          "invalidparty": "", "invalidtag": "",
                                          "unlicenseduser": "", "msgid": f"msgid-{next(self._ids)}"})

    def _check_message(self, body: dict[str, Any]) -> int | None:
        kind = body.get("msgtype")
        part = body.get(kind) if isinstance(kind, str) else None
        if kind not in ("text", "markdown", "image", "file") or not isinstance(part, dict):
            return 40008
        if kind in ("text", "markdown"):
            content = part.get("content")
            if not isinstance(content, str) or not content:
                return 44004
            if len(content.encode("utf-8")) > (TEXT_LIMIT if kind == "text" else MARKDOWN_LIMIT):
                return 45002
            return None
        media = self.media.get(part.get("media_id") or "")
        if media is None or (kind == "image" and media[0] != "image"):
            return 40007
        return None

    @app.route("/cgi-bin/media/upload", methods=["POST"])
    def upload(self, request: IRequest) -> Any:
        return self._serve("upload", request, self._upload)

    def _upload(self, request: IRequest, rec: Recorded) -> bytes:
        code = self._token_error(rec)
        if code is not None:
            return self._error(request, code)
        kind = rec.arg("type") or ""
        if kind not in MEDIA_LIMITS:
            return self._error(request, 40004)
        part = rec.form.get("media")
        if part is None or part.filename is None:
            return self._error(request, 41005)
        limit, size_code = MEDIA_LIMITS[kind]
        if not 5 < len(part.data) <= limit:
            return self._error(request, size_code)
        media_id = f"media-{next(self._ids)}"
        self.media[media_id] = (kind, part.data, part.filename)
        return json_answer(request, 200, {"errcode": 0, "errmsg": "", "type": kind,
                                          "media_id": media_id,
                                          "created_at": str(int(self.clock.seconds()))})

    # -- remote scripting (for a fake in another process) -------------------

    add_remote_routes(app)  # /_fake/fault, /_fake/expire_tokens, /_fake/requests
