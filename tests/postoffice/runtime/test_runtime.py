"""The postoffice runtime against FakeHub, on a task.Clock."""

from __future__ import annotations

from typing import Any

from twisted.internet import task
from zope.interface.verify import verifyObject

from libchat.doors.postoffice.seam import IHub, IHubListener
from libchat.interfaces import IInstance, IRuntime
from libchat.runtimes.postoffice.runtime import PostofficeRuntime
from libchat.runtimes.postoffice.testing import FakeHub


class Owner:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def instanceConnected(self, i: Any) -> None:
        self.events.append("connected")

    def instanceEvent(self, i: Any, e: dict) -> None:
        self.events.append(e)

    def instanceGone(self, i: Any, connected: bool, detail: str) -> None:
        self.events.append(("gone", connected))


class Program:
    def __init__(self, name: str, section: dict) -> None:
        self.name, self.section, self.directory = name, section, "."


def make(section: dict | None = None) -> tuple[task.Clock, FakeHub, PostofficeRuntime]:
    clock, hub = task.Clock(), FakeHub()
    rt = PostofficeRuntime(clock, hub)
    assert rt.check(Program("weather", section or {"runtime": "postoffice",
                                                   "client": "/service/acme/weather"})) is None
    return clock, hub, rt


def msg(text: str = "北京天气", mid: str = "m1") -> dict:
    return {"event_type": 1001, "dialog_id": "d1", "user_id": "u1", "message_id": mid,
            "messages": {"content": text, "attachments": []}}


def test_fakes_verify() -> None:
    clock, hub, rt = make()
    assert verifyObject(IHub, hub)
    assert verifyObject(IRuntime, rt) and verifyObject(IHubListener, rt)
    hub.connect("/service/acme/weather")
    assert verifyObject(IInstance, rt.start("weather", "d1", "u1", Owner()))


def test_unavailable_without_hub() -> None:
    rt = PostofficeRuntime(task.Clock(), None)
    assert rt.check(Program("w", {"client": "/service/x"})) == "no --postoffice listener"
    assert rt.counts("w") is False


def test_single_turn_envelope_and_reply() -> None:
    clock, hub, rt = make()
    clock.advance(5)
    hub.connect("/service/acme/weather_1")
    owner = Owner()
    i = rt.start("weather", "d1", "u1", owner)
    i.send(msg())
    assert hub.sent == [{"from": "/libchat/dialog/d1", "to": "/service/acme/weather_1",
                         "subject": "dialog d1", "content": "北京天气", "type": "msg",
                         "createTime": 5000, "attachments": [],
                         "libchat": {"dialog_id": "d1", "user_id": "u1",
                                     "message_id": "m1"}}]
    hub.reply("/service/acme/weather_1", "/libchat/dialog/d1", "北京的天气：晴天，温度25°C")
    assert owner.events[0] == "connected"
    assert owner.events[1]["event_type"] == 2001
    assert owner.events[1]["messages"]["content"] == "北京的天气：晴天，温度25°C"
    assert owner.events[2] == {"event_type": 2002, "dialog_id": "d1", "user_id": "u1"}
    assert owner.events[3] == ("gone", True)


def test_least_loaded_and_sticky() -> None:
    clock, hub, rt = make({"client": "/service/acme/weather", "turns": "multi"})
    hub.connect("/service/acme/weather_1")
    hub.connect("/service/acme/weather_2")
    hub.connect("/service/acme/weatherX")  # not served
    a = rt.start("weather", "a", "u", Owner())
    b = rt.start("weather", "b", "u", Owner())
    assert {a.bound, b.bound} == {"/service/acme/weather_1", "/service/acme/weather_2"}
    first = a.bound
    a.send(dict(msg(), dialog_id="a"))
    a.send(dict(msg(mid="m2"), dialog_id="a"))
    assert [s["to"] for s in hub.sent] == [first, first]


def test_spoofed_reply_from_other_client_ignored() -> None:
    clock, hub, rt = make()
    hub.connect("/service/acme/weather_1")
    owner = Owner()
    rt.start("weather", "d1", "u1", owner).send(msg())
    hub.reply("/service/acme/weather_2", "/libchat/dialog/d1", "nope")
    assert owner.events == ["connected"]


def test_waits_then_program_failed() -> None:
    clock, hub, rt = make({"client": "/service/acme/weather", "wait": 3})
    owner = Owner()
    rt.start("weather", "d1", "u1", owner).send(msg())
    clock.advance(2.9)
    assert owner.events == []
    clock.advance(0.2)
    assert owner.events == [("gone", False)]


def test_client_connecting_within_wait_gets_queued_message() -> None:
    clock, hub, rt = make()
    owner = Owner()
    rt.start("weather", "d1", "u1", owner).send(msg())
    clock.advance(1)
    hub.connect("/service/acme/weather")
    assert owner.events == ["connected"] and hub.sent[0]["content"] == "北京天气"
    clock.advance(20)
    assert owner.events == ["connected"]


def test_bound_client_gone_is_program_exited() -> None:
    clock, hub, rt = make()
    hub.connect("/service/acme/weather")
    owner = Owner()
    rt.start("weather", "d1", "u1", owner).send(msg())
    hub.disconnect("/service/acme/weather")
    assert owner.events == ["connected", ("gone", True)]


def test_state_2003_declines_with_user_message() -> None:
    clock, hub, rt = make()
    hub.connect("/service/acme/weather")
    owner = Owner()
    rt.start("weather", "d1", "u1", owner).send(msg("上海天气"))
    hub.reply("/service/acme/weather", "/libchat/dialog/d1", "", state=2003)
    declined = owner.events[1]
    assert declined["event_type"] == 2003 and declined["message_id"] == "m1"
    assert declined["messages"]["content"] == "上海天气"
    assert owner.events[2] == ("gone", True)


def test_multi_turn_state_2002_and_object_content() -> None:
    clock, hub, rt = make({"client": "/service/acme/weather", "turns": "multi"})
    hub.connect("/service/acme/weather")
    owner = Owner()
    rt.start("weather", "d1", "u1", owner).send(msg())
    att = {"type": "image", "url": "http://x/y.png"}
    hub.reply("/service/acme/weather", "/libchat/dialog/d1",
              {"content": "one", "attachments": [att]})
    assert owner.events[1]["messages"] == {"content": "one", "attachments": [att]}
    assert len(owner.events) == 2  # still bound
    hub.reply("/service/acme/weather", "/libchat/dialog/d1", "bye", state=2002)
    assert owner.events[2]["messages"]["content"] == "bye"
    assert owner.events[3]["event_type"] == 2002 and owner.events[4] == ("gone", True)


def test_1002_reaches_client_as_state_envelope() -> None:
    clock, hub, rt = make({"client": "/service/acme/weather", "turns": "multi"})
    hub.connect("/service/acme/weather")
    i = rt.start("weather", "d1", "u1", Owner())
    i.send({"event_type": 1002, "dialog_id": "d1", "user_id": "u1"})
    assert hub.sent[-1]["state"] == 1002 and hub.sent[-1]["type"] == "msg"
