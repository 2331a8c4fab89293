"""The web listener's Klein apps through treq.testing.StubTreq (no port): on a
FakeRouter for the doors alone, and once on the real router (on fakes) to
show the pieces fit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq

from twisted.internet import defer
from twisted.internet.task import Clock

from libchat.doors.web import app as web
from libchat.doors.web.auth import mint
from libchat.protocol import codes
from libchat.testing import FakeRouter

from .helpers import World

SECRET = b"unit-test-secret-of-32-bytes-or-more-000"


class Doors:
    """The web doors on a FakeRouter and a task.Clock."""

    def __init__(self, secret: bytes | None = None, **settings: Any) -> None:
        self.clock = Clock()
        self.router = FakeRouter()
        self.web = web.build(self.router, self.clock,
                             web.WebSettings(secret=secret, **settings))
        self.gateway = self.web.gateway


def client(world: World | Doors) -> StubTreq:
    return StubTreq(world.web.resource())


def result(stub: StubTreq, d: Any) -> Any:
    """The result ``d`` has once the stub has processed everything."""
    stub.flush()
    got: list[Any] = []
    d.addBoth(got.append)
    assert got, "no result yet"
    return got[0]


def call(stub: StubTreq, method: str, path: str, user: str | None = "alice",
         body: Any = None, **kw: Any) -> tuple[int, Any]:
    """(status, JSON body) of one request; ``user`` goes in X-User-Id."""
    headers = kw.pop("headers", {})
    if user is not None:
        headers["X-User-Id"] = user
    data = json.dumps(body).encode() if body is not None else kw.pop("data", None)
    response = result(stub, stub.request(method, "http://libchat" + path, headers=headers,
                                         data=data, **kw))
    raw = result(stub, response.content())
    return response.code, json.loads(raw) if raw else None


def test_session_messages_long_poll_and_close_on_the_real_router(tmp_path: Path) -> None:
    w = World(tmp_path)
    stub = client(w)
    status, session = call(stub, "POST", "/api/chat/sessions", body={"intent": "echo"})
    assert status == 201 and session["user_id"] == "alice"
    sid = session["session_id"]
    # a long-poll that is waiting when the reply comes
    got: list[Any] = []
    stub.get(f"http://libchat/api/chat/sessions/{sid}/messages?after=1&wait=30",
             headers={"X-User-Id": "alice"}).addCallback(got.append)
    stub.flush()
    assert got == [] and w.gateway.waiting() == 1
    status, posted = call(stub, "POST", f"/api/chat/sessions/{sid}/messages",
                          body={"content": "morning", "message_id": "mine"})
    assert (status, posted) == (202, {"message_id": "mine", "seq": 1})
    w.instance().say({"event_type": 2001, "messages": {"content": "echo: morning"}})
    stub.flush()
    body = json.loads(got[0].content().result)
    assert [e["messages"]["content"] for e in body["messages"]] == ["echo: morning"]
    status, closed = call(stub, "POST", f"/api/chat/sessions/{sid}/close")
    assert (status, closed) == (200, {"ok": True})
    status, got = call(stub, "GET", f"/api/chat/sessions/{sid}/messages?after=2")
    assert got["messages"][0]["reason"] == codes.CLIENT_CLOSED


def test_a_posted_message_is_routed_and_answered_with_the_receipts_seq() -> None:
    w = Doors()
    stub = client(w)
    _, session = call(stub, "POST", "/api/chat/sessions", body={"intent": "echo"})
    sid = session["session_id"]
    assert w.router.info(sid).intent == "echo"
    w.router.reply(sid, "already here")  # seq 1
    status, posted = call(stub, "POST", f"/api/chat/sessions/{sid}/messages",
                          body={"content": "hi", "message_id": "m1"})
    assert (status, posted) == (202, {"message_id": "m1", "seq": 2})
    [(_, event)] = w.router.received
    assert (event["dialog_id"], event["user_id"], event["messages"]["content"]) == (
        sid, "alice", "hi")
    w.router.refusals.append(codes.error(codes.BUSY, "program limit of 1 reached"))
    status, error = call(stub, "POST", f"/api/chat/sessions/{sid}/messages",
                         body={"content": "again"})
    assert (status, error["code"]) == (429, codes.BUSY)
    status, got = call(stub, "GET", f"/api/chat/sessions/{sid}/messages?after=1")
    assert [e["seq"] for e in got["messages"]] == [2]


def test_wait_is_clamped_to_30_seconds() -> None:
    w = Doors()
    stub = client(w)
    _, session = call(stub, "POST", "/api/chat/sessions")
    got: list[Any] = []
    stub.get(f"http://libchat/api/chat/sessions/{session['session_id']}/messages?wait=3600",
             headers={"X-User-Id": "alice"}).addCallback(got.append)
    stub.flush()
    w.clock.advance(29.9)
    stub.flush()
    assert got == []
    w.clock.advance(0.2)
    stub.flush()
    assert json.loads(got[0].content().result) == {"messages": []}


def test_errors() -> None:
    w = Doors(rate=2, max_frame=1000)
    stub = client(w)
    _, session = call(stub, "POST", "/api/chat/sessions", body={"intent": "echo"})
    base = f"/api/chat/sessions/{session['session_id']}"
    assert call(stub, "POST", "/api/chat/sessions", user=None)[0] == 401
    assert call(stub, "GET", base + "/messages", user="bob")[0] == 404
    assert call(stub, "POST", base + "/messages", body={"content": "x" * 2000})[0] == 413
    assert call(stub, "POST", base + "/messages", body=["not", "an object"])[0] == 400
    assert call(stub, "POST", base + "/messages", body={"content": 5})[0] == 400
    assert call(stub, "GET", base + "/messages?after=nan")[0] == 400
    assert call(stub, "GET", base + "/messages?wait=nan")[0] == 400
    status, error = call(stub, "PUT", base + "/messages")
    assert (status, error["code"]) == (405, "METHOD_NOT_ALLOWED")
    w.clock.advance(10)  # a full bucket (the bad bodies above counted too)
    statuses = [call(stub, "POST", base + "/messages", body={"content": "hi"})[0]
                for _ in range(3)]
    assert statuses == [202, 202, 429]
    w.clock.advance(0.5)  # rate 2/s: one more allowed
    assert call(stub, "POST", base + "/messages", body={"content": "hi"})[0] == 202


def test_jwt_mode_wants_a_valid_bearer_token() -> None:
    w = Doors(secret=SECRET)
    stub = client(w)
    assert call(stub, "POST", "/api/chat/sessions")[0] == 401  # X-User-Id is not enough
    good = {"Authorization": "Bearer " + mint(SECRET, "carol")}
    status, session = call(stub, "POST", "/api/chat/sessions", user=None, headers=good)
    assert (status, session["user_id"]) == (201, "carol")
    bad = {"Authorization": "Bearer " + mint(b"x" * 40, "carol")}
    assert call(stub, "POST", "/api/chat/sessions", user=None, headers=bad)[0] == 401


def test_page_static_openapi_healthz_and_metrics_are_served() -> None:
    w = Doors()
    stub = client(w)
    d = stub.get("http://libchat/")
    stub.flush()
    page = d.result
    assert page.code == 200
    assert page.headers.getRawHeaders("content-security-policy")
    html = page.content().result.decode()
    assert "/static/app.js" in html and "/static/style.css" in html
    for name, kind in [("app.js", "text/javascript"), ("style.css", "text/css")]:
        d = stub.get(f"http://libchat/static/{name}")
        stub.flush()
        assert d.result.code == 200
        assert d.result.headers.getRawHeaders("content-type")[0].startswith(kind)
    assert call(stub, "GET", "/static/..%2Fapp.py")[0] == 404
    status, doc = call(stub, "GET", "/api/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    assert call(stub, "GET", "/healthz") == (200, {"ok": True, "auth": "dev", "websockets": 0})
    assert call(stub, "GET", "/nothing/here")[0] == 404
    d = stub.get("http://libchat/metrics")
    stub.flush()
    names = {f.name for f in text_string_to_metric_families(d.result.content().result.decode())}
    assert {"libchat_events", "libchat_dialogs_live", "libchat_instances_live",
            "libchat_spawn_seconds", "libchat_reply_seconds"} <= names


def test_metrics_read_the_routers_stats_and_count_its_events() -> None:
    w = Doors()
    stub = client(w)
    w.router.live = 3
    _, session = call(stub, "POST", "/api/chat/sessions")
    call(stub, "POST", f"/api/chat/sessions/{session['session_id']}/messages",
         body={"content": "hi"})
    w.router.reply(session["session_id"], "there")
    d = stub.get("http://libchat/metrics")
    stub.flush()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(d.result.content().result.decode())
               for s in f.samples}
    assert samples[("libchat_dialogs_live", ())] == 3
    assert samples[("libchat_events_total", (("direction", "in"), ("event_type", "1001")))] == 1
    assert samples[("libchat_events_total", (("direction", "out"), ("event_type", "2001")))] \
        == 1
    assert samples[("libchat_pending_events", (("channel", "web"),))] == 0


def test_an_entry_appended_while_a_long_poll_reads_wakes_it() -> None:
    """On a node that does not own the dialog the read is a Redis round
    trip: a reply appended during it must wake the poll (it reads again at
    once), not leave it asleep for its whole ``wait``."""
    w = Doors()
    stub = client(w)
    _, session = call(stub, "POST", "/api/chat/sessions", body={"intent": "echo"})
    sid = session["session_id"]
    real = w.router.entries
    reads: list[tuple[defer.Deferred[Any], tuple[Any, ...]]] = []

    def remote(*args: Any) -> defer.Deferred[Any]:
        reads.append((defer.Deferred(), args))
        return reads[-1][0]
    w.router.entries = remote  # type: ignore[method-assign]
    got: list[Any] = []
    stub.get(f"http://libchat/api/chat/sessions/{sid}/messages?wait=30",
             headers={"X-User-Id": "alice"}).addCallback(got.append)
    stub.flush()
    (read, args), = reads
    stale = real(*args)  # Redis answered before the reply was appended ...
    w.router.reply(sid, "here")  # ... which happens while the answer is on its way
    reads.clear()
    read.callback(stale)
    stub.flush()
    assert stale == [] and len(reads) == 1, "it must read again at once"
    (read, args), = reads
    read.callback(real(*args))
    stub.flush()
    body = json.loads(got[0].content().result)
    assert [e["messages"]["content"] for e in body["messages"]] == ["here"]
    assert w.gateway.waiting() == 0 and w.clock.getDelayedCalls() == []
