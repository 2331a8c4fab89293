"""The IRuntime/IInstance contract, run against the fake, the real Node
runtime, and the warm pool over the Node runtime.

Each implementation supplies a harness (``make_harness``): the runtime, a
program name, and the program's part where there is no real program (the
fake's instances are played by the harness: they connect and echo). The
contract is what the router relies on:

- instances provide IInstance, with unique ids and tokens;
- events sent before the instance is ready are handed over, in order;
- instanceConnected comes at most once and before any instanceEvent;
- instanceGone comes exactly once, and ``stop()``'s Deferred fires after it;
- ``stop()`` of a gone instance fires at once, ``send()`` to it never raises;
- while paused no instanceEvent is delivered; after resume it is;
- ``stopAll()`` ends every instance.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.internet.address import IPv4Address
from zope.interface import implementer
from zope.interface.verify import verifyObject

from libchat.core.library import ProgramLibrary
from libchat.interfaces import IInstance, IInstanceOwner, IRuntime
from libchat.runtimes.node.runner import NodeRuntime
from libchat.runtimes.pool import WarmPool
from libchat.testing import FakeInstance, FakeRuntime

ROOT = Path(__file__).resolve().parent.parent.parent
TIMEOUT = 15.0


@implementer(IInstanceOwner)
class Owner:
    """Records what a runtime reports; each kind can be awaited."""

    def __init__(self) -> None:
        self.log: list[tuple[str, Any]] = []
        self._waiting: list[tuple[str, defer.Deferred[Any]]] = []

    def _note(self, kind: str, value: Any) -> None:
        self.log.append((kind, value))
        for item in list(self._waiting):
            if item[0] == kind:
                self._waiting.remove(item)
                item[1].callback(value)

    def next(self, kind: str) -> defer.Deferred[Any]:
        """The next report of ``kind`` (bounded)."""
        d: defer.Deferred[Any] = defer.Deferred()
        self._waiting.append((kind, d))
        return d.addTimeout(TIMEOUT, reactor)

    def kinds(self) -> list[str]:
        return [k for k, _ in self.log]

    def instanceConnected(self, instance: IInstance) -> None:
        self._note("connected", instance)

    def instanceEvent(self, instance: IInstance, event: dict[str, Any]) -> None:
        self._note("event", event)

    def instanceGone(self, instance: IInstance, connected: bool, detail: str) -> None:
        self._note("gone", (connected, detail))


@defer.inlineCallbacks
def events(owner: Owner, n: int) -> Any:
    """The owner's first ``n`` instanceEvents, once it has them (bounded)."""
    while owner.kinds().count("event") < n:
        yield owner.next("event")
    return [v for k, v in owner.log if k == "event"]


def message(content: str, n: int = 1) -> dict[str, Any]:
    return {"event_type": 1001, "dialog_id": "d1", "user_id": "u1", "message_id": f"m{n}",
            "messages": {"content": content, "attachments": []}}


class Harness:
    """What a contract run needs of one implementation."""

    runtime: Any
    program = "echo"

    def started(self, instance: Any) -> None:
        """The program's part right after start (real programs: nothing)."""

    def sent(self, instance: Any) -> None:
        """The program's part after an event was sent (real programs: nothing)."""

    def quiet(self) -> defer.Deferred[None]:
        """Long enough for a real program to have answered if it could."""
        return task.deferLater(reactor, 0.3, lambda: None)

    def close(self) -> defer.Deferred[Any]:
        return defer.maybeDeferred(self.runtime.stopAll)


