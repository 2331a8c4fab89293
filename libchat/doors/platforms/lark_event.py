"""Lark/Feishu callbacks: opening them (signature, decryption, verification
token) and mapping ``im.message.receive_v1`` into the unified form.

:func:`open_callback` is the whole check of section 10 in the order the
official SDK applies it, pure: the endpoint hands it the raw body and the
headers and either gets a :class:`Callback` or one of the exceptions of
:mod:`.errors` (403 signature/token, 400 undecryptable or not JSON, 413 size).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import attrs

from . import ids
from .errors import BadCiphertext, BadPayload, BodyTooLarge
from .lark_crypto import LarkCrypto, check_signature, check_token
from .unified import LARK, Inbound, ReplyTarget

MAX_BODY = 1024 * 1024
URL_VERIFICATION = "url_verification"
MESSAGE_RECEIVE = "im.message.receive_v1"
SIGNATURE = "x-lark-signature"
TIMESTAMP = "x-lark-request-timestamp"
NONCE = "x-lark-request-nonce"


@attrs.frozen
class Callback:
    """An opened callback: ``kind`` is ``url_verification`` or the event type."""

    kind: str
    payload: dict[str, Any]
    challenge: str | None = None

    def challenge_answer(self) -> dict[str, str]:
        return {"challenge": self.challenge or ""}


def _loads_object(raw: bytes | str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BadPayload(f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise BadPayload(f"{what} is not a JSON object")
    return value


def open_callback(body: bytes, headers: Mapping[str, str], *, verification_token: str,
                  encrypt_key: str | None = None, max_body: int = MAX_BODY) -> Callback:
    """Check and decode one POSTed callback (``headers`` with lower-case names)."""
    if len(body) > max_body:
        raise BodyTooLarge(f"body over {max_body} bytes")
    outer = _loads_object(body, "body")
    given = headers.get(SIGNATURE)
    if given is not None:
        check_signature(headers.get(TIMESTAMP, ""), headers.get(NONCE, ""), encrypt_key or "",
                        body, given)
    payload = outer
    if "encrypt" in outer:
        if not encrypt_key:
            raise BadCiphertext("encrypted callback but no encrypt_key configured")
        if not isinstance(outer["encrypt"], str):
            raise BadCiphertext("encrypt is not a string")
        payload = _loads_object(LarkCrypto(encrypt_key).decrypt_str(outer["encrypt"]),
                                "decrypted body")
    check_token(payload, verification_token)
    if payload.get("type") == URL_VERIFICATION:
        challenge = payload.get("challenge")
        if not isinstance(challenge, str):
            raise BadPayload("url_verification without a challenge")
        return Callback(URL_VERIFICATION, payload, challenge)
    header = payload.get("header")
    if isinstance(header, Mapping) and isinstance(header.get("event_type"), str):
        return Callback(header["event_type"], payload)
    event = payload.get("event")
    if isinstance(event, Mapping) and isinstance(event.get("type"), str):  # schema 1.0
        return Callback(event["type"], payload)
    return Callback("unknown", payload)


def dedupe_key(payload: Mapping[str, Any]) -> str | None:
    """``header.event_id`` (schema 2.0) or ``uuid`` (1.0)."""
    header = payload.get("header")
    if isinstance(header, Mapping) and isinstance(header.get("event_id"), str):
        return "event:" + header["event_id"]
    if isinstance(payload.get("uuid"), str):
        return "uuid:" + payload["uuid"]
    return None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def parse_message_event(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of an ``im.message.receive_v1`` as a plain dict (``content``
    JSON-decoded; ``mentions`` a list of ``{"key", "open_id", "name"}``)."""
    event = _mapping(payload.get("event"))
    message = _mapping(event.get("message"))
    sender = _mapping(event.get("sender"))
    mentions = []
    raw_mentions = message.get("mentions")
    for m in raw_mentions if isinstance(raw_mentions, list) else []:
        if isinstance(m, Mapping):
            mentions.append({"key": _str(m.get("key")), "name": _str(m.get("name")),
                             "open_id": _str(_mapping(m.get("id")).get("open_id"))})
    raw = message.get("content")
    content = _loads_object(raw, "message.content") if isinstance(raw, str) else {}
    return {"event_id": _str(_mapping(payload.get("header")).get("event_id")),
            "message_id": _str(message.get("message_id")),
            "chat_id": _str(message.get("chat_id")),
            "chat_type": _str(message.get("chat_type")),
            "message_type": _str(message.get("message_type")),
            "create_time": _str(message.get("create_time")),
            "content": content, "mentions": mentions,
            "sender_open_id": _str(_mapping(sender.get("sender_id")).get("open_id")),
            "sender_type": _str(sender.get("sender_type"))}


