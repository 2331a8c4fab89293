"""Validation of event bodies (docs/protocol.md §1, docs/protocol.md §2-3), independent of transport.

Every front door (frame connection, WebSocket, REST) hands its bodies to
:func:`parse_upstream`, so the same input gets the same answer everywhere.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from libchat.protocol import codes
from libchat.jsonc import JSONDecodeError, loads

DIALOG_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}")
INTENT = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
MAX_USER_ID = 256
MAX_MESSAGE_ID = 256

UPSTREAM_TYPES = frozenset({codes.USER_MESSAGE, codes.CLIENT_CLOSE})
PROGRAM_TYPES = frozenset({codes.REPLY, codes.ENDED, codes.UNSUPPORTED})


class BadEvent(Exception):
    """An event answered with a 2004; the connection stays open."""

    def __init__(
        self,
        code: str,
        message: str,
        dialog_id: str | None = None,
        message_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.dialog_id = dialog_id
        self.message_id = message_id

    def event(self) -> dict[str, Any]:
        return codes.error(
            self.code, self.message, dialog_id=self.dialog_id, message_id=self.message_id
        )


def new_message_id() -> str:
    return "msg-" + uuid.uuid4().hex[:16]


# dialog ids already found valid: a set lookup instead of a regex per message
# (cleared when full, so a flood of new ids costs memory only up to the bound)
_VALID_IDS: set[str] = set()
_VALID_IDS_MAX = 65_536


def valid_dialog_id(value: Any) -> bool:
    if value.__class__ is str and value in _VALID_IDS:
        return True
    if not isinstance(value, str) or DIALOG_ID.fullmatch(value) is None:
        return False
    if value.__class__ is str:
        if len(_VALID_IDS) >= _VALID_IDS_MAX:
            _VALID_IDS.clear()
        _VALID_IDS.add(value)
    return True


def valid_intent(value: Any) -> bool:
    return isinstance(value, str) and INTENT.fullmatch(value) is not None


def decode_body(header_type: int | None, body: bytes | str) -> dict[str, Any]:
    """Body bytes to a JSON object whose ``event_type`` matches the header."""
    try:
        event = loads(body)
    except (JSONDecodeError, UnicodeDecodeError, ValueError) as e:
        raise BadEvent(codes.BAD_REQUEST, f"body is not valid JSON: {e}") from None
    if not isinstance(event, dict):
        raise BadEvent(codes.BAD_REQUEST, "body is not a JSON object")
    etype = event.get("event_type")
    if not isinstance(etype, int) or isinstance(etype, bool):
        raise BadEvent(codes.BAD_REQUEST, "event_type is missing or not an integer",
                       _str(event.get("dialog_id")), _str(event.get("message_id")))
    if header_type is not None and etype != header_type:
        raise BadEvent(
            codes.BAD_REQUEST,
            f"header type {header_type} differs from event_type {etype}",
            _str(event.get("dialog_id")),
            _str(event.get("message_id")),
        )
    return event


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _owned_messages(messages: Any, required: bool) -> dict[str, Any]:
    """:func:`normalize_messages` for a body libchat decoded itself: an
    already normal object is kept as it is (nobody else holds it) instead of
    being rebuilt."""
    if (messages.__class__ is dict and len(messages) == 2
            and messages.get("content").__class__ is str
            and messages.get("attachments").__class__ is list):
        return messages  # type: ignore[no-any-return]
    return normalize_messages(messages, required=required)


def normalize_messages(messages: Any, *, required: bool) -> dict[str, Any]:
    """``{"content": str, "attachments": list}``; content is required upstream."""
    if not isinstance(messages, dict):
        if required:
            raise BadEvent(codes.BAD_REQUEST, "messages must be an object with content")
        messages = {}
    content = messages.get("content")
    if not isinstance(content, str):
        if required:
            raise BadEvent(codes.BAD_REQUEST, "messages.content must be a string")
        content = "" if content is None else str(content)
    attachments = messages.get("attachments")
    if attachments is None:
        attachments = []
    if not isinstance(attachments, list):
        raise BadEvent(codes.BAD_REQUEST, "messages.attachments must be a list")
    return {"content": content, "attachments": attachments}


def check_upstream(event: dict[str, Any], *, owned: bool = False) -> dict[str, Any]:
    """Validate a decoded upstream event (1001/1002) and fill defaults.

    Returns a new dict holding only the fields libchat forwards, so a front
    service cannot smuggle fields through to a program. ``owned``: the event
    was decoded here and nobody else holds it, so its parts may be reused.
    """
    etype = event["event_type"]
    dialog_id = event.get("dialog_id")
    message_id = event.get("message_id")
    ctx_dialog = _str(dialog_id) if valid_dialog_id(dialog_id) else None
    ctx_message = _str(message_id)
    if etype not in UPSTREAM_TYPES:
        raise BadEvent(
            codes.UNKNOWN_EVENT,
            f"event_type {etype} is not accepted from upstream",
            ctx_dialog,
            ctx_message,
        )
    if not valid_dialog_id(dialog_id):
        raise BadEvent(codes.BAD_REQUEST, "dialog_id is missing or invalid", None, ctx_message)
    user_id = event.get("user_id")
    if not isinstance(user_id, str) or not 1 <= len(user_id) <= MAX_USER_ID:
        raise BadEvent(codes.BAD_REQUEST, "user_id must be 1..256 characters",
                       ctx_dialog, ctx_message)
    out: dict[str, Any] = {"event_type": etype, "dialog_id": dialog_id, "user_id": user_id}
    if etype == codes.CLIENT_CLOSE:
        return out
    if message_id is None:
        message_id = new_message_id()
    elif not isinstance(message_id, str) or not 1 <= len(message_id) <= MAX_MESSAGE_ID:
        raise BadEvent(codes.BAD_REQUEST, "message_id must be a string of 1..256 characters",
                       ctx_dialog)
    out["message_id"] = message_id
    try:
        out["messages"] = (_owned_messages(event.get("messages"), True) if owned
                           else normalize_messages(event.get("messages"), required=True))
    except BadEvent as e:
        e.dialog_id, e.message_id = ctx_dialog, message_id
        raise
    intent = event.get("intent")
    if intent is not None:
        if not valid_intent(intent):
            raise BadEvent(codes.BAD_REQUEST, "intent must match ^[a-z0-9][a-z0-9_-]{0,63}$",
                           ctx_dialog, message_id)
        out["intent"] = intent
    return out


def parse_upstream(header_type: int | None, body: bytes | str) -> dict[str, Any]:
    """Decode and validate one upstream body; raises :class:`BadEvent`."""
    event = decode_body(header_type, body)
    plain = _plain_message(event)
    return plain if plain is not None else check_upstream(event, owned=True)


def _plain_message(event: dict[str, Any]) -> dict[str, Any] | None:
    """The common 1001 (a dialog id seen before, no intent, normal messages)
    checked in one pass; None sends it through :func:`check_upstream`, which
    gives the same result for it and words every error."""
    if event["event_type"] != codes.USER_MESSAGE or "intent" in event:
        return None
    dialog_id = event.get("dialog_id")
    user_id = event.get("user_id")
    message_id = event.get("message_id")
    messages = event.get("messages")
    if (dialog_id.__class__ is str and dialog_id in _VALID_IDS
            and user_id.__class__ is str and 0 < len(user_id) <= MAX_USER_ID
            and message_id.__class__ is str and 0 < len(message_id) <= MAX_MESSAGE_ID
            and messages.__class__ is dict and len(messages) == 2
            and messages.get("content").__class__ is str
            and messages.get("attachments").__class__ is list):
        return {"event_type": codes.USER_MESSAGE, "dialog_id": dialog_id, "user_id": user_id,
                "message_id": message_id, "messages": messages}
    return None


def parse_program(header_type: int, body: bytes) -> dict[str, Any]:
    """Decode one program body. Only ``event_type`` is required of programs:
    libchat overwrites ``dialog_id``/``user_id`` with the dialog's own anyway."""
    event = decode_body(header_type, body)
    if event["event_type"] not in PROGRAM_TYPES:
        raise BadEvent(
            codes.UNKNOWN_EVENT, f"event_type {event['event_type']} is not accepted from a program"
        )
    if event["event_type"] in (codes.REPLY, codes.UNSUPPORTED):
        if "messages" in event:
            event["messages"] = _owned_messages(event["messages"], False)
        mid = event.get("message_id")
        if mid is not None and not isinstance(mid, str):
            raise BadEvent(codes.BAD_REQUEST, "message_id must be a string")
    if event["event_type"] == codes.REPLY and "messages" not in event:
        raise BadEvent(codes.BAD_REQUEST, "a 2001 needs messages.content")
    return event
