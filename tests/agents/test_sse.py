"""The incremental SSE parser (libchat.runtimes.agents.sse)."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from libchat.runtimes.agents.sse import SSEError, SSEParser


def parse(chunks: list[bytes], **kw: int) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    p = SSEParser(lambda e, d: out.append((e, d)), **kw)
    for c in chunks:
        p.feed(c)
    p.close()
    return out


DIFY = (b'event: ping\n\n'
        b'data: {"event": "message", "answer": "Hel"}\n\n'
        b': a comment\n'
        b'data: {"event": "message", "answer": "lo"}\n\n'
        b'data: {"event": "message_end"}\n\n')
DIFY_EVENTS = [("message", '{"event": "message", "answer": "Hel"}'),
               ("message", '{"event": "message", "answer": "lo"}'),
               ("message", '{"event": "message_end"}')]
COZE = (b'event:conversation.chat.created\ndata:{"id":"1"}\n\n'
        b'event:conversation.message.delta\r\ndata:{"content":"a"}\r\n\r\n'
        b'event:done\rdata:"[DONE]"\r\r')
COZE_EVENTS = [("conversation.chat.created", '{"id":"1"}'),
               ("conversation.message.delta", '{"content":"a"}'),
               ("done", '"[DONE]"')]


def test_lf_events_and_comments_and_ping_without_data() -> None:
    # "event: ping" has no data: dropped, as browsers do; the comment is skipped
    assert parse([DIFY]) == DIFY_EVENTS


def test_crlf_and_cr_line_ends() -> None:
    assert parse([COZE]) == COZE_EVENTS


def test_multi_line_data_joined_with_lf() -> None:
    assert parse([b"data: one\ndata:two\ndata\n\n"]) == [("message", "one\ntwo\n")]


def test_id_retry_and_unknown_fields_ignored() -> None:
    assert parse([b"id: 7\nretry: 10\nfoo: bar\ndata: x\n\n"]) == [("message", "x")]


def test_only_one_leading_space_stripped() -> None:
    assert parse([b"data:  two\n\n"]) == [("message", " two")]


def test_event_name_resets_after_dispatch() -> None:
    assert parse([b"event: a\ndata: 1\n\ndata: 2\n\n"]) == [("a", "1"), ("message", "2")]


def test_unfinished_event_at_close_is_dropped() -> None:
    assert parse([b"data: 1\n\ndata: 2\n"]) == [("message", "1")]


def test_bom_stripped_even_split() -> None:
    assert parse([b"\xef", b"\xbb", b"\xbfdata: a\n\n"]) == [("message", "a")]


@pytest.mark.parametrize("stream,events", [(DIFY, DIFY_EVENTS), (COZE, COZE_EVENTS)])
def test_byte_by_byte(stream: bytes, events: list[tuple[str, str]]) -> None:
    assert parse([stream[i:i + 1] for i in range(len(stream))]) == events


@given(st.sampled_from([(DIFY, DIFY_EVENTS), (COZE, COZE_EVENTS)]),
       st.lists(st.integers(min_value=0, max_value=400), max_size=30))
def test_chunks_split_anywhere(case: tuple[bytes, list[tuple[str, str]]],
                               cuts: list[int]) -> None:
    stream, events = case
    points = sorted({c % (len(stream) + 1) for c in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)])]
    assert parse(chunks) == events


@given(st.lists(st.tuples(st.text(alphabet=st.characters(blacklist_characters="\r\n:",
                                                         blacklist_categories=("Cs",)),
                                   min_size=1, max_size=5),
                          st.text(alphabet=st.characters(blacklist_characters="\r\n",
                                                         blacklist_categories=("Cs",)),
                                  max_size=20)), max_size=5),
       st.sampled_from([b"\n", b"\r\n", b"\r"]), st.integers(min_value=1, max_value=7))
def test_generated_events_any_line_end_any_chunking(
        pairs: list[tuple[str, str]], eol: bytes, size: int) -> None:
    stream = b"".join(b"event: " + e.encode() + eol + b"data: " + d.encode() + eol + eol
                      for e, d in pairs)
    chunks = [stream[i:i + size] for i in range(0, len(stream), size)]
    assert parse(chunks) == pairs


def test_over_long_line_raises_and_keeps_memory_bounded() -> None:
    p = SSEParser(lambda e, d: None, max_line=1024)
    p.feed(b"data: " + b"x" * 1000)
    with pytest.raises(SSEError):
        p.feed(b"x" * 100)
    assert len(p._line) == 0


def test_one_mebibyte_line_by_default() -> None:
    p = SSEParser(lambda e, d: None)
    chunk = b"y" * 65536
    with pytest.raises(SSEError):
        for _ in range(17):
            p.feed(chunk)


def test_over_long_event_data_raises() -> None:
    p = SSEParser(lambda e, d: None, max_line=100)
    with pytest.raises(SSEError):
        for _ in range(5):
            p.feed(b"data: " + b"z" * 40 + b"\n")


def test_feed_after_close_raises() -> None:
    p = SSEParser(lambda e, d: None)
    p.close()
    with pytest.raises(SSEError):
        p.feed(b"data: x\n\n")