class RuntimeContract:
    """Mix into a test class that defines ``make_harness(tmp_path)``."""

    def make_harness(self, tmp_path: Path) -> Harness:
        raise NotImplementedError

    @pytest.fixture
    def h(self, tmp_path: Path) -> Iterator[Harness]:
        harness = self.make_harness(tmp_path)
        yield harness
        pytest_twisted.blockon(harness.close().addTimeout(TIMEOUT, reactor))

    def start(self, h: Harness, owner: Owner) -> Any:
        instance = h.runtime.start(h.program, "d1", "u1", owner)
        h.started(instance)
        return instance

    @pytest_twisted.inlineCallbacks
    def test_provides_the_interfaces_with_unique_ids_and_tokens(self, h: Harness) -> Any:
        assert verifyObject(IRuntime, h.runtime)
        assert isinstance(h.runtime.counts(h.program), bool)
        a, b = self.start(h, Owner()), self.start(h, Owner())
        assert verifyObject(IInstance, a) and verifyObject(IInstance, b)
        assert a.instance_id != b.instance_id and a.token != b.token
        assert a.program == h.program
        yield defer.gatherResults([a.stop(), b.stop()]).addTimeout(TIMEOUT, reactor)

    @pytest_twisted.inlineCallbacks
    def test_events_sent_before_ready_are_handed_over_in_order(self, h: Harness) -> Any:
        owner = Owner()
        instance = self.start(h, owner)
        instance.send(message("one", 1))
        instance.send(message("two", 2))
        h.sent(instance)
        got = yield events(owner, 2)
        assert [e["messages"]["content"] for e in got] == ["echo: one", "echo: two"]
        kinds = owner.kinds()
        assert kinds.count("connected") <= 1
        if "connected" in kinds:
            assert kinds.index("connected") < kinds.index("event")
        yield instance.stop().addTimeout(TIMEOUT, reactor)

    @pytest_twisted.inlineCallbacks
    def test_stop_fires_after_gone_which_comes_once(self, h: Harness) -> Any:
        owner = Owner()
        instance = self.start(h, owner)
        instance.send(message("hi"))
        h.sent(instance)
        yield events(owner, 1)
        gone_first: list[bool] = []
        d = instance.stop()
        d.addCallback(lambda _: gone_first.append("gone" in owner.kinds()))
        yield d.addTimeout(TIMEOUT, reactor)
        assert gone_first == [True]
        assert owner.kinds().count("gone") == 1
        connected, detail = next(v for k, v in owner.log if k == "gone")
        assert connected is True and isinstance(detail, str)
        again = instance.stop()
        assert again.called, "stop() of a gone instance waits"
        instance.send(message("late", 2))  # dropped, never raises
        assert owner.kinds().count("gone") == 1

    @pytest_twisted.inlineCallbacks
    def test_no_events_while_paused_and_all_after_resume(self, h: Harness) -> Any:
        owner = Owner()
        instance = self.start(h, owner)
        instance.send(message("hi"))
        h.sent(instance)
        yield events(owner, 1)  # connected and answering
        h.runtime.pauseEvents()
        try:
            instance.send(message("while paused", 2))
            h.sent(instance)
            yield h.quiet()
            assert owner.kinds().count("event") == 1, "an event arrived while paused"
        finally:
            h.runtime.resumeEvents()
        got = yield events(owner, 2)
        assert got[-1]["messages"]["content"] == "echo: while paused"
        yield instance.stop().addTimeout(TIMEOUT, reactor)

    @pytest_twisted.inlineCallbacks
    def test_stop_all_ends_every_instance(self, h: Harness) -> Any:
        owners = [Owner() for _ in range(3)]
        for o in owners:
            self.start(h, o)
        yield defer.maybeDeferred(h.runtime.stopAll).addTimeout(TIMEOUT, reactor)
        assert all(o.kinds().count("gone") == 1 for o in owners)


# -- the implementations ---------------------------------------------------------------


