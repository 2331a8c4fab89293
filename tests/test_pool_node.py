"""The warm pool with real Node processes, real sockets and the real router."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.address import IPv4Address

from libchat.core.library import ProgramLibrary
from libchat.runtimes.pool import WarmPool
from libchat.core.router import Router
from libchat.runtimes.node.runner import NodeRuntime
from libchat.runtimes.warmable import InstanceState
from libchat.testing import FakeUpstream, MemoryStore

from .helpers import FIXTURES

TIMEOUT = 15.0


class Upstream(FakeUpstream):
    """A FakeUpstream whose events can be awaited."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting: list[tuple[int, str, defer.Deferred[dict[str, Any]]]] = []

    def deliver(self, event: dict[str, Any]) -> None:
        super().deliver(event)
        for item in list(self.waiting):
            if event["event_type"] == item[0] and event.get("dialog_id") == item[1]:
                self.waiting.remove(item)
                item[2].callback(event)

    def next(self, etype: int, dialog_id: str) -> defer.Deferred[dict[str, Any]]:
        d: defer.Deferred[dict[str, Any]] = defer.Deferred()
        self.waiting.append((etype, dialog_id, d))
        return d.addTimeout(TIMEOUT, reactor)


class Server:
    def __init__(self, programs: Path, warm: int, max_programs: int = 50) -> None:
        self.library = ProgramLibrary([programs], now=reactor.seconds)
        api = IPv4Address("TCP", "127.0.0.1", 9)  # never called by these programs
        self.runtime = NodeRuntime(reactor, self.library, api_address=lambda: api,
                                   kill_grace=2.0)
        self.pool = WarmPool(self.runtime, self.library, reactor, default_size=warm,
                             max_instances=max_programs, interval=0.01)
        self.router = Router(reactor, self.library, self.pool, MemoryStore(),
                             max_programs=max_programs, kill_grace=2.0)
        self.up = Upstream()
        self.router.attach(self.up)
        self.pool.startService()

    def ask(self, dialog_id: str, program: str, content: str = "hi") -> Any:
        d = self.up.next(2001, dialog_id)
        answer = self.router.receive(self.up, {
            "event_type": 1001, "dialog_id": dialog_id, "user_id": "u1",
            "message_id": f"{dialog_id}-m", "intent": program,
            "messages": {"content": content, "attachments": []}})
        assert answer.ok, answer
        return d.addCallback(lambda e: json.loads(e["messages"]["content"]))

    def close(self, dialog_id: str) -> defer.Deferred[dict[str, Any]]:
        d = self.up.next(2002, dialog_id)
        self.router.receive(self.up, {"event_type": 1002, "dialog_id": dialog_id,
                                      "user_id": "u1"})
        return d

    def idle(self, program: str) -> list[Any]:
        return list(self.pool._idle.get(program, ()))

    def stop(self) -> defer.Deferred[Any]:
        d = self.pool.stopService()
        d.addBoth(lambda _: self.router.stop())
        return d


def program(root: Path, name: str, warm: int | None = None) -> None:
    d = root / name
    d.mkdir(parents=True)
    shutil.copy(FIXTURES / "pid" / "pid.js", d / f"{name}.js")
    if warm is not None:
        (d / "package.json").write_text(json.dumps({"libchat": {"warm": warm}}))


@pytest.fixture
def serve() -> Iterator[Any]:
    """``serve(programs, warm, max_programs=50)``: a started Server, stopped
    after the test with every instance gone."""
    made: list[Server] = []

    def make(programs: Path, warm: int, max_programs: int = 50) -> Server:
        made.append(Server(programs, warm, max_programs))
        return made[-1]

    yield make
    for s in made:
        pytest_twisted.blockon(s.stop())
        assert s.runtime.live() == []


@pytest_twisted.inlineCallbacks
def test_warm_instance_answers_the_first_message_and_its_token_waits_for_binding(
        tmp_path: Path, serve: Any) -> Any:
    program(tmp_path, "pid")
    s = serve(tmp_path, warm=1)
    yield s.pool.filled("pid").addTimeout(TIMEOUT, reactor)
    [warm] = s.idle("pid")
    assert warm.state is InstanceState.RUNNING and warm.dialog_id == ""
    assert s.router.token_info(warm.token) is None  # idle: not valid yet
    reply = yield s.ask("d1", "pid")
    assert reply["pid"] == warm.pid
    assert warm.dialog_id == "d1" and warm.owner is s.router
    info = s.router.token_info(warm.token)
    assert (info.dialog_id, info.user_id, info.program) == ("d1", "u1", "pid")
    yield s.close("d1")


