"""A fake Lark/Feishu open API: tenant token, messages, images, files, bot info.

Shapes and codes as the Lark open platform documents them:

- ``POST /open-apis/auth/v3/tenant_access_token/internal`` ``{"app_id", "app_secret"}``
  -> ``{"code": 0, "msg": "ok", "tenant_access_token": "t-...", "expire": 7200}``
  (10003 bad request, 10014 app secret invalid).
- ``POST /open-apis/im/v1/messages?receive_id_type=`` (``Authorization: Bearer``)
  ``{"receive_id", "msg_type", "content": <a JSON string>, "uuid"?}`` ->
  ``{"code": 0, "msg": "success", "data": {message_id, chat_id, msg_type,
  create_time, sender, body: {content}, ...}}``. 99991661 no token, 99991663
  invalid/expired token, 99992402 bad receive_id_type, 230001 bad content,
  230025 a text body over 150 KB / a post body over 30 KB. The same ``uuid``
  within an hour answers the first message again and delivers nothing.
- ``POST /open-apis/im/v1/images`` multipart ``image_type`` + ``image`` ->
  ``data.image_key``; ``POST /open-apis/im/v1/files`` multipart ``file_type``,
  ``file_name``, ``file`` -> ``data.file_key`` (234001 missing fields, 234006 size).
- ``GET /open-apis/bot/v3/info`` -> ``{"code": 0, "msg": "ok", "bot": {"open_id", ...}}``.

Business errors are HTTP 400 (the gateway's usual status; a client must read
``code`` whatever the status), rate limiting (code 99991400) HTTP 429 with the
``x-ogw-ratelimit-*`` headers.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from klein import Klein
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest

from .script import Recorded, Script, add_remote_routes, after, bare_error, json_answer

TEXT_BODY_LIMIT = 150 * 1024
POST_BODY_LIMIT = 30 * 1024
UUID_WINDOW = 3600.0
RECEIVE_ID_TYPES = ("open_id", "user_id", "union_id", "email", "chat_id")
MSG_TYPES = ("text", "post", "image", "file", "audio", "media", "sticker", "interactive",
             "share_chat", "share_user")
FILE_TYPES = ("opus", "mp4", "pdf", "doc", "xls", "ppt", "stream")
IMAGE_LIMIT = 10 * 1024 * 1024
FILE_LIMIT = 30 * 1024 * 1024
MSG = {10003: "invalid param", 10014: "app secret invalid",
       99991661: "Missing access token for authorization. Please make a request with token attached.",
       99991663: "Invalid access token for authorization. Please make a request with token attached.",
       99991400: "request trigger frequency limit", 99992402: "field validation failed",
       230001: "Your request contains an invalid request parameter.",
       230025: "The length of the message content reaches its limit.",
       234001: "Invalid request param.", 234006: "The file size exceeds the limit."}
RATE_HEADERS = {"x-ogw-ratelimit-limit": "50", "x-ogw-ratelimit-reset": "1"}


class FakeLark:
    app = Klein()

    def __init__(self, clock: IReactorTime, app_id: str = "cli_fake", app_secret: str = "fake-secret",
                 bot_open_id: str = "ou_fakebot", token_ttl: int = 7200) -> None:
        self.clock = clock
        self.script = Script(clock)
        self.app_id, self.app_secret, self.bot_open_id = app_id, app_secret, bot_open_id
        self.token_ttl = token_ttl
        self.tokens: dict[str, float] = {}
        self.images: dict[str, bytes] = {}
        self.files: dict[str, tuple[str, str, bytes]] = {}  # key -> (file_type, file_name, data)
        self.delivered: list[dict[str, Any]] = []  # accepted message bodies (+ receive_id_type)
        self.by_uuid: dict[str, tuple[float, dict[str, Any]]] = {}
        self._ids = itertools.count(1)

    def expire_tokens(self) -> None:
        now = self.clock.seconds()
        self.tokens = {t: min(exp, now - 1) for t, exp in self.tokens.items()}

    def contents(self) -> list[Any]:
        """The decoded ``content`` of every delivered message."""
        return [json.loads(m["content"]) for m in self.delivered]

    # -- common ------------------------------------------------------------

    def _error(self, request: IRequest, code: int, status: int = 400) -> bytes:
        headers = RATE_HEADERS if code == 99991400 else None
        return json_answer(request, 429 if code == 99991400 else status,
                           {"code": code, "msg": MSG.get(code, "error")}, headers)

    def _ok(self, request: IRequest, data: dict[str, Any], msg: str = "success") -> bytes:
        return json_answer(request, 200, {"code": 0, "msg": msg, "data": data})

    def _serve(self, endpoint: str, request: IRequest, handler: Any) -> Any:
        rec = self.script.record(endpoint, request)
        fault = self.script.take(endpoint)

        def answer() -> bytes:
            if fault is not None and fault.code is not None:
                status = fault.status or (429 if fault.code == 99991400 else 400)
                headers = fault.headers or (RATE_HEADERS if status == 429 else {})
                return json_answer(request, status, {"code": fault.code,
                                                     "msg": fault.msg or MSG.get(fault.code, "error")},
                                   headers)
            if fault is not None and fault.status is not None:
                return bare_error(request, fault.status, fault.headers)
            result: bytes = handler(request, rec)
            return result

        return after(self.clock, fault, answer)

    def _token_error(self, rec: Recorded) -> int | None:
        scheme, _, token = rec.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return 99991661
        expiry = self.tokens.get(token.strip())
        if expiry is None or expiry <= self.clock.seconds():
            return 99991663
        return None

    # -- routes ------------------------------------------------------------

    @app.route("/open-apis/auth/v3/tenant_access_token/internal", methods=["POST"])
    def tenant_token(self, request: IRequest) -> Any:
        return self._serve("token", request, self._tenant_token)

    def _tenant_token(self, request: IRequest, rec: Recorded) -> bytes:
        body = rec.json if isinstance(rec.json, dict) else {}
        if not body.get("app_id") or not body.get("app_secret"):
            return self._error(request, 10003)
        if body["app_id"] != self.app_id or body["app_secret"] != self.app_secret:
            return self._error(request, 10014)
        token = f"t-fake{next(self._ids):04d}"
        self.tokens[token] = self.clock.seconds() + self.token_ttl
        return json_answer(request, 200, {"code": 0, "msg": "ok", "tenant_access_token": token,
                                          "expire": self.token_ttl})

    @app.route("/open-apis/im/v1/messages", methods=["POST"])
    def messages(self, request: IRequest) -> Any:
        return self._serve("send", request, self._messages)

    def _messages(self, request: IRequest, rec: Recorded) -> bytes:
        code = self._token_error(rec)
        if code is not None:
            return self._error(request, code)
        id_type = rec.arg("receive_id_type")
        if id_type not in RECEIVE_ID_TYPES:
            return self._error(request, 99992402)
        body = rec.json
        if not isinstance(body, dict) or not isinstance(body.get("receive_id"), str) \
                or body.get("msg_type") not in MSG_TYPES or not isinstance(body.get("content"), str):
            return self._error(request, 99992402)
        try:
            content = json.loads(body["content"])
        except ValueError:
            return self._error(request, 230001)
        code = self._check_content(body["msg_type"], content, len(rec.body))
        if code is not None:
            return self._error(request, code)
        now = self.clock.seconds()
        uuid = body.get("uuid")
        if isinstance(uuid, str) and uuid in self.by_uuid and now - self.by_uuid[uuid][0] < UUID_WINDOW:
            return self._ok(request, self.by_uuid[uuid][1])
        ms = str(int(now * 1000))
        data = {"message_id": f"om_fake{next(self._ids)}", "root_id": "", "parent_id": "",
                "thread_id": "", "msg_type": body["msg_type"], "create_time": ms, "update_time": ms,
                "deleted": False, "updated": False,
                "chat_id": body["receive_id"] if id_type == "chat_id" else "oc_fakep2p",
                "sender": {"id": self.app_id, "id_type": "app_id", "sender_type": "app",
                           "tenant_key": "fake-tenant"},
                "body": {"content": body["content"]}, "mentions": [], "upper_message_id": ""}
        if isinstance(uuid, str):
            self.by_uuid[uuid] = (now, data)
        self.delivered.append(dict(body, receive_id_type=id_type))
        return self._ok(request, data)

    def _check_content(self, kind: str, content: Any, body_size: int) -> int | None:
        if not isinstance(content, dict):
            return 230001
        if kind == "text":
            if not isinstance(content.get("text"), str) or not content["text"]:
                return 230001
            return 230025 if body_size > TEXT_BODY_LIMIT else None
        if kind == "post":
            locales = [v for v in content.values() if isinstance(v, dict)]
            if not locales or not all(isinstance(v.get("content"), list) for v in locales):
                return 230001
            return 230025 if body_size > POST_BODY_LIMIT else None
        if kind == "image":
            return None if content.get("image_key") in self.images else 230001
        if kind == "file":
            return None if content.get("file_key") in self.files else 230001
        return None

    @app.route("/open-apis/im/v1/images", methods=["POST"])
    def images_upload(self, request: IRequest) -> Any:
        return self._serve("image", request, self._image)

    def _image(self, request: IRequest, rec: Recorded) -> bytes:
        code = self._token_error(rec)
        if code is not None:
            return self._error(request, code)
        kind, image = rec.form.get("image_type"), rec.form.get("image")
        if kind is None or kind.data not in (b"message", b"avatar") or image is None:
            return self._error(request, 234001)
        if not image.data or len(image.data) > IMAGE_LIMIT:
            return self._error(request, 234006)
        key = f"img_v2_fake{next(self._ids)}"
        self.images[key] = image.data
        return self._ok(request, {"image_key": key})

    @app.route("/open-apis/im/v1/files", methods=["POST"])
    def files_upload(self, request: IRequest) -> Any:
        return self._serve("file", request, self._file)

    def _file(self, request: IRequest, rec: Recorded) -> bytes:
        code = self._token_error(rec)
        if code is not None:
            return self._error(request, code)
        kind, name, data = rec.form.get("file_type"), rec.form.get("file_name"), rec.form.get("file")
        if kind is None or kind.data.decode("latin-1") not in FILE_TYPES or name is None \
                or not name.data or data is None:
            return self._error(request, 234001)
        if not data.data or len(data.data) > FILE_LIMIT:
            return self._error(request, 234006)
        key = f"file_v2_fake{next(self._ids)}"
        self.files[key] = (kind.data.decode(), name.data.decode("utf-8", "replace"), data.data)
        return self._ok(request, {"file_key": key})

    @app.route("/open-apis/bot/v3/info", methods=["GET"])
    def bot_info(self, request: IRequest) -> Any:
        return self._serve("bot_info", request, self._bot_info)

    def _bot_info(self, request: IRequest, rec: Recorded) -> bytes:
        code = self._token_error(rec)
        if code is not None:
            return self._error(request, code)
        return json_answer(request, 200, {"code": 0, "msg": "ok", "bot": {
            "activate_status": 2, "app_name": "libchat fake", "avatar_url": "",
            "ip_white_list": [], "open_id": self.bot_open_id}})

    # -- remote scripting ------------------------------------------------------

    add_remote_routes(app)  # /_fake/fault, /_fake/expire_tokens, /_fake/requests
