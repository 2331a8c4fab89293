"""RuntimeSwitch: one IRuntime in front of every runtime, chosen by the
program's declared ``"libchat": {"runtime": ...}`` (default ``node``); a
program naming a runtime that does not exist is never served."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from libchat.core.library import ProgramLibrary
from libchat.core.router import Router
from libchat.interfaces import IRuntime, NoRoom
from libchat.runtimes.switch import RuntimeSwitch
from libchat.testing import FakeRuntime, FakeUpstream, MemoryStore


def program(root: Path, name: str, **rules: Any) -> None:
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{name}.js").write_text("")
    (d / "package.json").write_text(json.dumps({"libchat": rules}))


def library(root: Path) -> ProgramLibrary:
    return ProgramLibrary([root], now=Clock().seconds, rescan=0)


def test_dispatches_by_the_declared_runtime(tmp_path: Path) -> None:
    program(tmp_path, "plain")
    program(tmp_path, "agent", runtime="hosted")
    lib = library(tmp_path)
    node, hosted = FakeRuntime(), FakeRuntime()
    switch = RuntimeSwitch(lib, {"node": node, "hosted": hosted})
    assert verifyObject(IRuntime, switch)
    plain = lib.get("plain")
    assert plain is not None and plain.runtime == "node"  # the default
    a = switch.start("plain", "d1", "u1", object())  # type: ignore[arg-type]
    b = switch.start("agent", "d2", "u1", object())  # type: ignore[arg-type]
    assert node.started == [a] and hosted.started == [b]
    assert switch.counts("agent") is True


def test_flow_control_and_stop_all_reach_every_runtime(tmp_path: Path) -> None:
    program(tmp_path, "plain")
    node, other = FakeRuntime(), FakeRuntime()
    switch = RuntimeSwitch(library(tmp_path), {"node": node, "other": other})
    switch.pauseEvents()
    switch.resumeEvents()
    assert node.flow == other.flow == ["pause", "resume"]
    switch.start("plain", "d1", "u1", object())  # type: ignore[arg-type]
    d = switch.stopAll()
    assert d.called and node.live == []


def test_a_program_naming_an_unknown_runtime_is_logged_and_never_chosen(
        tmp_path: Path, logged: Any) -> None:
    logged.allow("unknown runtime")
    program(tmp_path, "dify", runtime="dify", keywords=["agent"])
    program(tmp_path, "plain")
    lib = library(tmp_path)
    switch = RuntimeSwitch(lib, {"node": FakeRuntime()})
    assert set(lib.programs()) == {"plain"}
    assert lib.resolve("ask the agent", intent="dify") is None
    assert lib.resolve("ask the agent") is None
    refusals = [e for e in logged.events if "unknown runtime" in e.get("log_format", "")]
    assert len(refusals) == 1 and refusals[0]["runtime"] == "dify"
    lib.programs()  # rescans do not repeat the error
    assert len([e for e in logged.events if "unknown runtime" in e.get("log_format", "")]) == 1
    # a message for it is an unknown intent to the router: 2003, nothing started
    router = Router(Clock(), lib, switch, MemoryStore())
    router.start()
    up = FakeUpstream()
    router.attach(up)
    router.receive(up, {"event_type": 1001, "dialog_id": "d1", "user_id": "u1",
                        "message_id": "m1", "intent": "dify",
                        "messages": {"content": "hi", "attachments": []}})
    assert up.types() == [2003]
    assert switch.runtimes["node"].started == []  # type: ignore[attr-defined]


def test_without_a_switch_the_library_serves_any_runtime(tmp_path: Path) -> None:
    program(tmp_path, "dify", runtime="dify")
    lib = library(tmp_path)
    dify = lib.get("dify")
    assert dify is not None and dify.runtime == "dify"
    # a switch guards a library that lists more than it has (told so by
    # someone else): a clear refusal, never a crash
    switch = RuntimeSwitch(lib, {"node": FakeRuntime()})
    lib.accept_runtimes({"node", "dify"})
    with pytest.raises(NoRoom, match="unknown runtime 'dify'"):
        switch.start("dify", "d1", "u1", object())  # type: ignore[arg-type]


def test_a_runtime_that_is_not_a_name_makes_the_program_ignored(
        tmp_path: Path, logged: Any) -> None:
    logged.allow('"runtime" must be a name')
    program(tmp_path, "odd", runtime=["node"])
    assert library(tmp_path).programs() == {}


def test_the_switch_needs_the_default_runtime(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'node'"):
        RuntimeSwitch(library(tmp_path), {"hosted": FakeRuntime()})
