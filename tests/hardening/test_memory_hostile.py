"""Hostile input to the memory API: every bad request gets a clear 4xx with a
JSON error body, and nothing is written (not to memory, not to the journal)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from treq.testing import StubTreq
from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure

from libchat.doors.memory_api import MAX_BODY, MAX_KEY, MemoryAPI
from libchat.doors.http import bounded_site
from libchat.interfaces import TokenInfo
from libchat.storage.store import JsonFileStore

TOKEN = "t-alice"


class Tokens:
    def __init__(self) -> None:
        self.known = {TOKEN: TokenInfo("d1", "alice", "memo")}

    def token_info(self, token: str) -> TokenInfo | None:
        return self.known.get(token)


@pytest.fixture
def api(tmp_path: Path) -> tuple[MemoryAPI, JsonFileStore]:
    from libchat.storage.records import DialogRecord

    store = JsonFileStore(tmp_path)
    store.load()
    store.add(DialogRecord(dialog_id="d1", user_id="alice", created_at=0, updated_at=0))
    return MemoryAPI(Tokens(), store, lambda: 1.0), store


def result(d: "defer.Deferred[Any]") -> Any:
    """StubTreq answers synchronously: the result of an already-fired Deferred."""
    from twisted.python.failure import Failure

    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "StubTreq did not answer synchronously"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


def journal_has_memory(store: JsonFileStore) -> bool:
    return any(b'"t":"mem"' in p.read_bytes() for p in store.journal.directory.glob("*.log"))


def save(key: Any = "k", value: Any = "v", **extra: Any) -> dict[str, Any]:
    return {"event_type": 3000, "action": "save_tool_memory", "key": key, "value": value,
            **extra}


CASES = [
    # (name, headers, body bytes, status, code)
    ("no token", {"Authorization": None}, json.dumps(save()).encode(), 401, "UNAUTHORIZED"),
    ("forged token", {"Authorization": "Bearer t-mallory"}, json.dumps(save()).encode(), 401,
     "UNAUTHORIZED"),
    ("wrong scheme", {"Authorization": f"Basic {TOKEN}"}, json.dumps(save()).encode(), 401,
     "UNAUTHORIZED"),
    ("another user", None, json.dumps(save(user_id="bob")).encode(), 403, "FORBIDDEN"),
    ("user id not a string", None, json.dumps(save(user_id=["alice"])).encode(), 400,
     "BAD_REQUEST"),
    ("form content type", {"Content-Type": "application/x-www-form-urlencoded"},
     b"key=k&value=v", 415, "BAD_REQUEST"),
    ("bad json", None, b'{"event_type": 3000, "action": ', 400, "BAD_REQUEST"),
    ("not utf-8", None, b'{"key": "\xff\xfe"}', 400, "BAD_REQUEST"),
    ("json array", None, b"[1, 2]", 400, "BAD_REQUEST"),
    ("deeply nested", None, b"[" * 5000 + b"]" * 5000, 400, "BAD_REQUEST"),
    ("unknown action", None, json.dumps(save(action="drop_tables")).encode(), 400,
     "BAD_REQUEST"),
    ("wrong event type", None, json.dumps(save(event_type=3001)).encode(), 400, "BAD_REQUEST"),
    ("missing value", None, json.dumps({"event_type": 3000, "action": "save_tool_memory",
                                        "key": "k"}).encode(), 400, "BAD_REQUEST"),
    ("empty key", None, json.dumps(save(key="")).encode(), 400, "BAD_REQUEST"),
    ("huge key", None, json.dumps(save(key="k" * (MAX_KEY + 1))).encode(), 400, "BAD_REQUEST"),
    ("key not a string", None, json.dumps(save(key={"a": 1})).encode(), 400, "BAD_REQUEST"),
    ("huge value", None, json.dumps(save(value="v" * MAX_BODY)).encode(), 413,
     "MSG_TOO_LARGE"),
]


@pytest.mark.parametrize("name,headers,body,status,code", CASES, ids=[c[0] for c in CASES])
def test_bad_requests_get_a_json_4xx_and_write_nothing(
        api: Any, name: str, headers: dict[str, str | None] | None, body: bytes, status: int,
        code: str) -> None:
    memory, store = api
    client = StubTreq(memory.app.resource())
    sent = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    for name_, value in (headers or {}).items():  # None: leave the header out
        if value is None:
            sent.pop(name_)
        else:
            sent[name_] = value
    response = result(client.post("http://api/memory", data=body,
                                                  headers=sent))
    assert response.code == status
    assert response.headers.getRawHeaders("content-type") == ["application/json"]
    error = json.loads(result(response.content()))
    assert error["code"] == code and error["message"]
    assert store.memory_get("alice", "memo", "k") is None
    assert store.get("d1").memory == {}  # type: ignore[union-attr]
    assert not journal_has_memory(store)


def test_wrong_method_gets_json_405(api: Any) -> None:
    memory, _ = api
    client = StubTreq(memory.app.resource())
    response = result(client.get("http://api/memory",
                                                 headers={"Authorization": f"Bearer {TOKEN}"}))
    assert response.code == 405
    assert response.headers.getRawHeaders("allow") == ["POST"]
    assert json.loads(result(response.content()))["code"] == "METHOD_NOT_ALLOWED"


def test_a_good_save_is_journaled_before_the_answer(api: Any) -> None:
    """The control case: the same harness does see writes."""
    memory, store = api
    client = StubTreq(memory.app.resource())
    response = result(client.post(
        "http://api/memory", data=json.dumps(save(value={"deep": [1, 2]})).encode(),
        headers={"Authorization": f"Bearer {TOKEN}"}))
    assert response.code == 200
    assert journal_has_memory(store)
    assert store.memory_get("alice", "memo", "k") == {"deep": [1, 2]}


def http(site: Any, head: bytes, body_parts: list[bytes]) -> tuple[int, dict[str, Any], int]:
    """One raw HTTP/1.1 exchange with the real Site over a StringTransport
    (no reactor). Returns status, JSON answer, and the request's kept bytes."""
    from twisted.internet.testing import StringTransport

    channel = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    kept: list[int] = []
    factory = site.requestFactory

    def recording(*a: Any, **kw: Any) -> Any:
        request = factory(*a, **kw)
        original = request.handleContentChunk

        def chunk(data: bytes) -> None:
            original(data)
            kept.append(request.content.tell())
        request.handleContentChunk = chunk
        return request
    channel.requestFactory = recording
    channel.dataReceived(head)
    for part in body_parts:
        channel.dataReceived(part)
    channel.connectionLost(Failure(ConnectionDone()))
    raw = transport.value()
    status = int(raw.split(b" ", 2)[1])
    answer = json.loads(raw.split(b"\r\n\r\n", 1)[1].split(b"\r\n")[1]
                        if b"chunked" in raw.split(b"\r\n\r\n", 1)[0].lower()
                        else raw.split(b"\r\n\r\n", 1)[1])
    return status, answer, max(kept or [0])


