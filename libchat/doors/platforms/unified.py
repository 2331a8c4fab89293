"""The unified inbound message: what a platform callback becomes in libchat.

An :class:`Inbound` is the section 10 mapping of one platform message: its
dialog and user ids, the 1001 ``messages`` body, the key retries are
deduplicated by, and where a reply goes (``reply_to``). It is plain data; the
callback endpoint turns it into a 1001 with :meth:`Inbound.event`.
"""

from __future__ import annotations

from typing import Any

import attrs

WECOM = "wecom"
LARK = "lark"


@attrs.frozen
class ReplyTarget:
    """Where the replies of a dialog are sent.

    WeCom: ``to`` is the user's ``FromUserName`` (``touser``). Lark: ``to`` is
    the ``chat_id`` (``receive_id_type=chat_id``), ``mention`` the sender's
    open_id in group chats (a reply there starts with an ``<at>`` of it).
    """

    to: str
    mention: str | None = None
    mention_name: str | None = None


@attrs.frozen
class Inbound:
    platform: str  # "wecom" or "lark": the dialog's channel
    app: str  # the configured app NAME
    dialog_id: str
    user_id: str
    message_id: str
    dedupe_key: str  # MsgId / FromUserName+CreateTime / header.event_id / uuid
    content: str
    attachments: tuple[dict[str, Any], ...] = ()
    reply_to: ReplyTarget | None = None
    msg_type: str = "text"

    def messages(self) -> dict[str, Any]:
        return {"content": self.content, "attachments": [dict(a) for a in self.attachments]}

    def event(self, intent: str | None = None) -> dict[str, Any]:
        """The 1001 for the router (``intent`` from the app's config)."""
        event: dict[str, Any] = {"event_type": 1001, "dialog_id": self.dialog_id,
                                 "user_id": self.user_id, "message_id": self.message_id,
                                 "messages": self.messages()}
        if intent is not None:
            event["intent"] = intent
        return event
