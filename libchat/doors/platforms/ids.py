"""Dialog and user ids for platform dialogs (CONTRACT section 10).

WeCom: dialog ``wecom:NAME:<FromUserName>``, user ``wecom:<corp_id>:<FromUserName>``.
Lark: p2p dialog ``lark:NAME:<open_id>``, group dialog
``lark:NAME:<chat_id>:<open_id>``, user ``lark:<open_id>``.

A part that does not fit section 3's pattern becomes ``h`` + the first 32 hex
digits of its sha1. Parts are joined with ``:``, so a part may not contain one
(else two different senders could share a dialog); a part longer than 64
characters is hashed as well, and if the joined id is still over section 3's
128 characters the longest remaining parts are hashed until it fits. The
mapping is deterministic: the same platform ids always give the same dialog.
"""

from __future__ import annotations

import hashlib
import re

PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
MAX_DIALOG_ID = 128
MAX_USER_ID = 256


def hashed(part: str) -> str:
    """``h`` + the first 32 hex digits of the part's sha1."""
    return "h" + hashlib.sha1(part.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def safe_part(part: str) -> str:
    """``part`` itself when it fits, else its hash."""
    return part if PART.fullmatch(part) else hashed(part)


def join_id(prefix: str, *parts: str, limit: int = MAX_DIALOG_ID) -> str:
    """``prefix:part:part...`` with each part made safe, at most ``limit`` long."""
    safe = [safe_part(p) for p in parts]
    while len(":".join([prefix, *safe])) > limit:
        candidates = [i for i, p in enumerate(safe) if p != hashed(parts[i])]
        if not candidates:  # pragma: no cover - 3 hashed parts always fit
            raise ValueError("id parts cannot fit")
        longest = max(candidates, key=lambda i: len(safe[i]))
        safe[longest] = hashed(parts[longest])
    return ":".join([prefix, *safe])


def wecom_dialog(app: str, from_user: str) -> str:
    return join_id("wecom", app, from_user)


def wecom_user(corp_id: str, from_user: str) -> str:
    return join_id("wecom", corp_id, from_user, limit=MAX_USER_ID)


def lark_dialog(app: str, open_id: str, chat_id: str | None = None) -> str:
    """p2p when ``chat_id`` is None, else the group form."""
    if chat_id is None:
        return join_id("lark", app, open_id)
    return join_id("lark", app, chat_id, open_id)


def lark_user(open_id: str) -> str:
    return join_id("lark", open_id, limit=MAX_USER_ID)