def test_oversized_bodies_are_discarded_as_they_arrive(api: Any) -> None:
    """A body over the limit, declared by Content-Length or sent in chunks,
    is never kept (not in memory, not in a temp file) and gets 413."""
    memory, store = api
    site = bounded_site(memory.app.resource(), MAX_BODY)  # what tap listens with
    site.timeOut = None  # no timers on the global reactor
    body = json.dumps(save(value="v" * (4 * MAX_BODY))).encode()
    auth = f"Authorization: Bearer {TOKEN}\r\n".encode()
    head = (b"POST /memory HTTP/1.1\r\nHost: api\r\n" + auth +
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
    status, answer, kept = http(site, head, [body[i:i + 65536]
                                             for i in range(0, len(body), 65536)])
    assert (status, answer["code"]) == (413, "MSG_TOO_LARGE")
    assert kept == 0

    head = (b"POST /memory HTTP/1.1\r\nHost: api\r\n" + auth +
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunks = [b"%x\r\n%s\r\n" % (len(body[i:i + 65536]), body[i:i + 65536])
              for i in range(0, len(body), 65536)] + [b"0\r\n\r\n"]
    status, answer, kept = http(site, head, chunks)
    assert (status, answer["code"]) == (413, "MSG_TOO_LARGE")
    assert kept <= MAX_BODY
    assert store.memory_get("alice", "memo", "k") is None
    assert not journal_has_memory(store)
