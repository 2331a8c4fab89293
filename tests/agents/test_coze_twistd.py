"""Coze behind a real ``twistd libchat``, spoken to with the frame protocol;
the agent is the fake Coze server (tests/agents/fake_coze.py) on loopback,
in this test's reactor (the test waits on Deferreds, so it keeps serving)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest
import pytest_twisted
from twisted.internet import defer, reactor

from libchat.tools.client import connect
from tests.agents.fake_coze import FakeCoze
from tests.agents.serving import agent_servers, msg
from tests.launcher import Libchat

KEY = "pat-coze-very-secret-0123456789"
T = 20.0


@pytest.fixture
def fake() -> Iterator[FakeCoze]:
    fake = FakeCoze(reactor, reply="北京的天气：晴天", key=KEY)
    fake.base = pytest_twisted.blockon(defer.ensureDeferred(fake.start()))
    yield fake
    pytest_twisted.blockon(defer.ensureDeferred(fake.stop()))


@pytest.fixture
def server(tmp_path: Path, fake: FakeCoze) -> Iterator[Any]:
    def write(**section: Any) -> Path:
        programs = tmp_path / "programs"
        (programs / "bot").mkdir(parents=True, exist_ok=True)
        (programs / "bot" / "package.json").write_text(json.dumps({"libchat": {
            "runtime": "coze", "base_url": fake.base, "bot_id": "7300000000000000001",
            "api_key_env": "COZE_TEST_KEY", "keywords": ["bot"], **section}}))
        return programs
    yield from agent_servers(tmp_path, KEY, "COZE_TEST_KEY", write)


@defer.inlineCallbacks
def turn(lc: Libchat, *texts: str, dialog: str = "d1") -> Any:
    """Send each text and collect events until its 2001 or 2002."""
    c = yield connect(reactor, f"tcp:host=127.0.0.1:port={lc.ports['front']}")
    got: list[dict[str, Any]] = []
    try:
        for text in texts:
            c.send(msg(text, dialog))
            while True:
                event = yield c.next_event(reactor, T)
                got.append(event)
                if event["event_type"] in (2001, 2002, 2003, 2004):
                    break
    finally:
        c.transport.loseConnection()
        yield c.closed
    return got


@pytest_twisted.inlineCallbacks
def test_a_streamed_coze_answer_is_one_2001_and_the_conversation_is_kept(
        server: Any, fake: FakeCoze) -> Any:
    lc = server()
    events = yield turn(lc, "bot 北京天气", "bot and tomorrow?")
    replies = [e for e in events if e["event_type"] == 2001]
    assert [r["messages"]["content"] for r in replies] == ["北京的天气：晴天"] * 2
    assert all(e["event_type"] == 2001 for e in events), events  # one answer each, no 2002
    creates = [r for r in fake.requests if r.path == "/v3/chat"]
    assert len(creates) == 2
    assert creates[0].body["additional_messages"][0]["content"] == "bot 北京天气"
    assert creates[0].body["stream"] is True and creates[0].body["user_id"] == "u1"
    assert "conversation_id" not in creates[0].args
    assert creates[1].args["conversation_id"], "the second turn names the kept conversation"


@pytest_twisted.inlineCallbacks
def test_a_failed_coze_chat_ends_program_failed_with_its_error_and_no_2001(
        server: Any, fake: FakeCoze) -> Any:
    lc = server()
    fake.last_error = {"code": 4011, "msg": "bot quota exhausted"}
    chat = fake.chat("7400000000000000090", "7400000000000000091", "created")
    fake.stream = [("conversation.chat.created", chat),
                   ("conversation.chat.in_progress", {**chat, "status": "in_progress"}),
                   ("conversation.chat.failed", fake.chat(chat["id"], chat["conversation_id"],
                                                          "failed"))]
    events = yield turn(lc, "bot hi")
    assert [e["event_type"] for e in events] == [2002]
    assert events[0]["reason"] == "program_failed"
    assert "bot quota exhausted" in events[0]["detail"]


@pytest_twisted.inlineCallbacks
def test_the_non_stream_coze_path_polls_then_lists_the_answer(
        server: Any, fake: FakeCoze) -> Any:
    lc = server(stream=False)
    fake.polls = ["in_progress", "in_progress", "completed"]
    events = yield turn(lc, "bot hi")
    assert [(e["event_type"], e["messages"]["content"]) for e in events] == [
        (2001, "北京的天气：晴天")]
    assert fake.count("/v3/chat/retrieve") >= 2 and fake.count("/v3/chat/message/list") == 1
    polls = [r.at for r in fake.requests if r.path == "/v3/chat/retrieve"]
    assert all(b - a >= 0.9 for a, b in zip(polls, polls[1:])), "at most one retrieve a second"


@pytest_twisted.inlineCallbacks
def test_a_wrong_coze_key_ends_program_failed(server: Any, fake: FakeCoze) -> Any:
    lc = server(key_value="pat-wrong")
    events = yield turn(lc, "bot hi")
    assert [(e["event_type"], e["reason"]) for e in events] == [(2002, "program_failed")]
    assert "pat-wrong" not in events[0]["detail"] and "pat-wrong" not in lc.output()
