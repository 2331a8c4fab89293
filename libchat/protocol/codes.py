"""Event types, error codes and end reasons of docs/protocol.md §2."""

from __future__ import annotations

from typing import Any

USER_MESSAGE = 1001
CLIENT_CLOSE = 1002
REPLAY = 1003
REPLY = 2001
ENDED = 2002
UNSUPPORTED = 2003
ERROR = 2004
MEMORY = 3000

BAD_FRAME = "BAD_FRAME"
MSG_TOO_LARGE = "MSG_TOO_LARGE"
BAD_REQUEST = "BAD_REQUEST"
UNKNOWN_EVENT = "UNKNOWN_EVENT"
BUSY = "BUSY"
INTERNAL_ERROR = "INTERNAL_ERROR"
RATE_LIMIT = "RATE_LIMIT"

# reasons of a 2002
COMPLETED = "completed"
IDLE_TIMEOUT = "idle_timeout"
PROGRAM_EXITED = "program_exited"
PROGRAM_FAILED = "program_failed"
CLIENT_CLOSED = "client_closed"


def error(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """A 2004 event; ``extra`` adds ``dialog_id``/``message_id`` when known."""
    event: dict[str, Any] = {"event_type": ERROR, "code": code, "message": message}
    event.update({k: v for k, v in extra.items() if v is not None})
    return event