def strip_mentions(text: str, mentions: list[dict[str, Any]]) -> str:
    """``text`` without the ``@_user_N`` / ``@_all`` placeholders."""
    keys = {m["key"] for m in mentions if m.get("key")} | {"@_all"}
    pattern = "|".join(re.escape(k) for k in sorted(keys, key=len, reverse=True))
    return re.sub(rf"(?:{pattern})(?![0-9A-Za-z_]) ?", "", text).strip()


def _post_body(content: Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(content.get("content"), list):
        return content
    for value in content.values():  # the locale-wrapped form {"zh_cn": {...}}
        if isinstance(value, Mapping) and isinstance(value.get("content"), list):
            return value
    return {}


def post_text(content: Mapping[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """A post's text (title, then one line per paragraph) and its images/media."""
    body = _post_body(content)
    lines = [_str(body.get("title"))] if _str(body.get("title")) else []
    found: list[dict[str, Any]] = []
    for paragraph in body.get("content") or []:
        parts = []
        for el in paragraph if isinstance(paragraph, list) else []:
            el = _mapping(el)
            tag = el.get("tag")
            if tag in ("text", "a", "md", "code_block"):
                parts.append(_str(el.get("text")))
            elif tag == "img" and _str(el.get("image_key")):
                found.append({"type": "image", "file_id": el["image_key"]})
            elif tag == "media" and _str(el.get("file_key")):
                found.append({"type": "file", "name": "", "file_id": el["file_key"]})
        lines.append("".join(parts))
    return "\n".join(lines), found


def message_body(msg: Mapping[str, Any]) -> tuple[str, list[dict[str, Any]]] | None:
    """``(content, attachments)`` for the routed message types; None otherwise."""
    kind, content = msg["message_type"], msg["content"]
    if kind == "text":
        return strip_mentions(_str(content.get("text")), msg["mentions"]), []
    if kind == "post":
        text, found = post_text(content)
        return strip_mentions(text, msg["mentions"]), found
    if kind == "image":
        return "", [{"type": "image", "file_id": _str(content.get("image_key"))}]
    if kind == "file":
        return "", [{"type": "file", "name": _str(content.get("file_name")),
                     "file_id": _str(content.get("file_key"))}]
    if kind == "audio":
        return "", [{"type": "voice", "file_id": _str(content.get("file_key")),
                     "option": {"format": "opus", "duration": content.get("duration")}}]
    return None


def mentions_app(msg: Mapping[str, Any], bot_open_id: str | None) -> bool:
    """Whether a message mentions the app: by the bot's open_id when it is known
    (``/open-apis/bot/v3/info``), else any mention counts."""
    if bot_open_id is None:
        return bool(msg["mentions"])
    return any(m["open_id"] == bot_open_id for m in msg["mentions"])


def to_inbound(app: str, payload: Mapping[str, Any],
               bot_open_id: str | None = None) -> Inbound | None:
    """The unified message, or None when section 10 routes nothing: a group
    message not mentioning the app, a message from an app, another type."""
    msg = parse_message_event(payload)
    if msg["sender_type"] not in ("user", "") or not msg["sender_open_id"]:
        return None
    group = msg["chat_type"] != "p2p"
    if group and not mentions_app(msg, bot_open_id):
        return None
    body = message_body(msg)
    if body is None:
        return None
    open_id, chat_id = msg["sender_open_id"], msg["chat_id"]
    key = dedupe_key(payload) or "message:" + msg["message_id"]
    return Inbound(platform=LARK, app=app,
                   dialog_id=ids.lark_dialog(app, open_id, chat_id if group else None),
                   user_id=ids.lark_user(open_id),
                   message_id="lark-" + ids.safe_part(msg["message_id"] or key),
                   dedupe_key=key, content=body[0], attachments=tuple(body[1]),
                   reply_to=ReplyTarget(to=chat_id, mention=open_id if group else None),
                   msg_type=msg["message_type"])
