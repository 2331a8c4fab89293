"""WeCom callback XML: the envelope and the decrypted message, hardened.

Parsing is ``defusedxml``'s ElementTree with DTDs, entity declarations and
external references all forbidden: a body that has any of them is refused
(:class:`ForbiddenXML`) before anything is expanded. Bodies are bounded
(:data:`MAX_BODY`, checked before parsing). A parsed document is a plain dict
of the children of ``<xml>``: text for a leaf, a dict for a nested element, a
list when a tag repeats.

:func:`to_inbound` maps a decrypted message into the unified form of CONTRACT
section 10.
"""

from __future__ import annotations

from typing import Any
from xml.etree.ElementTree import Element, ParseError

import defusedxml
from defusedxml.ElementTree import fromstring

from . import ids
from .errors import BadPayload, BodyTooLarge, ForbiddenXML
from .unified import WECOM, Inbound, ReplyTarget

MAX_BODY = 1024 * 1024  # section 10: a POST body over 1 MiB is answered 413
MAX_DEPTH = 8
ROUTED_TYPES = ("text", "image", "voice", "file")


def parse_xml(body: bytes, max_body: int = MAX_BODY) -> dict[str, Any]:
    """The children of a ``<xml>`` root as a dict (see the module docstring)."""
    if len(body) > max_body:
        raise BodyTooLarge(f"body over {max_body} bytes")
    try:
        root = fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except (defusedxml.DTDForbidden, defusedxml.EntitiesForbidden,
            defusedxml.ExternalReferenceForbidden) as e:
        raise ForbiddenXML(f"XML with a DOCTYPE or entities is refused: {type(e).__name__}") from None
    except (ParseError, ValueError, UnicodeError) as e:
        raise BadPayload(f"not well-formed XML: {e}") from None
    if root.tag != "xml":
        raise BadPayload(f"root element is <{root.tag}>, not <xml>")
    value = _element(root, 0)
    return value if isinstance(value, dict) else {}


def _element(el: Element, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise BadPayload("XML nested too deeply")
    children = list(el)
    if not children:
        return el.text or ""
    out: dict[str, Any] = {}
    for child in children:
        if not isinstance(child.tag, str):  # pragma: no cover - comments are dropped by the parser
            continue
        value = _element(child, depth + 1)
        if child.tag in out:
            prior = out[child.tag]
            out[child.tag] = (prior if isinstance(prior, list) else [prior]) + [value]
        else:
            out[child.tag] = value
    return out


def _text(doc: dict[str, Any], key: str, required: bool = False) -> str | None:
    value = doc.get(key)
    if isinstance(value, str):
        return value
    if required:
        raise BadPayload(f"<{key}> missing or not text")
    return None


def parse_envelope(body: bytes, max_body: int = MAX_BODY) -> dict[str, Any]:
    """The POSTed envelope: ``{"ToUserName", "Encrypt", "AgentID"}`` (``Encrypt``
    required; the others None when absent)."""
    doc = parse_xml(body, max_body)
    return {"ToUserName": _text(doc, "ToUserName"), "Encrypt": _text(doc, "Encrypt", True),
            "AgentID": _text(doc, "AgentID")}


def parse_message(plain: bytes) -> dict[str, Any]:
    """The decrypted message XML as a dict; ``MsgType`` and ``FromUserName`` required."""
    doc = parse_xml(plain)
    _text(doc, "MsgType", True)
    _text(doc, "FromUserName", True)
    return doc


def dedupe_key(msg: dict[str, Any]) -> str:
    """``MsgId``, or for events without one ``FromUserName`` + ``CreateTime``."""
    msg_id = _text(msg, "MsgId")
    if msg_id:
        return "msgid:" + msg_id
    return "from:{}:{}:{}".format(_text(msg, "FromUserName") or "", _text(msg, "CreateTime") or "",
                                  _text(msg, "Event") or _text(msg, "MsgType") or "")


def attachments(msg: dict[str, Any]) -> list[dict[str, Any]]:
    """Section 10's attachment for an image, voice or file message."""
    kind = _text(msg, "MsgType")
    media = _text(msg, "MediaId") or ""
    if kind == "image":
        return [{"type": "image", "file_id": media, "option": {"url": _text(msg, "PicUrl") or ""}}]
    if kind == "voice":
        return [{"type": "voice", "file_id": media, "option": {"format": _text(msg, "Format") or ""}}]
    if kind == "file":
        name = _text(msg, "FileName") or _text(msg, "Title") or ""
        return [{"type": "file", "name": name, "file_id": media}]
    return []


def to_inbound(app: str, corp_id: str, msg: dict[str, Any]) -> Inbound | None:
    """The unified message for a text/image/voice/file message; None for
    anything else (events, locations, links: acknowledged, not routed)."""
    kind = _text(msg, "MsgType")
    if kind not in ROUTED_TYPES:
        return None
    sender = _text(msg, "FromUserName", True) or ""
    key = dedupe_key(msg)
    msg_id = _text(msg, "MsgId")
    return Inbound(platform=WECOM, app=app, dialog_id=ids.wecom_dialog(app, sender),
                   user_id=ids.wecom_user(corp_id, sender),
                   message_id="wecom-" + (msg_id if msg_id else ids.hashed(key)),
                   dedupe_key=key, content=(_text(msg, "Content") or "") if kind == "text" else "",
                   attachments=tuple(attachments(msg)), reply_to=ReplyTarget(to=sender),
                   msg_type=kind)
