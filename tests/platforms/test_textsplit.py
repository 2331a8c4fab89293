"""SplitLongText by bytes (WeCom 2048 bytes of UTF-8; Lark 150 KB / 30 KB of
request body) and MergeMessages."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from libchat.doors.platforms.textsplit import (
    LARK_POST_BODY, LARK_TEXT_BODY, WECOM_TEXT_BYTES, lark_cost, merge_messages, split_lark,
    split_text, split_wecom, utf8_cost, _glued, CJK_ENDS, CLOSERS)


def nbytes(s: str) -> int:
    return len(s.encode("utf-8"))


def test_5000_byte_cjk_reply_splits_into_parts_under_2048_bytes() -> None:
    text = ("今天天气很好，我们去公园散步吧" * 120)[:1667]  # 5001 bytes, no sentence end
    assert nbytes(text) > 5000
    parts = split_wecom(text)
    assert "".join(parts) == text
    assert all(nbytes(p) <= WECOM_TEXT_BYTES for p in parts)
    assert len(parts) == 3
    assert nbytes(parts[0]) == 2046  # 682 whole characters: the 683rd would cross 2048


def test_text_under_the_limit_is_one_part_and_empty_text_has_none() -> None:
    assert split_wecom("hello") == ["hello"]
    assert split_wecom("") == []


def test_cut_at_a_line_break_in_the_last_quarter() -> None:
    text = "a" * 1800 + "\n" + "b" * 1000
    parts = split_wecom(text)
    assert parts[0] == "a" * 1800 + "\n"


def test_line_break_before_the_last_quarter_is_not_used() -> None:
    text = "a" * 1000 + "\n" + "b" * 3000
    parts = split_wecom(text)
    assert nbytes(parts[0]) == 2048 and parts[0].count("\n") == 1


def test_cut_after_a_cjk_sentence_end() -> None:
    text = "字" * 600 + "。" + "字" * 600
    parts = split_wecom(text)
    assert parts[0] == "字" * 600 + "。"


def test_ascii_sentence_end_counts_only_before_whitespace() -> None:
    text = "x" * 1700 + ". " + "y" * 100 + "3.14" + "z" * 1000
    parts = split_wecom(text)
    assert parts[0] == "x" * 1700 + ". "


def test_closing_quote_stays_with_its_sentence() -> None:
    text = "字" * 600 + "。”" + "字" * 600
    assert split_wecom(text)[0] == "字" * 600 + "。”"


def test_line_break_is_preferred_to_a_later_sentence_end() -> None:
    text = "a" * 1700 + "\n" + "b" * 100 + "! " + "c" * 1000
    assert split_wecom(text)[0] == "a" * 1700 + "\n"


def test_never_cut_before_a_combining_mark() -> None:
    text = "a" * 2047 + "e\u0301" + "b" * 10
    parts = split_wecom(text)
    assert "".join(parts) == text
    assert not parts[1].startswith("\u0301")


def test_four_byte_characters_are_never_split() -> None:
    text = "😀" * 1000
    parts = split_wecom(text)
    assert all(nbytes(p) <= 2048 and nbytes(p) % 4 == 0 for p in parts)
    assert "".join(parts) == text


def test_a_limit_below_one_character_is_an_error() -> None:
    with pytest.raises(ValueError):
        split_text("中", 2)


def test_lark_cost_is_the_body_growth_either_way_the_sender_encodes() -> None:
    for ch in ['"', "\\", "中", "\n", "a", "😀"]:
        for ascii_only in (True, False):
            inner = json.dumps({"text": ch}, ensure_ascii=ascii_only)
            empty = json.dumps({"text": ""}, ensure_ascii=ascii_only)
            body = json.dumps({"content": inner}, ensure_ascii=ascii_only)
            base = json.dumps({"content": empty}, ensure_ascii=ascii_only)
            assert len(body.encode()) - len(base.encode()) <= lark_cost(ch)


def test_lark_text_parts_fit_150_kb_bodies() -> None:
    text = '中"\\' * 60000
    parts = split_lark(text)
    assert "".join(parts) == text and len(parts) > 1
    for p in parts:
        body = json.dumps({"receive_id": "oc_" + "x" * 32, "msg_type": "text", "uuid": "u" * 36,
                           "content": json.dumps({"text": '<at user_id="ou_' + "y" * 32 + '"></at> ' + p})})
        assert len(body.encode()) <= LARK_TEXT_BODY


def test_lark_post_parts_fit_30_kb_bodies() -> None:
    text = "段落内容。\n" * 8000
    parts = split_lark(text, post=True)
    for p in parts:
        content = {"zh_cn": {"title": "", "content": [[{"tag": "md", "text": p}]]}}
        body = json.dumps({"receive_id": "oc_x", "msg_type": "post", "uuid": "u" * 36,
                           "content": json.dumps(content, ensure_ascii=False)}, ensure_ascii=False)
        assert len(body.encode()) <= LARK_POST_BODY


def test_merge_messages_joins_with_a_blank_line() -> None:
    assert merge_messages(["one", "", "two"]) == "one\n\ntwo"
    assert merge_messages([]) == ""


texts = st.text(alphabet=st.sampled_from(list("ab 中文。！？.!?\n\"'”") + ["😀", "\u0301", "\u200d"]),
                max_size=6000)


@settings(max_examples=150, deadline=None)
@given(texts, st.integers(min_value=8, max_value=3000))
def test_parts_concatenate_back_and_fit(text: str, limit: int) -> None:
    parts = split_text(text, limit)
    assert "".join(parts) == text
    assert all(p and nbytes(p) <= limit for p in parts)


@settings(max_examples=100, deadline=None)
@given(texts, st.integers(min_value=40, max_value=3000))
def test_each_cut_is_as_late_as_the_rule_allows(text: str, limit: int) -> None:
    """Every part but the last is either all that fits, or shorter only to keep
    a combining mark/joiner with its character, or ends at a break in the last
    quarter of what fits."""
    parts = split_text(text, limit)
    for i, p in enumerate(parts[:-1]):
        rest = "".join(parts[i:])
        fit, used = 0, 0
        for ch in rest:
            if used + utf8_cost(ch) > limit:
                break
            used += utf8_cost(ch)
            fit += 1
        cut = fit  # all that fits, less a trailing character a mark or joiner clings to
        while cut > 1 and _glued(rest[cut]):
            cut -= 1
        at_break = p[-1] in "\n" or p[-1] in CJK_ENDS or p[-1] in CLOSERS or p[-1].isspace()
        assert len(p) == cut or (at_break and nbytes(p) >= used * 3 / 4), (p, parts[i + 1])


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=3000))
def test_lark_split_round_trips_any_text(text: str) -> None:
    assert "".join(split_lark(text, post=True)) == text
