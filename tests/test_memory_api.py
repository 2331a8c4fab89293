"""The memory API (docs/protocol.md §7), through StubTreq: no port."""

from __future__ import annotations

import json
from typing import Any

from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase

from libchat.doors.memory_api import MAX_BODY, MemoryAPI
from libchat.interfaces import TokenInfo
from libchat.storage.records import DialogRecord
from libchat.storage.store import MemoryStore
from libchat.testing import FakeRouter

from .helpers import each_case
from .logcheck import LogCheckMixin


def make_api() -> tuple[StubTreq, MemoryStore]:
    """The API on a FakeRouter that knows three tokens."""
    router = FakeRouter()
    router.tokens.update({"tok-u1": TokenInfo("d1", "u1", "hello"),
                          "tok-u1-echo": TokenInfo("d1", "u1", "echo"),
                          "tok-u2": TokenInfo("d2", "u2", "hello")})
    store = MemoryStore()
    store.add(DialogRecord(dialog_id="d1", user_id="u1", created_at=0, updated_at=0))
    return StubTreq(MemoryAPI(router, store, lambda: 42.0).app.resource()), store


def call(treq: StubTreq, body: Any, token: str | None = "tok-u1",
         content_type: str = "application/json") -> tuple[int, Any]:
    headers = {"Content-Type": content_type}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    d = treq.post("http://api/memory", data=raw, headers=headers)
    out: list = []
    d.addCallback(lambda r: r.content().addCallback(lambda c: out.append((r.code, c))))
    treq.flush()
    code, content = out[0]
    return code, json.loads(content)


def save(key: str = "name", value: Any = "Bob", **extra: Any) -> dict:
    return {"event_type": 3000, "action": "save_tool_memory", "key": key, "value": value,
            "user_id": "u1", **extra}


def query(key: str = "name", **extra: Any) -> dict:
    return {"event_type": 3000, "action": "query_tool_memory", "key": key, "user_id": "u1",
            **extra}


BAD_TOKENS = [None, "", "forged", "tok-u1 extra"]

BAD_BODIES: list[Any] = [
    b"{not json", b"[]", b"\xff", {"event_type": 3001, "action": "query_tool_memory", "key": "k"},
    {"event_type": 3000, "action": "drop_tables", "key": "k"},
    {"event_type": 3000, "action": "query_tool_memory"},
    {"event_type": 3000, "action": "query_tool_memory", "key": ""},
    {"event_type": 3000, "action": "query_tool_memory", "key": 5},
    {"event_type": 3000, "action": "query_tool_memory", "key": "k" * 257},
    {"event_type": 3000, "action": "save_tool_memory", "key": "k"},
]


class MemoryAPITests(LogCheckMixin, SynchronousTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.treq, self.store = make_api()

    def test_save_then_query_round_trip(self) -> None:
        treq, store = self.treq, self.store
        assert call(treq, save(value={"a": [1, 2]})) == (200, {
            "event_type": 3000, "action": "save_tool_memory", "key": "name", "ok": True})
        assert call(treq, query()) == (200, {"event_type": 3000, "action": "get_tool_memory",
                                             "key": "name", "value": {"a": [1, 2]}})
        assert store.get("d1").memory["hello"]["name"]["at"] == 42.0

    def test_unknown_key_is_null(self) -> None:
        assert call(self.treq, query("never"))[1]["value"] is None

    def test_user_id_may_be_omitted(self) -> None:
        body = save()
        del body["user_id"]
        assert call(self.treq, body)[0] == 200

    def test_another_users_memory_is_invisible(self) -> None:
        treq = self.treq
        call(treq, save())
        other = query()
        other["user_id"] = "u2"
        assert call(treq, other, token="tok-u2")[1]["value"] is None

    def test_another_programs_memory_is_invisible(self) -> None:
        treq = self.treq
        call(treq, save())
        assert call(treq, query(), token="tok-u1-echo")[1]["value"] is None

    def test_missing_or_unknown_token_is_401(self) -> None:
        def check(token: str | None) -> None:
            code, body = call(make_api()[0], query(), token=token)
            assert code == 401 and body["code"] == "UNAUTHORIZED"

        each_case(self, BAD_TOKENS, check)

    def test_body_user_of_another_user_is_403_and_nothing_written(self) -> None:
        treq, store = self.treq, self.store
        code, body = call(treq, save(user_id="u2"))
        assert code == 403 and "message" in body
        assert store.memory_get("u1", "hello", "name") is None
        assert store.memory_get("u2", "hello", "name") is None

    def test_bad_bodies_are_400_with_a_json_error(self) -> None:
        def check(body: Any) -> None:
            treq, store = make_api()  # a fresh API and store per case
            code, answer = call(treq, body)
            assert code == 400 and answer["code"] == "BAD_REQUEST" and answer["message"]
            assert store.get("d1").memory == {}

        each_case(self, BAD_BODIES, check, name=str)

    def test_wrong_content_type_is_415(self) -> None:
        code, answer = call(self.treq, save(), content_type="text/plain")
        assert code == 415 and answer["code"] == "BAD_REQUEST"

    def test_oversized_body_is_413_and_nothing_written(self) -> None:
        treq, store = self.treq, self.store
        code, answer = call(treq, save(value="x" * MAX_BODY))
        assert code == 413 and answer["code"] == "MSG_TOO_LARGE"
        assert store.get("d1").memory == {}
