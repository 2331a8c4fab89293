"""The outbox of one app with a task.Clock and a scripted API: order, merging,
one send in flight per dialog, back-off, giving up, and the ledger's replay."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock

from libchat.doors.platforms import outbound as ob
from libchat.doors.platforms.api import Result
from libchat.doors.platforms.config import lark_app, wecom_app
from libchat.doors.platforms.ledger import Ledger
from libchat.doors.platforms.sender import Sender
from libchat.storage.store import run_inline

from .test_wecom_crypto import AES_KEY, CORP, TOKEN

WECOM = wecom_app("hr", {"corp_id": CORP, "agent_id": 7, "token": TOKEN,
                         "encoding_aes_key": AES_KEY, "secret": "s"})
LARK = lark_app("bot", {"app_id": "cli", "app_secret": "s", "verification_token": "v"})


class ScriptedAPI:
    """Each send waits for the test to answer it (``answer(outcome)``)."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, Any], defer.Deferred[Result]]] = []

    def send(self, body: dict[str, Any]) -> "defer.Deferred[Result]":
        d: defer.Deferred[Result] = defer.Deferred()
        self.calls.append((body, d))
        return d

    def answer(self, outcome: str = ob.OK, index: int = -1) -> None:
        self.calls[index][1].callback(Result(outcome, {"errcode": 45002}, "HTTP 200"))

    def texts(self) -> list[str]:
        out = []
        for body, _ in self.calls:
            if "text" in body:
                out.append(body["text"]["content"])
            elif "content" in body:
                import json
                out.append(json.loads(body["content"]).get("text", ""))
        return out


def sender(tmp_path: Path, app: Any = WECOM, platform: str = "wecom") -> tuple[Sender, ScriptedAPI, Clock, Ledger]:
    clock = Clock()
    ledger = Ledger(tmp_path / "ledger", run_inline, clock)
    ledger.set_target("wecom:hr:lisi", "lisi", None)
    ledger.set_target("wecom:hr:wang", "wang", None)
    ledger.set_target("lark:bot:oc:ou", "oc", "ou")
    api = ScriptedAPI()
    return Sender(platform, app, api, ledger, clock), api, clock, ledger


def reply(text: str, dialog: str = "wecom:hr:lisi") -> dict[str, Any]:
    return {"event_type": 2001, "dialog_id": dialog, "messages": {"content": text}}


def test_replies_that_arrive_during_a_send_merge_into_the_next_one(tmp_path: Path) -> None:
    s, api, _, _ = sender(tmp_path)
    s.reply(reply("one"))
    s.reply(reply("two"))
    s.reply(reply("three"))
    assert api.texts() == ["one"], "one send in flight per dialog"
    api.answer()
    assert api.texts() == ["one", "two\n\nthree"]
    api.answer()
    assert s.stats.sent == 2 and not s.ledger.items


def test_dialogs_send_independently(tmp_path: Path) -> None:
    s, api, _, _ = sender(tmp_path)
    s.reply(reply("to lisi"))
    s.reply(reply("to wang", "wecom:hr:wang"))
    assert [b["touser"] for b, _ in api.calls] == ["lisi", "wang"]


def test_retry_backs_off_1s_doubling_then_succeeds(tmp_path: Path) -> None:
    s, api, clock, _ = sender(tmp_path)
    s.reply(reply("x"))
    api.answer(ob.RETRY)
    assert len(api.calls) == 1
    clock.advance(0.99)
    assert len(api.calls) == 1
    clock.advance(0.01)
    assert len(api.calls) == 2
    api.answer(ob.RETRY)
    clock.advance(1.99)
    assert len(api.calls) == 2
    clock.advance(0.01)
    api.answer(ob.OK)
    assert s.stats.retries == 2 and s.stats.sent == 1 and s.stats.failures == 0


def test_permanent_refusal_is_counted_never_retried_and_the_next_reply_goes(
        tmp_path: Path, logged: Any) -> None:
    logged.allow("was not delivered")
    s, api, clock, _ = sender(tmp_path)
    s.reply(reply("refused"))
    s.reply(reply("next"))
    api.answer(ob.PERMANENT)
    clock.advance(3600)
    assert api.texts() == ["refused", "next"] and s.stats.failures == 1


