"""What every door may rely on from an IRouter, run against the verified fake
(:class:`libchat.testing.FakeRouter`) and the real router (on a FakeRuntime, a
MemoryStore and a task.Clock) alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from libchat.core.library import ProgramLibrary
from libchat.core.router import Router
from libchat.interfaces import IRouter, IRouterStats, Receipt
from libchat.protocol import codes
from libchat.storage.store import MemoryStore
from libchat.testing import FakeRouter, FakeRuntime, FakeUpstream

from ..helpers import make_program


def message(content: str = "echo hi", dialog_id: str = "d1", user_id: str = "u1",
            message_id: str = "m1") -> dict[str, Any]:
    return {"event_type": codes.USER_MESSAGE, "dialog_id": dialog_id, "user_id": user_id,
            "message_id": message_id, "messages": {"content": content, "attachments": []}}


class Harness:
    """A router under test, an attached frame upstream, and a way to make the
    dialog's program reply."""

    router: Any
    up: FakeUpstream

    def reply(self, dialog_id: str, content: str) -> None:
        raise NotImplementedError


class RouterContract:
    """Mixed into one test class per implementation, which defines ``make``."""

    def make(self, tmp_path: Path) -> Harness:
        raise NotImplementedError

    @pytest.fixture
    def h(self, tmp_path: Path) -> Harness:
        h = self.make(tmp_path)
        h.up = FakeUpstream("frame")
        h.router.attach(h.up)
        return h

    def test_provides_irouter_and_irouterstats(self, h: Harness) -> None:
        assert verifyObject(IRouter, h.router)
        assert verifyObject(IRouterStats, h.router)

    def test_a_first_message_makes_the_dialog_and_its_receipt_has_the_seq(
            self, h: Harness) -> None:
        receipt = h.router.receive(h.up, message())
        assert isinstance(receipt, Receipt) and receipt.ok and receipt.seq == 1
        info = h.router.info("d1")
        assert (info.dialog_id, info.user_id, info.channel) == ("d1", "u1", "frame")
        assert info.seq >= 1
        second = h.router.receive(h.up, message("echo again", message_id="m2"))
        assert second.ok and second.seq > receipt.seq

    def test_another_users_message_is_a_2004_and_records_nothing(self, h: Harness) -> None:
        h.router.receive(h.up, message())
        before = h.router.info("d1").seq
        receipt = h.router.receive(h.up, message(user_id="mallory", message_id="m2"))
        assert not receipt.ok and receipt.seq is None
        assert (receipt.error["event_type"], receipt.error["code"]) == (2004, codes.BAD_REQUEST)
        assert h.router.info("d1").seq == before

    def test_a_dialog_stays_with_its_channel(self, h: Harness) -> None:
        h.router.receive(h.up, message())
        web = FakeUpstream("web")
        h.router.attach(web)
        receipt = h.router.receive(web, message(message_id="m2"))
        assert receipt.error["code"] == codes.BAD_REQUEST

    def test_open_makes_an_empty_dialog_once(self, h: Harness) -> None:
        info = h.router.open("s1", "alice", "web", "echo")
        assert (info.dialog_id, info.user_id, info.channel, info.intent, info.seq) == (
            "s1", "alice", "web", "echo", 0)
        assert h.router.info("s1") == info
        with pytest.raises(ValueError):
            h.router.open("s1", "alice", "web")

    def test_close_of_an_unknown_dialog_answers_and_keeps_nothing(self, h: Harness) -> None:
        receipt = h.router.close(h.up, "never", "u1")
        assert receipt.ok and receipt.seq is None
        assert h.up.events[-1] == {"event_type": 2002, "dialog_id": "never", "user_id": "u1",
                                   "reason": codes.CLIENT_CLOSED}
        assert h.router.info("never") is None

    def test_close_records_a_client_closed_2002_under_the_receipts_seq(
            self, h: Harness) -> None:
        h.router.receive(h.up, message())
        receipt = h.router.close(h.up, "d1", "u1")
        assert receipt.ok and receipt.seq == h.router.info("d1").seq
        [ended] = h.router.replay("d1", after=receipt.seq - 1)
        assert (ended["event_type"], ended["reason"], ended["seq"]) == (
            2002, codes.CLIENT_CLOSED, receipt.seq)
        assert h.up.events[-1] == ended

    def test_replay_gives_the_events_exactly_as_delivered(self, h: Harness) -> None:
        seq = h.router.receive(h.up, message()).seq
        h.reply("d1", "hi there")
        delivered = h.up.events[-1]
        assert delivered["event_type"] == 2001 and delivered["seq"] > seq
        assert h.router.replay("d1", after=seq) == [delivered]
        first = h.router.replay("d1")[0]
        assert (first["event_type"], first["dialog_id"], first["user_id"], first["seq"]) == (
            1001, "d1", "u1", seq)

    def test_entries_are_the_transcript_without_ids_first_ones_with_limit(
            self, h: Harness) -> None:
        h.router.receive(h.up, message())
        h.reply("d1", "one")
        h.reply("d1", "two")
        entries = h.router.entries("d1")
        assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
        assert all("dialog_id" not in e and "user_id" not in e for e in entries)
        assert h.router.entries("d1", limit=1) == entries[:1]
        assert h.router.entries("d1", after=entries[-2]["seq"]) == entries[-1:]
        assert h.router.replay("d1", limit=1) == h.router.replay("d1")[-1:]

    def test_an_unknown_dialog_has_no_info_events_or_entries(self, h: Harness) -> None:
        assert h.router.info("nope") is None
        assert h.router.replay("nope") == [] and h.router.entries("nope") == []
        assert h.router.token_info("made-up") is None

    def test_replies_wait_for_an_absent_upstream_and_go_to_the_next(self, h: Harness) -> None:
        h.router.receive(h.up, message())
        h.up.connected = False
        h.router.detach(h.up)
        h.reply("d1", "kept")
        assert h.router.pending_count("frame") == 1
        late = FakeUpstream("frame")
        h.router.attach(late)
        assert [e["messages"]["content"] for e in late.events] == ["kept"]
        assert h.router.pending_count("frame") == 0


class TestFakeRouter(RouterContract):
    def make(self, tmp_path: Path) -> Harness:
        h = Harness()
        h.router = router = FakeRouter()
        h.reply = lambda dialog_id, content: router.reply(dialog_id, content)  # type: ignore
        return h


class TestRealRouter(RouterContract):
    def make(self, tmp_path: Path) -> Harness:
        clock = Clock()
        make_program(tmp_path / "programs", "echo", keywords=["echo"])
        runtime = FakeRuntime()
        router = Router(clock, ProgramLibrary([tmp_path / "programs"], now=clock.seconds),
                        runtime, MemoryStore())
        router.start()
        h = Harness()
        h.router = router

        def reply(dialog_id: str, content: str) -> None:
            [inst] = [i for i in runtime.live if i.dialog_id == dialog_id]
            inst.say({"event_type": 2001, "messages": {"content": content,
                                                       "attachments": []}})

        h.reply = reply  # type: ignore[method-assign]
        return h
