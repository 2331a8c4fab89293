"""The Dify client (libchat.runtimes.agents.dify): request building, merging
the stream, failures, against the fake Dify in this process on loopback."""

from __future__ import annotations

from typing import Any, Iterator

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.web.server import Site

from libchat.runtimes.agents.client import (
    AGENT_ERROR, HTTP_ERROR, TIMEOUT, AgentAnswer, AgentError, AgentTurn)
from libchat.runtimes.agents.dify import DifyClient, StreamMerger, image_files
from libchat.runtimes.agents.http import error_of
from tests.agents.fake_dify import FakeDify

KEY = "sk-unit-secret"


@pytest.fixture
def fake() -> Iterator[tuple[FakeDify, str]]:
    fake = FakeDify(reactor, KEY)
    port = pytest_twisted.blockon(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        Site(fake.app.resource())))
    yield fake, f"http://127.0.0.1:{port.getHost().port}/v1"
    pytest_twisted.blockon(defer.maybeDeferred(port.stopListening))


def client(base: str, key: str = KEY, **section: Any) -> DifyClient:
    return DifyClient({"base_url": base, **section}, key, reactor)


def turn(query: str, conversation_id: str | None = None, **kw: Any) -> AgentTurn:
    return AgentTurn(query=query, user="u1", conversation_id=conversation_id, **kw)


def test_request_body_fields_and_image_files() -> None:
    c = DifyClient({"base_url": "https://x/v1", "inputs": {"lang": "en"},
                    "response_mode": "blocking"}, "k", reactor)
    body = c.body(turn("hi", attachments=(
        {"type": "image", "url": "https://img/a.png"}, {"type": "file", "url": "https://f"},
        {"type": "image/png", "url": "http://img/b.png"}, {"type": "image", "url": "ftp://no"})),
        None)
    assert body == {"inputs": {"lang": "en"}, "query": "hi", "response_mode": "blocking",
                    "conversation_id": "", "user": "u1", "files": [
                        {"type": "image", "transfer_method": "remote_url",
                         "url": "https://img/a.png"},
                        {"type": "image", "transfer_method": "remote_url",
                         "url": "http://img/b.png"}]}
    assert "k" not in repr(c).replace("DifyClient", "")
    assert image_files(()) == []


def test_merging_deltas_replace_files_and_end() -> None:
    tasks: list[tuple[str, str | None]] = []
    m = StreamMerger(lambda t, c: tasks.append((t, c)))
    for e in [{"event": "workflow_started", "task_id": "t1"},
              {"event": "message", "answer": "Hel", "task_id": "t1", "conversation_id": "c1"},
              {"event": "agent_message", "answer": "lo", "task_id": "t1"},
              {"event": "node_finished"}, {"event": "agent_thought", "thought": "x"},
              {"event": "message_replace", "answer": "Hi", "task_id": "t1"},
              {"event": "message", "answer": "!", "task_id": "t1"},
              {"event": "message_file", "type": "image", "url": "https://f/1.png"},
              {"event": "message_end", "task_id": "t1", "conversation_id": "c1"}]:
        m.event(e)
    assert m.ended and tasks == [("t1", None)]
    assert m.answer() == AgentAnswer("Hi!", ({"type": "image", "url": "https://f/1.png"},), "c1")


def test_an_error_event_fails_the_merge() -> None:
    m = StreamMerger(lambda t, c: None)
    with pytest.raises(AgentError) as e:
        m.event({"event": "error", "status": 400, "code": "invalid_param", "message": "bad"})
    assert (e.value.reason, e.value.detail) == (AGENT_ERROR, "invalid_param: bad")


def test_http_error_bodies() -> None:
    e = error_of(429, b'{"code": "too_many_requests", "message": "slow down", "status": 429}')
    assert (e.reason, e.detail, e.retryable) == (HTTP_ERROR, "HTTP 429 too_many_requests: slow down", True)
    e = error_of(400, b"<html>")
    assert (e.detail, e.retryable) == ("HTTP 400", False)
    assert error_of(502, b"").retryable


@pytest_twisted.inlineCallbacks
def test_blocking_turn(fake: tuple[FakeDify, str]) -> Any:
    server, base = fake
    tasks: list[Any] = []
    answer = yield client(base, response_mode="blocking").turn(turn("hi"), lambda *a: tasks.append(a))
    assert answer.content == "echo: hi" and answer.conversation_id.startswith("conv-")
    assert tasks and tasks[0][0].startswith("task-")


@pytest_twisted.inlineCallbacks
def test_streaming_turn_with_a_file(fake: tuple[FakeDify, str]) -> Any:
    server, base = fake
    answer = yield client(base).turn(turn("a picture"), lambda *a: None)
    assert answer.content == "echo: a picture"
    assert answer.attachments == ({"type": "image", "url": "https://files/f1.png"},)


@pytest_twisted.inlineCallbacks
def test_a_lost_conversation_starts_a_new_one_once(fake: tuple[FakeDify, str]) -> Any:
    server, base = fake
    answer = yield client(base).turn(turn("hi", "conv-forgotten"), lambda *a: None)
    assert answer.content == "echo: hi" and answer.conversation_id != "conv-forgotten"
    assert [r["body"]["conversation_id"] for r in server.requests] == ["conv-forgotten", ""]


@pytest_twisted.inlineCallbacks
def test_a_wrong_key_is_an_http_error_without_the_key(fake: tuple[FakeDify, str]) -> Any:
    server, base = fake
    with pytest.raises(AgentError) as e:
        yield client(base, key="sk-wrong-key").turn(turn("hi"), lambda *a: None)
    assert e.value.status == 401 and not e.value.retryable
    assert "sk-wrong-key" not in str(e.value) and "Access token is invalid" in e.value.detail


@pytest_twisted.inlineCallbacks
def test_no_byte_for_timeout_seconds_is_a_timeout(fake: tuple[FakeDify, str]) -> Any:
    server, base = fake
    server.script.append({"silent": True})
    with pytest.raises(AgentError) as e:
        yield client(base, timeout=0.3).turn(turn("hi"), lambda *a: None)
    assert e.value.reason == TIMEOUT


@pytest_twisted.inlineCallbacks
def test_stop_posts_the_user_to_the_task(fake: tuple[FakeDify, str]) -> Any:
    server, base = fake
    yield client(base).cancel("task-7", "c", "u1")
    assert server.stops == [{"task_id": "task-7", "user": "u1"}]


@pytest_twisted.inlineCallbacks
def test_cancelling_a_turn_aborts_it(fake: tuple[FakeDify, str]) -> Any:
    server, base = fake
    server.script.append({"slow": True})
    started: defer.Deferred[Any] = defer.Deferred()
    d = client(base).turn(turn("hi"), lambda t, c: started.called or started.callback(t))
    yield started.addTimeout(10, reactor)
    d.cancel()
    with pytest.raises(defer.CancelledError):
        yield d