def test_gives_up_after_ten_minutes_of_failures(tmp_path: Path, logged: Any) -> None:
    logged.allow("was not delivered")
    s, api, clock, _ = sender(tmp_path)
    s.reply(reply("doomed"))
    while s.stats.failures == 0:
        api.answer(ob.RETRY)
        clock.advance(60)
    assert 10 <= len(api.calls) <= 20 and not s.ledger.items


def test_lark_parts_carry_stable_uuids_and_the_group_mention_starts_the_first(
        tmp_path: Path) -> None:
    s, api, _, _ = sender(tmp_path, LARK, "lark")
    s.reply(reply("hello group", "lark:bot:oc:ou"))
    body = api.calls[0][0]
    assert body["receive_id"] == "oc" and body["uuid"].endswith("-0")
    assert api.texts()[0].startswith('<at user_id="ou"></at>')


def test_the_ledger_replays_unsent_items_and_targets_after_a_crash(tmp_path: Path) -> None:
    s, api, clock, ledger = sender(tmp_path)
    s.reply(reply("first"))
    s.reply(reply("second"))
    api.answer()  # "first" done; "second" in flight, never answered: a crash
    again = Ledger(tmp_path / "ledger", run_inline, clock)
    assert [i["text"] for i in again.items.values()] == ["second"]
    assert again.target("wecom:hr:lisi") == {"to": "lisi", "m": None}
    s2 = Sender("wecom", WECOM, api2 := ScriptedAPI(), again, clock)
    s2.resume()
    assert api2.texts() == ["second"]


def test_compaction_keeps_the_state_and_drops_the_segments(tmp_path: Path) -> None:
    s, api, clock, ledger = sender(tmp_path)
    s.reply(reply("kept"))
    assert ledger.seen("wecom:hr", "m1") is False
    ledger.compact()
    again = Ledger(tmp_path / "ledger", run_inline, clock)
    assert [i["text"] for i in again.items.values()] == ["kept"]
    assert again.seen("wecom:hr", "m1") is True
    assert not [p for p in (tmp_path / "ledger").glob("*.log") if p.stat().st_size]


def test_attachments_by_url_are_fetched_up_to_10_mib(tmp_path: Path) -> None:
    from klein import Klein
    from treq.testing import StubTreq

    from libchat.doors.platforms.api import MAX_ATTACHMENT, WeComAPI

    files = Klein()

    @files.route("/small")
    def small(request: Any) -> bytes:
        return b"IMAGE"

    @files.route("/huge")
    def huge(request: Any) -> bytes:
        return b"x" * (MAX_ATTACHMENT + 1)

    @files.route("/broken")
    def broken(request: Any) -> bytes:
        request.setResponseCode(503)
        return b""

    @files.route("/gone")
    def gone(request: Any) -> bytes:
        request.setResponseCode(404)
        return b""

    http = StubTreq(files.resource())
    api = WeComAPI(WECOM, Clock(), http=http)
    got: dict[str, Any] = {}
    for name in ("small", "huge", "broken", "gone"):
        api.fetch({"option": {"url": f"http://files/{name}"}}).addCallback(lambda r, n=name: got.__setitem__(n, r))
    api.fetch({"option": {"data": "SU1BR0U="}}).addCallback(lambda r: got.__setitem__("b64", r))
    api.fetch({"option": {"data": "%%%"}}).addCallback(lambda r: got.__setitem__("bad", r))
    http.flush()
    assert (got["small"].outcome, got["small"].answer) == (ob.OK, b"IMAGE")
    assert got["huge"].outcome == ob.PERMANENT and "10 MiB" in got["huge"].detail
    assert got["broken"].outcome == ob.RETRY and got["gone"].outcome == ob.PERMANENT
    assert (got["b64"].outcome, got["b64"].answer) == (ob.OK, b"IMAGE")
    assert got["bad"].outcome == ob.PERMANENT