class FakeHarness(Harness):
    """The fake's instances are played here: they connect at once and echo."""

    def __init__(self) -> None:
        self.runtime = FakeRuntime()
        self._answered: dict[str, int] = {}

    def started(self, instance: FakeInstance) -> None:
        instance.connect()

    def sent(self, instance: FakeInstance) -> None:
        done = self._answered.get(instance.instance_id, 0)
        for event in instance.sent[done:]:
            instance.say({"event_type": 2001, "dialog_id": event["dialog_id"],
                          "user_id": event["user_id"],
                          "messages": {"content": f"echo: {event['messages']['content']}"}})
        self._answered[instance.instance_id] = len(instance.sent)

    def quiet(self) -> defer.Deferred[None]:
        return defer.succeed(None)


class NodeHarness(Harness):
    """The real Node runtime and the bundled echo program."""

    def __init__(self, tmp_path: Path, warm: int | None = None) -> None:
        programs = tmp_path / "programs"
        shutil.copytree(ROOT / "programs" / "echo", programs / "echo")
        if warm is not None:
            (programs / "echo" / "package.json").write_text(
                json.dumps({"libchat": {"warm": warm}}))
        self.library = ProgramLibrary([programs], now=reactor.seconds)
        api = IPv4Address("TCP", "127.0.0.1", 9)  # echo never calls the memory API
        self.node = NodeRuntime(reactor, self.library, api_address=lambda: api, kill_grace=2.0)
        self.runtime = self.node

    def close(self) -> defer.Deferred[Any]:
        d = defer.maybeDeferred(self.runtime.stopAll)

        def check(_: Any) -> None:
            assert self.node.live() == []
        return d.addCallback(check)


class PoolHarness(NodeHarness):
    """The warm pool over the Node runtime, filled before each test, so
    instances are handed out already connected."""

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path, warm=3)
        self.pool = WarmPool(self.node, self.library, reactor, max_instances=20, interval=0.01)
        self.runtime = self.pool
        self.pool.startService()

    def close(self) -> defer.Deferred[Any]:
        d = self.pool.stopService()
        d.addCallback(lambda _: super(PoolHarness, self).close())
        return d


class TestFakeRuntime(RuntimeContract):
    def make_harness(self, tmp_path: Path) -> Harness:
        return FakeHarness()


class TestNodeRuntime(RuntimeContract):
    def make_harness(self, tmp_path: Path) -> Harness:
        return NodeHarness(tmp_path)


class TestWarmPoolOverNode(RuntimeContract):
    def make_harness(self, tmp_path: Path) -> Harness:
        h = PoolHarness(tmp_path)
        pytest_twisted.blockon(h.pool.filled("echo").addTimeout(TIMEOUT, reactor))
        return h

    @pytest_twisted.inlineCallbacks
    def test_hands_out_a_connected_warm_instance(self, h: Harness) -> Any:
        assert isinstance(h, PoolHarness)
        before = {i.instance_id for i in h.pool._idle["echo"]}
        instance = self.start(h, Owner())
        assert instance.instance_id in before and instance.dialog_id == "d1"
        yield instance.stop().addTimeout(TIMEOUT, reactor)


class AgentHarness(Harness):
    """The agent runtime with an echoing client (no HTTP: tests/agents has those)."""

    def __init__(self, tmp_path: Path) -> None:
        from libchat.runtimes.agents.runtime import AgentRuntime
        from libchat.storage.memory import MemoryStore
        from tests.agents.fakes import ScriptedClient, echo

        (tmp_path / "echo").mkdir()
        (tmp_path / "echo" / "package.json").write_text(json.dumps(
            {"libchat": {"runtime": "dify", "api_key": "k"}}))
        self.runtime = AgentRuntime("dify", reactor, lambda *a: ScriptedClient(echo),
                                    MemoryStore())
        library = ProgramLibrary([tmp_path])
        library.accept_runtimes({"dify": self.runtime})
        assert library.get("echo") is not None

    def quiet(self) -> defer.Deferred[None]:
        return task.deferLater(reactor, 0.05, lambda: None)


class TestAgentRuntime(RuntimeContract):
    def make_harness(self, tmp_path: Path) -> Harness:
        return AgentHarness(tmp_path)
