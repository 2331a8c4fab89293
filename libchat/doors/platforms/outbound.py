"""Outbound request bodies and how to treat each answer (CONTRACT section 10).

Pure builders for WeCom ``message/send`` and Lark ``im/v1/messages`` bodies,
the classification of every answer into what the sender does next, and the
retry back-off. The sender (treq, the outbox) is wired elsewhere; everything
here is data in, data out.

Answers: ``OK``; ``REFRESH_TOKEN`` (WeCom errcode 40001/40014/42001, Lark
code 99991661/99991663: refetch the token, then retry the send once);
``RETRY`` (network error, HTTP 5xx, WeCom -1/45009, Lark HTTP 429 or code
99991400: back off and retry, for up to 10 minutes); ``PERMANENT`` (any other
errcode/code: log, count, never retry).
"""

from __future__ import annotations

import json
from typing import Any

OK = "ok"
REFRESH_TOKEN = "refresh_token"
RETRY = "retry"
PERMANENT = "permanent"

WECOM_TOKEN_CODES = frozenset({40001, 40014, 42001})
WECOM_RETRY_CODES = frozenset({-1, 45009})
LARK_TOKEN_CODES = frozenset({99991661, 99991663})
LARK_RETRY_CODES = frozenset({99991400})

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
RETRY_FOR = 600.0


def backoff(attempt: int) -> float:
    """Seconds to wait before retry number ``attempt`` (1, 2, 4, ... 60, 60)."""
    return min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** max(0, attempt - 1))


def give_up(first_failure_at: float, now: float) -> bool:
    """Whether a send failing since ``first_failure_at`` has run out of time."""
    return now - first_failure_at >= RETRY_FOR


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def wecom_outcome(status: int | None, body: bytes = b"") -> str:
    """``status`` None means the request never got an answer (network error)."""
    if status is None or status >= 500:
        return RETRY
    parsed = _json(body)
    code = parsed.get("errcode") if isinstance(parsed, dict) else None
    if not isinstance(code, int) or isinstance(code, bool):
        return RETRY if status == 429 else PERMANENT
    if code == 0:
        return OK
    if code in WECOM_TOKEN_CODES:
        return REFRESH_TOKEN
    return RETRY if code in WECOM_RETRY_CODES else PERMANENT


def lark_outcome(status: int | None, body: bytes = b"") -> str:
    if status is None or status >= 500 or status == 429:
        return RETRY
    parsed = _json(body)
    code = parsed.get("code") if isinstance(parsed, dict) else None
    if not isinstance(code, int) or isinstance(code, bool):
        return PERMANENT
    if code == 0:
        return OK
    if code in LARK_TOKEN_CODES:
        return REFRESH_TOKEN
    return RETRY if code in LARK_RETRY_CODES else PERMANENT


# -- WeCom -------------------------------------------------------------------

def wecom_text(touser: str, agent_id: int, content: str, markdown: bool = False) -> dict[str, Any]:
    kind = "markdown" if markdown else "text"
    return {"touser": touser, "msgtype": kind, "agentid": agent_id, kind: {"content": content}}


def wecom_media(touser: str, agent_id: int, kind: str, media_id: str) -> dict[str, Any]:
    """An ``image`` or ``file`` message of an uploaded ``media_id``."""
    if kind not in ("image", "file", "voice", "video"):
        raise ValueError(f"no WeCom media message of type {kind!r}")
    return {"touser": touser, "msgtype": kind, "agentid": agent_id, kind: {"media_id": media_id}}


# -- Lark --------------------------------------------------------------------

def lark_mention(open_id: str) -> str:
    """The ``<at>`` a group reply starts with (the sender, by open_id)."""
    safe = open_id.replace('"', "").replace("<", "").replace(">", "")
    return f'<at user_id="{safe}"></at>'


def lark_text(chat_id: str, text: str, uuid: str, mention: str | None = None) -> dict[str, Any]:
    if mention:
        text = lark_mention(mention) + " " + text
    return {"receive_id": chat_id, "msg_type": "text",
            "content": json.dumps({"text": text}, ensure_ascii=False), "uuid": uuid}


def lark_post_md(chat_id: str, markdown: str, uuid: str, mention: str | None = None) -> dict[str, Any]:
    """A ``post`` holding one ``md`` element (a 2001 with format markdown)."""
    if mention:
        markdown = f"<at id={mention}></at> " + markdown
    post = {"zh_cn": {"title": "", "content": [[{"tag": "md", "text": markdown}]]}}
    return {"receive_id": chat_id, "msg_type": "post",
            "content": json.dumps(post, ensure_ascii=False), "uuid": uuid}


def lark_image(chat_id: str, image_key: str, uuid: str) -> dict[str, Any]:
    return {"receive_id": chat_id, "msg_type": "image",
            "content": json.dumps({"image_key": image_key}), "uuid": uuid}


def lark_file(chat_id: str, file_key: str, uuid: str) -> dict[str, Any]:
    return {"receive_id": chat_id, "msg_type": "file",
            "content": json.dumps({"file_key": file_key}), "uuid": uuid}


LARK_FILE_TYPES = {"opus": "opus", "mp4": "mp4", "pdf": "pdf", "doc": "doc", "docx": "doc",
                   "xls": "xls", "xlsx": "xls", "ppt": "ppt", "pptx": "ppt"}


def lark_file_type(file_name: str) -> str:
    """``file_type`` for ``/open-apis/im/v1/files`` from a name (else ``stream``)."""
    ext = file_name.rsplit(".", 1)[-1].lower() if "." in file_name else ""
    return LARK_FILE_TYPES.get(ext, "stream")
