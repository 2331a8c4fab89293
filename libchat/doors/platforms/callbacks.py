"""A whole callback, pure: request in, HTTP answer and the message to route out.

The endpoints (``/hooks/wecom/NAME``, ``/hooks/lark/NAME``) hand the method,
query, headers and raw body here and write back ``Answer.status`` /
``content_type`` / ``body``; when ``Answer.inbound`` is set they route it
*after* answering (and after the dedupe check). Every input gets an answer:
2xx, or the 4xx of section 10 with nothing to route.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from . import lark_event, wecom_xml
from .config import LarkApp, WeComApp
from .errors import BadPayload, BadSignature, CallbackRejected
from .unified import Inbound
from .wecom_crypto import WeComCrypto

TEXT = "text/plain; charset=utf-8"
JSON = "application/json; charset=utf-8"


@attrs.frozen
class Answer:
    status: int
    body: bytes = b""
    content_type: str = TEXT
    inbound: Inbound | None = None
    why: str | None = None  # for the log, never sent: no secret, no body text


def _refused(e: CallbackRejected) -> Answer:
    return Answer(e.status, f"{e.status}\n".encode(), TEXT, None, f"{type(e).__name__}: {e}")


def _one(query: Mapping[Any, Any], key: str) -> str | None:
    """The first value of ``key``; keys and values may be str or bytes (as in
    Twisted's ``request.args``)."""
    value = query.get(key, query.get(key.encode()))
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        value = value[0] if value else None
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return value if isinstance(value, str) else None


def wecom_callback(app: WeComApp, method: str, query: Mapping[Any, Any], body: bytes,
                   max_body: int = wecom_xml.MAX_BODY) -> Answer:
    """``GET`` URL verification or ``POST`` message for one WeCom app (query
    values already URL-decoded, a str or a list of them)."""
    crypto = WeComCrypto(app.token, app.encoding_aes_key, app.corp_id)
    sig, ts, nonce = (_one(query, k) for k in ("msg_signature", "timestamp", "nonce"))
    try:
        if method == "GET":
            echostr = _one(query, "echostr")
            if None in (sig, ts, nonce):
                raise BadSignature("msg_signature, timestamp and nonce are required")
            if echostr is None:
                raise BadPayload("echostr is required")
            # base64 has no spaces: a "+" a proxy left unescaped was decoded to " "
            echostr = echostr.replace(" ", "+")
            plain = crypto.verify_url(sig or "", ts or "", nonce or "", echostr or "")
            return Answer(200, plain.encode("utf-8"), TEXT)
        if method != "POST":
            return Answer(405, b"405\n", TEXT, None, f"method {method}")
        envelope = wecom_xml.parse_envelope(body, max_body)
        if None in (sig, ts, nonce):
            raise BadSignature("msg_signature, timestamp and nonce are required")
        plain_xml = crypto.decrypt_message(sig or "", ts or "", nonce or "", envelope["Encrypt"])
        inbound = wecom_xml.to_inbound(app.name, app.corp_id, wecom_xml.parse_message(plain_xml))
    except CallbackRejected as e:
        return _refused(e)
    return Answer(200, b"", TEXT, inbound)


def lark_callback(app: LarkApp, method: str, headers: Mapping[str, str], body: bytes,
                  bot_open_id: str | None = None, max_body: int = lark_event.MAX_BODY) -> Answer:
    """``POST`` event for one Lark app (``headers`` with lower-case names)."""
    if method != "POST":
        return Answer(405, b"405\n", TEXT, None, f"method {method}")
    try:
        cb = lark_event.open_callback(body, headers, verification_token=app.verification_token,
                                      encrypt_key=app.encrypt_key, max_body=max_body)
        if cb.kind == lark_event.URL_VERIFICATION:
            return Answer(200, json.dumps(cb.challenge_answer()).encode(), JSON)
        inbound = None
        if cb.kind == lark_event.MESSAGE_RECEIVE:
            inbound = lark_event.to_inbound(app.name, cb.payload, bot_open_id)
    except CallbackRejected as e:
        return _refused(e)
    return Answer(200, b"{}", JSON, inbound)
