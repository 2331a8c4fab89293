"""SplitLongText and MergeMessages (seed 001's converter), done by bytes.

WeCom counts a text message's ``content`` in **bytes** of UTF-8 (2048; 4096
for markdown), not characters as the seed says. Lark limits the *request
body*: 150 KB for a text message, 30 KB for a post; its ``content`` is a JSON
string inside the JSON body, so each character costs what it costs after
being JSON-escaped twice (computed for both ``ensure_ascii`` settings, the
larger taken, so a part fits however the sender encodes), and a fixed
reserve covers the rest of the body (receive_id, uuid, the ``<at>`` mention).

:func:`split_text` never cuts inside a character (nor before a combining mark
or joiner), and when a line break -- else a sentence end -- lies in the last
quarter of a part, the part ends right after it. The parts always concatenate
back to the text exactly; an empty text has no parts.
"""

from __future__ import annotations

import functools
import json
import unicodedata
from collections.abc import Callable, Iterable

WECOM_TEXT_BYTES = 2048
WECOM_MARKDOWN_BYTES = 4096
LARK_TEXT_BODY = 150 * 1024
LARK_POST_BODY = 30 * 1024
LARK_BODY_RESERVE = 2048

CJK_ENDS = frozenset("。！？…；")
ASCII_ENDS = frozenset(".!?;")
CLOSERS = frozenset("\"'”’」』）)]】》")
JOINERS = frozenset("\u200c\u200d\ufe0e\ufe0f")


def utf8_cost(ch: str) -> int:
    return len(ch.encode("utf-8", "surrogatepass"))


@functools.lru_cache(maxsize=4096)
def lark_cost(ch: str) -> int:
    """Bytes one character adds to a Lark body whose ``content`` embeds it."""
    costs = []
    for ascii_only in (True, False):
        inner = json.dumps(ch, ensure_ascii=ascii_only)[1:-1]
        outer = json.dumps(inner, ensure_ascii=ascii_only)[1:-1]
        costs.append(len(outer.encode("utf-8", "surrogatepass")))
    return max(costs)


def _glued(ch: str) -> bool:
    """A character that belongs to the one before it (never cut before it)."""
    return ch in JOINERS or unicodedata.combining(ch) != 0 or "\U000e0020" <= ch <= "\U000e007f"


def _sentence_end(text: str, p: int, start: int) -> bool:
    """Whether a sentence ends right before position ``p``."""
    prev = text[p - 1]
    if prev in CJK_ENDS:
        return True
    i = p - 1
    if prev.isspace():  # "end. " -- ASCII ends count only before whitespace
        i -= 1
        return i >= start and (text[i] in ASCII_ENDS or (text[i] in CLOSERS and i - 1 >= start
                                                         and text[i - 1] in ASCII_ENDS | CJK_ENDS))
    if prev in CLOSERS and i - 1 >= start and text[i - 1] in CJK_ENDS:
        return True
    return False


def _best_cut(text: str, costs: list[int], start: int, end: int, used: int) -> int:
    threshold = used * 3 / 4
    for wanted in (lambda p: text[p - 1] == "\n", lambda p: _sentence_end(text, p, start)):
        p, c = end, used
        while p > start and c >= threshold:
            if (p == len(text) or not _glued(text[p])) and wanted(p):
                return p
            c -= costs[p - 1]
            p -= 1
    cut = end
    while cut > start + 1 and _glued(text[cut]):
        cut -= 1
    return cut


def split_text(text: str, limit: int, cost: Callable[[str], int] = utf8_cost) -> list[str]:
    """Parts of ``text`` each costing at most ``limit`` (see the module docstring)."""
    costs = [cost(ch) for ch in text]
    parts: list[str] = []
    start, n = 0, len(text)
    while start < n:
        used, end = 0, start
        while end < n and used + costs[end] <= limit:
            used += costs[end]
            end += 1
        if end == start:
            raise ValueError(f"one character costs {costs[start]}, over the limit {limit}")
        if end < n:
            end = _best_cut(text, costs, start, end, used)
        parts.append(text[start:end])
        start = end
    return parts


def split_wecom(text: str, markdown: bool = False) -> list[str]:
    return split_text(text, WECOM_MARKDOWN_BYTES if markdown else WECOM_TEXT_BYTES)


def split_lark(text: str, post: bool = False) -> list[str]:
    body = LARK_POST_BODY if post else LARK_TEXT_BODY
    return split_text(text, body - LARK_BODY_RESERVE, lark_cost)


def merge_messages(texts: Iterable[str]) -> str:
    """2001s that waited for the dialog's send in flight, as one text (joined
    with a blank line; empty ones left out)."""
    return "\n\n".join(t for t in texts if t)
