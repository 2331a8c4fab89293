"""The Coze v3 client (libchat/runtimes/agents/coze.py): the stream consumer
on recorded event sequences, and the client against the fake Coze server on a
real loopback port (tests/agents/fake_coze.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, task
from zope.interface.verify import verifyObject

from libchat.runtimes.agents.client import (AGENT_ERROR, HTTP_ERROR, PROTOCOL, TIMEOUT, AgentError,
                                            AgentTurn, IAgentClient)
from libchat.runtimes.agents.coze import ChatStream, CozeClient, answer_parts
from libchat.runtimes.agents.sse import SSEParser
from tests.agents.fake_coze import STALL, FakeCoze, Pause

KEY = "pat_SECRET_do_not_leak"


def _reactor() -> Any:
    from twisted.internet import reactor
    return reactor


def recorded(fake: FakeCoze, reply: str = "Hello there!") -> list[tuple[str, str]]:
    """The standard streamed sequence as (event, data) text pairs."""
    fake.reply = reply
    chat = fake.chat("7400000000000000002", "7400000000000000003", "created")
    return [(name, data if isinstance(data, str) else json.dumps(data))
            for name, data in fake.standard_stream(chat)]


def sse_bytes(pairs: list[tuple[str, str]]) -> bytes:
    return b"".join(f"event:{n}\ndata:{d}\n\n".encode() for n, d in pairs)


def consume(pairs: list[tuple[str, str]]) -> tuple[Any, list[tuple[str, str | None]]]:
    tasks: list[tuple[str, str | None]] = []
    chat = ChatStream(lambda t, c: tasks.append((t, c)))
    for name, data in pairs:
        chat.event(name, data)
    return chat.answer(), tasks


# -- the stream consumer, on recorded sequences

def test_stream_consumer_merges_the_standard_sequence_and_names_the_task() -> None:
    answer, tasks = consume(recorded(FakeCoze(None, task.Clock())))
    assert answer.content == "Hello there!"
    assert answer.conversation_id == "7400000000000000003"
    assert tasks == [("7400000000000000002", "7400000000000000003")]


@pytest.mark.parametrize("step", [1, 7, 4096])
def test_stream_bytes_split_anywhere_give_the_same_answer(step: int) -> None:
    data = sse_bytes(recorded(FakeCoze(None, task.Clock())))
    chat = ChatStream(lambda t, c: None)
    parser = SSEParser(chat.event)
    for i in range(0, len(data), step):
        parser.feed(data[i:i + step])
    parser.close()
    assert chat.done and chat.answer().content == "Hello there!"


def test_completed_message_wins_over_its_deltas() -> None:
    fake = FakeCoze(None, task.Clock())
    pairs = [(n, d) for n, d in recorded(fake) if n != "conversation.message.completed"]
    chat = json.loads(pairs[0][1])
    answer = fake.message(chat, "answer", "Hello there!", message_id="m1")
    pairs = pairs[:2] + [("conversation.message.delta", json.dumps({**answer, "content": "Hel"})),
                         ("conversation.message.delta", json.dumps({**answer, "content": "p!"})),
                         ("conversation.message.completed",
                          json.dumps({**answer, "content": "The real answer"}))] + pairs[-2:]
    assert consume(pairs)[0].content == "The real answer"


def test_deltas_are_joined_when_no_message_completes() -> None:
    pairs = [(n, d) for n, d in recorded(FakeCoze(None, task.Clock()), "abcdefghi")
             if n != "conversation.message.completed"]
    assert consume(pairs)[0].content == "abcdefghi"


def test_non_answer_message_types_are_hidden() -> None:
    fake = FakeCoze(None, task.Clock())
    pairs = recorded(fake)
    chat = json.loads(pairs[0][1])
    extra = [("conversation.message.completed", json.dumps(fake.message(chat, kind, "HIDDEN")))
             for kind in ("function_call", "tool_output", "tool_response", "verbose", "follow_up")]
    answer, _ = consume(pairs[:2] + extra + pairs[2:])
    assert "HIDDEN" not in answer.content and "Anything else" not in answer.content
    assert answer.content == "Hello there!"


def test_failed_chat_raises_with_last_error() -> None:
    fake = FakeCoze(None, task.Clock())
    fake.last_error = {"code": 5000, "msg": "model overloaded"}
    pairs = recorded(fake)[:2] + [("conversation.chat.failed", json.dumps(
        fake.chat("7400000000000000002", "7400000000000000003", "failed")))]
    with pytest.raises(AgentError) as caught:
        consume(pairs)
    assert caught.value.reason == AGENT_ERROR and "model overloaded" in caught.value.detail
    assert not caught.value.retryable


def test_error_event_raises() -> None:
    pairs = recorded(FakeCoze(None, task.Clock()))[:2] + [
        ("error", json.dumps({"code": 4000, "msg": "bad request parameter"}))]
    with pytest.raises(AgentError) as caught:
        consume(pairs)
    assert caught.value.reason == AGENT_ERROR and "bad request parameter" in caught.value.detail


def test_a_stream_without_completion_is_a_protocol_error() -> None:
    with pytest.raises(AgentError) as caught:
        consume(recorded(FakeCoze(None, task.Clock()))[:4])
    assert caught.value.reason == PROTOCOL


def test_bad_json_in_an_event_is_a_protocol_error() -> None:
    with pytest.raises(AgentError) as caught:
        consume([("conversation.chat.created", "{not json")])
    assert caught.value.reason == PROTOCOL


def test_object_string_answer_gives_text_and_attachments() -> None:
    content = json.dumps([{"type": "text", "text": "Here is the chart"},
                          {"type": "image", "file_url": "https://cdn.example/c.png", "file_id": "f1"},
                          {"type": "file", "file_url": "https://cdn.example/r.pdf", "name": "r.pdf"},
                          {"type": "image", "file_id": "no-url"}])
    text, attachments = answer_parts({"type": "answer", "content_type": "object_string",
                                      "content": content})
    assert text == "Here is the chart"
    assert attachments == [
        {"type": "image", "option": {"url": "https://cdn.example/c.png"}, "file_id": "f1"},
        {"type": "file", "option": {"url": "https://cdn.example/r.pdf"}, "name": "r.pdf"}]


def test_markdown_image_link_becomes_an_attachment_and_card_is_not_shown() -> None:
    text, attachments = answer_parts({"content_type": "text",
                                      "content": "A cat: ![cat](https://img.example/cat.jpg)"})
    assert text.startswith("A cat:")
    assert attachments == [{"type": "image", "option": {"url": "https://img.example/cat.jpg"}}]
    assert answer_parts({"content_type": "card", "content": '{"card_type":3}'}) == ("", [])


# -- the client against the fake on loopback

@pytest.fixture
def fake() -> Any:
    server = FakeCoze(_reactor())
    yield server
    pytest_twisted.blockon(defer.ensureDeferred(server.stop()))


async def client_for(fake: FakeCoze, clock: Any = None, **section: Any) -> CozeClient:
    base = await fake.start()
    return CozeClient({"runtime": "coze", "base_url": base, "bot_id": "7300000000000000001",
                       **section}, KEY, clock or _reactor())


def turn(conversation_id: str | None = None, query: str = "hi") -> AgentTurn:
    return AgentTurn(query=query, user="u-1", conversation_id=conversation_id)


async def failure_of(d: defer.Deferred[Any]) -> AgentError:
    try:
        await d
    except AgentError as e:
        assert KEY not in e.detail and KEY not in str(e)
        return e
    raise AssertionError("the turn did not fail")


def test_client_provides_the_interface() -> None:
    verifyObject(IAgentClient, CozeClient({"bot_id": "b"}, KEY, task.Clock()))
    assert KEY not in repr(CozeClient({"bot_id": "b"}, KEY, task.Clock()))


@pytest_twisted.ensureDeferred
async def test_streaming_answer_merged_and_request_shaped_as_coze_wants(fake: FakeCoze) -> None:
    client = await client_for(fake)
    tasks: list[tuple[str, str | None]] = []
    answer = await client.turn(turn(query="What's up?"), lambda t, c: tasks.append((t, c)))
    assert answer.content == "Hello there!" and answer.attachments == ()
    (create,) = fake.requests
    assert (create.method, create.path, create.args) == ("POST", "/v3/chat", {})
    assert create.headers["authorization"] == f"Bearer {KEY}"
    assert create.body == {"bot_id": "7300000000000000001", "user_id": "u-1", "stream": True,
                           "auto_save_history": True,
                           "additional_messages": [{"role": "user", "content": "What's up?",
                                                    "content_type": "text"}]}
    assert len(tasks) == 1 and tasks[0][1] == answer.conversation_id


@pytest_twisted.ensureDeferred
async def test_on_task_names_chat_and_conversation_before_the_answer(fake: FakeCoze) -> None:
    client = await client_for(fake)
    fake.stream = None
    tasks: list[tuple[str, str | None]] = []
    fake.reply = "slow"
    chat_stream: list[Any] = []
    original = fake.standard_stream

    def slow(chat: dict[str, Any]) -> list[Any]:
        chat_stream.append(chat)
        seq = original(chat)
        return seq[:2] + [Pause(0.2)] + seq[2:]

    fake.standard_stream = slow  # type: ignore[method-assign]
    d = client.turn(turn(), lambda t, c: tasks.append((t, c)))
    for _ in range(200):                      # bounded: until on_task or the answer
        if tasks or d.called:
            break
        await task.deferLater(_reactor(), 0.005, lambda: None)
    assert not d.called, "on_task came only with the answer"
    assert tasks == [(chat_stream[0]["id"], chat_stream[0]["conversation_id"])]
    assert (await d).content == "slow"


@pytest_twisted.ensureDeferred
async def test_conversation_id_is_passed_on_the_next_turn(fake: FakeCoze) -> None:
    client = await client_for(fake)
    first = await client.turn(turn(), lambda t, c: None)
    second = await client.turn(turn(first.conversation_id), lambda t, c: None)
    assert fake.requests[0].args == {}
    assert fake.requests[1].args == {"conversation_id": first.conversation_id}
    assert second.conversation_id == first.conversation_id


@pytest_twisted.ensureDeferred
async def test_failed_chat_fails_the_turn_with_last_error(fake: FakeCoze) -> None:
    client = await client_for(fake)
    fake.last_error = {"code": 5000, "msg": "the model is overloaded"}
    fake.stream = [("conversation.chat.created", fake.chat("71", "72", "created")),
                   ("conversation.chat.failed", fake.chat("71", "72", "failed")),
                   ("done", '"[DONE]"')]
    error = await failure_of(client.turn(turn(), lambda t, c: None))
    assert error.reason == AGENT_ERROR and "the model is overloaded" in error.detail
    assert not error.retryable


@pytest_twisted.ensureDeferred
async def test_error_event_fails_the_turn(fake: FakeCoze) -> None:
    client = await client_for(fake)
    fake.stream = [("conversation.chat.created", fake.chat("71", "72", "created")),
                   ("error", {"code": 4000, "msg": "invalid parameter"})]
    error = await failure_of(client.turn(turn(), lambda t, c: None))
    assert error.reason == AGENT_ERROR and "invalid parameter" in error.detail


@pytest_twisted.ensureDeferred
async def test_401_is_an_http_error_not_retried(fake: FakeCoze) -> None:
    client = await client_for(fake)
    fake.statuses = [401]
    error = await failure_of(client.turn(turn(), lambda t, c: None))
    assert (error.reason, error.status, error.retryable) == (HTTP_ERROR, 401, False)
    assert "fake says 401" in error.detail


@pytest.mark.parametrize("status", [429, 503])
@pytest_twisted.ensureDeferred
async def test_429_and_5xx_are_retryable(fake: FakeCoze, status: int) -> None:
    client = await client_for(fake)
    fake.statuses = [status]
    error = await failure_of(client.turn(turn(), lambda t, c: None))
    assert (error.reason, error.status, error.retryable) == (HTTP_ERROR, status, True)
    assert (await client.turn(turn(), lambda t, c: None)).content == "Hello there!"


@pytest_twisted.ensureDeferred
async def test_a_stalled_stream_times_out(fake: FakeCoze) -> None:
    client = await client_for(fake, timeout=0.3)
    fake.stream = [("conversation.chat.created", fake.chat("71", "72", "created")), STALL]
    started = _reactor().seconds()
    error = await failure_of(client.turn(turn(), lambda t, c: None))
    assert error.reason == TIMEOUT and "0.3 s" in error.detail
    assert _reactor().seconds() - started < 5


@pytest_twisted.ensureDeferred
async def test_a_slow_but_flowing_stream_does_not_time_out(fake: FakeCoze) -> None:
    client = await client_for(fake, timeout=0.5)
    seq = fake.standard_stream(fake.chat("71", "72", "created"))
    fake.stream = [x for item in seq for x in (item, Pause(0.1))]   # 1 s in all, 0.1 s gaps
    assert (await client.turn(turn(), lambda t, c: None)).content == "Hello there!"


@pytest_twisted.ensureDeferred
async def test_cancelling_the_turn_aborts_the_stream(fake: FakeCoze) -> None:
    client = await client_for(fake)
    fake.stream = [("conversation.chat.created", fake.chat("71", "72", "created")), STALL]
    tasks: list[Any] = []
    d = client.turn(turn(), lambda t, c: tasks.append((t, c)))
    for _ in range(400):
        if tasks:
            break
        await task.deferLater(_reactor(), 0.005, lambda: None)
    d.cancel()
    with pytest.raises(defer.CancelledError):
        await d
    assert tasks == [("71", "72")]
    for _ in range(400):                       # bounded: the server sees the hang-up
        if fake.dropped:
            break
        await task.deferLater(_reactor(), 0.005, lambda: None)
    assert fake.dropped == 1


@pytest_twisted.ensureDeferred
async def test_a_stalled_stream_is_hung_up_on_at_timeout(fake: FakeCoze) -> None:
    client = await client_for(fake, timeout=0.2)
    fake.stream = [("conversation.chat.created", fake.chat("71", "72", "created")), STALL]
    await failure_of(client.turn(turn(), lambda t, c: None))
    for _ in range(400):
        if fake.dropped:
            break
        await task.deferLater(_reactor(), 0.005, lambda: None)
    assert fake.dropped == 1


@pytest_twisted.ensureDeferred
async def test_an_sse_line_over_1_mib_fails_the_turn(fake: FakeCoze) -> None:
    client = await client_for(fake)
    fake.stream = [("conversation.chat.created", fake.chat("71", "72", "created")),
                   ("conversation.message.delta", "x" * ((1 << 20) + 16))]
    error = await failure_of(client.turn(turn(), lambda t, c: None))
    assert error.reason == PROTOCOL


@pytest.mark.parametrize("stream", [True, False])
@pytest_twisted.ensureDeferred
async def test_a_code_in_a_200_json_body_fails_the_turn(fake: FakeCoze, stream: bool) -> None:
    """Coze answers some errors (a bad token) with HTTP 200 and ``{"code","msg"}``,
    to a streamed request as well."""
    client = await client_for(fake, stream=stream)
    fake.create_answer = {"code": 4100, "msg": "authentication is invalid"}
    error = await failure_of(client.turn(turn(), lambda t, c: None))
    assert error.reason == AGENT_ERROR and "authentication is invalid" in error.detail
    assert "4100" in error.detail and not error.retryable


@pytest_twisted.ensureDeferred
async def test_cancel_calls_v3_chat_cancel_with_both_ids(fake: FakeCoze) -> None:
    client = await client_for(fake)
    await client.cancel("7100", "7200", "u-1")
    (call,) = fake.requests
    assert (call.method, call.path) == ("POST", "/v3/chat/cancel")
    assert call.body == {"chat_id": "7100", "conversation_id": "7200"}
    assert call.headers["authorization"] == f"Bearer {KEY}"


async def drive(clock: task.Clock, d: defer.Deferred[Any]) -> None:
    """Run the poll loop: advance the fake clock to the next poll whenever one
    is due within a second (never to the 100 s watchdog); bounded."""
    for _ in range(2000):
        if d.called:
            return
        due = [c.getTime() - clock.seconds() for c in clock.getDelayedCalls()]
        if due and min(due) <= 1.0:
            clock.advance(min(due))
        await task.deferLater(_reactor(), 0.002, lambda: None)
    raise AssertionError("the poll loop did not finish")


@pytest_twisted.ensureDeferred
async def test_non_stream_polls_at_most_once_a_second_and_returns_the_listed_answer(
        fake: FakeCoze) -> None:
    clock = task.Clock()
    fake.clock = clock
    fake.polls = ["in_progress", "in_progress", "in_progress", "completed"]
    client = await client_for(fake, clock, stream=False)
    tasks: list[Any] = []
    d = client.turn(turn(), lambda t, c: tasks.append((t, c)))
    await drive(clock, d)
    answer = await d
    assert answer.content == "Hello there!"    # function_call/tool_output/follow_up hidden
    paths = [r.path for r in fake.requests]
    assert paths == ["/v3/chat"] + ["/v3/chat/retrieve"] * 4 + ["/v3/chat/message/list"]
    assert fake.requests[0].body["stream"] is False
    times = [r.at for r in fake.requests if r.path != "/v3/chat/message/list"]
    assert all(b - a >= 1.0 for a, b in zip(times, times[1:])), times
    chat_id, conversation_id = tasks[0]
    for r in fake.requests[1:]:
        assert r.args == {"conversation_id": conversation_id, "chat_id": chat_id}
    assert fake.requests[-1].method == "GET"
    assert answer.conversation_id == conversation_id


@pytest_twisted.ensureDeferred
async def test_non_stream_failed_chat_fails_the_turn(fake: FakeCoze) -> None:
    clock = task.Clock()
    fake.polls = ["in_progress", "failed"]
    fake.last_error = {"code": 4011, "msg": "bot not published"}
    client = await client_for(fake, clock, stream=False)
    d = client.turn(turn(), lambda t, c: None)
    await drive(clock, d)
    error = await failure_of(d)
    assert error.reason == AGENT_ERROR and "bot not published" in error.detail
    assert fake.count("/v3/chat/message/list") == 0


@pytest_twisted.ensureDeferred
async def test_non_stream_chat_in_progress_past_poll_timeout_times_out_and_is_cancelled(
        fake: FakeCoze) -> None:
    clock = task.Clock()
    fake.polls = ["in_progress"]
    client = await client_for(fake, clock, stream=False, poll_timeout=3)
    tasks: list[Any] = []
    d = client.turn(turn(), lambda t, c: tasks.append((t, c)))
    await drive(clock, d)
    error = await failure_of(d)
    assert error.reason == TIMEOUT
    assert 3 <= fake.count("/v3/chat/retrieve") <= 4
    await fake.requested("/v3/chat/cancel")
    (cancel,) = [r for r in fake.requests if r.path == "/v3/chat/cancel"]
    assert cancel.body == {"chat_id": tasks[0][0], "conversation_id": tasks[0][1]}


@pytest_twisted.ensureDeferred
async def test_a_refused_connection_is_retryable(fake: FakeCoze) -> None:
    base = await fake.start()
    await fake.stop()
    client = CozeClient({"base_url": base, "bot_id": "b"}, KEY, _reactor())
    error = await failure_of(client.turn(turn(), lambda t, c: None))
    assert (error.reason, error.retryable) == (HTTP_ERROR, True)


@pytest_twisted.ensureDeferred
async def test_no_response_headers_in_time_is_a_timeout(fake: FakeCoze) -> None:
    client = await client_for(fake, timeout=0.2)
    fake.stream = [STALL]
    error = await failure_of(client.turn(turn(), lambda t, c: None))
    assert error.reason == TIMEOUT


@pytest_twisted.ensureDeferred
async def test_cancelling_before_the_response_headers_is_a_cancel(fake: FakeCoze) -> None:
    client = await client_for(fake)
    fake.stream = [STALL]
    d = client.turn(turn(), lambda t, c: None)
    await fake.requested("/v3/chat")
    d.cancel()
    with pytest.raises(defer.CancelledError):
        await d