@pytest_twisted.inlineCallbacks
def test_each_dialog_gets_a_fresh_instance_socket_and_token(
        tmp_path: Path, serve: Any) -> Any:
    program(tmp_path, "pid")
    s = serve(tmp_path, warm=2)
    seen: list[tuple[Any, ...]] = []
    for n in range(4):
        yield s.pool.filled("pid").addTimeout(TIMEOUT, reactor)
        pooled = s.idle("pid")[0]
        reply = yield s.ask(f"d{n}", "pid")
        assert reply["pid"] == pooled.pid
        seen.append((pooled.instance_id, pooled.pid, pooled.token, pooled.socket_path))
        yield s.close(f"d{n}")  # its instance is stopped, never pooled again
    for column in zip(*seen):
        assert len(set(column)) == 4, column
    assert not any(i.instance_id in {x[0] for x in seen} for i in s.idle("pid"))


@pytest_twisted.inlineCallbacks
def test_the_pool_refills_after_a_hand_out(tmp_path: Path, serve: Any) -> Any:
    program(tmp_path, "pid")
    s = serve(tmp_path, warm=2)
    yield s.pool.filled("pid").addTimeout(TIMEOUT, reactor)
    before = {i.instance_id for i in s.idle("pid")}
    yield s.ask("d1", "pid")
    assert len(s.idle("pid")) >= 1
    yield s.pool.filled("pid").addTimeout(TIMEOUT, reactor)
    after = {i.instance_id for i in s.idle("pid")}
    assert len(after) == 2 and len(after - before) == 1
    yield s.close("d1")


@pytest_twisted.inlineCallbacks
def test_package_json_warm_overrides_the_default(tmp_path: Path, serve: Any) -> Any:
    program(tmp_path, "big", warm=3)
    program(tmp_path, "plain")
    program(tmp_path, "never", warm=0)
    s = serve(tmp_path, warm=1)
    yield defer.gatherResults([s.pool.filled(p) for p in ("big", "plain")]).addTimeout(
        TIMEOUT, reactor)
    assert s.pool.sizes() == {"big": 3, "plain": 1}
    # a program with "warm": 0 starts cold, and still works
    reply = yield s.ask("d1", "never")
    assert reply["content"] == "hi"
    yield s.close("d1")


@pytest_twisted.inlineCallbacks
def test_warm_instances_count_against_max_programs_and_yield_to_dialogs(
        tmp_path: Path, serve: Any) -> Any:
    program(tmp_path, "pid", warm=2)
    program(tmp_path, "other")
    s = serve(tmp_path, warm=0, max_programs=2)
    yield s.pool.filled("pid").addTimeout(TIMEOUT, reactor)
    assert len(s.runtime.live()) == 2  # the limit is reached by warm instances alone
    reply = yield s.ask("d1", "other")  # a dialog still gets its program
    assert reply["content"] == "hi"
    assert len(s.idle("pid")) == 1
    yield s.close("d1")


@pytest_twisted.inlineCallbacks
def test_twistd_options_wire_the_pool_and_the_spawn_limit(tmp_path: Path) -> Any:
    """``--warm 1 --spawn-concurrency 2`` through makeService: a front client's
    first message of a new dialog is answered by the pre-started process."""
    from .serving import Server as TapServer
    from .serving import message

    s = TapServer(tmp_path, "--warm", "1", "--spawn-concurrency", "2",
                  "--web", "tcp:0:interface=127.0.0.1")
    s.start()
    try:
        runtime = s.service.runtime
        assert runtime.gate.limit == 2
        [pool] = [c for c in s.service if isinstance(c, WarmPool)]
        assert pool.runtime is runtime
        yield pool.filled("pid").addTimeout(TIMEOUT, reactor)
        [warm] = list(pool._idle["pid"])
        client = yield s.client()
        client.send(message("hi", intent="pid"))
        reply = yield client.next_event(reactor, TIMEOUT)
        assert json.loads(reply["messages"]["content"])["pid"] == warm.pid
    finally:
        yield s.stop()
    assert runtime.live() == []
