"""WarmPool with a task.Clock and a fake warmable runtime: sizes, refill,
back-off, room under --max-programs, hand-out through IRuntime.start, shutdown."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from zope.interface import implementer
from zope.interface.verify import verifyObject

from libchat.core.library import ProgramLibrary
from libchat.interfaces import IInstanceOwner, IRuntime
from libchat.runtimes.pool import WarmPool
from libchat.runtimes.warmable import InstanceState, IWarmableRuntime, IWarmInstance


@implementer(IWarmInstance)
class PoolInstance:
    """A warmable instance whose program is the test."""

    def __init__(self, runtime: PoolRuntime, program: str, dialog_id: str, owner: Any,
                 n: int) -> None:
        self.runtime, self.program, self.owner = runtime, program, owner
        self.dialog_id, self.user_id = dialog_id, ""
        self.instance_id = f"w{n}"
        self.token, self.pid = f"t{n}", None
        self.state = InstanceState.STARTING
        self.stopped = False

    def bind(self, dialog_id: str, user_id: str, owner: IInstanceOwner) -> None:
        assert not self.dialog_id, "bound twice"
        self.dialog_id, self.user_id, self.owner = dialog_id, user_id, owner

    def send(self, event: dict[str, Any]) -> None:
        pass

    def connect(self) -> None:
        self.state = InstanceState.RUNNING
        self.owner.instanceConnected(self)

    def exit(self, detail: str = "exit code 1") -> None:
        was = self.state
        self.state = InstanceState.EXITED
        self.runtime.running.remove(self)
        self.owner.instanceGone(self, was is InstanceState.RUNNING, detail)

    def stop(self, drain: float = 0.0) -> defer.Deferred[None]:
        self.stopped = True
        if self.state is not InstanceState.EXITED:
            self.exit("signal 15")
        return defer.succeed(None)


@implementer(IWarmableRuntime)
class PoolRuntime:
    def __init__(self) -> None:
        self.running: list[PoolInstance] = []
        self.started: list[PoolInstance] = []
        self.cold: list[PoolInstance] = []  # started for a dialog, not pre-started
        self.flow: list[str] = []
        self._n = itertools.count(1)

    def prestart(self, program: str, owner: Any) -> PoolInstance:
        return self._new(program, "", owner)

    def start(self, program: str, dialog_id: str, user_id: str, owner: Any) -> PoolInstance:
        inst = self._new(program, dialog_id, owner)
        inst.user_id = user_id
        self.cold.append(inst)
        return inst

    def _new(self, program: str, dialog_id: str, owner: Any) -> PoolInstance:
        inst = PoolInstance(self, program, dialog_id, owner, next(self._n))
        self.started.append(inst)
        self.running.append(inst)
        return inst

    def counts(self, program: str) -> bool:
        return True

    def pauseEvents(self) -> None:
        self.flow.append("pause")

    def resumeEvents(self) -> None:
        self.flow.append("resume")

    def stopAll(self) -> defer.Deferred[Any]:
        return defer.DeferredList([i.stop() for i in list(self.running)])

    def live(self) -> list[PoolInstance]:
        return list(self.running)

    def of(self, program: str) -> list[PoolInstance]:
        return [i for i in self.running if i.program == program]


def make_library(root: Path, clock: Clock, **warm: int | None) -> ProgramLibrary:
    for name, size in warm.items():
        d = root / name
        d.mkdir(exist_ok=True)
        (d / f"{name}.js").write_text("")
        rules = {} if size is None else {"warm": size}
        (d / "package.json").write_text(json.dumps({"libchat": rules}))
    return ProgramLibrary([root])


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_pool(tmp_path: Path, clock: Clock, default: int = 2, max_instances: int = 100,
              **warm: int | None) -> tuple[WarmPool, PoolRuntime]:
    runtime = PoolRuntime()
    pool = WarmPool(runtime, make_library(tmp_path, clock, **warm), clock,
                    default_size=default, max_instances=max_instances, interval=0.1)
    pool.startService()
    return pool, runtime


def test_fills_to_warm_size_one_spawn_per_interval(tmp_path: Path, clock: Clock) -> None:
    pool, runtime = make_pool(tmp_path, clock, default=3, echo=None)
    clock.advance(0)
    assert len(runtime.started) == 1
    clock.advance(0.05)
    assert len(runtime.started) == 1  # the refill rate is bounded
    clock.advance(0.05)
    assert len(runtime.started) == 2
    clock.pump([0.1] * 10)
    assert len(runtime.started) == 3
    assert pool.idle("echo") == 3


def test_package_json_overrides_warm(tmp_path: Path, clock: Clock) -> None:
    _pool, runtime = make_pool(tmp_path, clock, default=2, big=4, off=0, plain=None)
    clock.pump([0.1] * 30)
    assert {p: len(runtime.of(p)) for p in ("big", "off", "plain")} == \
        {"big": 4, "off": 0, "plain": 2}


def test_take_hands_out_the_oldest_once_and_refills(tmp_path: Path, clock: Clock) -> None:
    pool, runtime = make_pool(tmp_path, clock, default=2, echo=None)
    clock.pump([0.1] * 5)
    first, second = runtime.of("echo")
    first.connect()
    assert pool.take("echo") is first
    assert pool.take("echo") is second
    assert pool.take("echo") is None
    clock.pump([0.1] * 5)
    fresh = runtime.of("echo")[2:]
    assert len(fresh) == 2 and first not in fresh and second not in fresh
    # a handed-out instance that ends is not the pool's business
    first.exit("exit code 0")
    clock.pump([0.1] * 5)
    assert pool.idle("echo") == 2 and len(runtime.started) == 4


def test_an_idle_instance_that_dies_is_replaced_with_growing_backoff(
        tmp_path: Path, clock: Clock, logged: Any) -> None:
    logged.allow("idle warm instance")
    pool, runtime = make_pool(tmp_path, clock, default=1, echo=None)
    pool.backoff, pool.max_backoff = 0.5, 2.0
    clock.advance(0)
    delays = []
    for _ in range(5):
        runtime.of("echo")[0].exit()
        started = len(runtime.started)
        waited = 0.0
        while len(runtime.started) == started:
            clock.advance(0.25)
            waited += 0.25
            assert waited < 10, "never replaced"
        delays.append(waited)
    assert delays == [0.5, 1.0, 2.0, 2.0, 2.0]
    warnings = [e for e in logged.events if "replacing it in" in e.get("log_format", "")]
    assert [e["delay"] for e in warnings] == delays


def test_pool_only_fills_free_room(tmp_path: Path, clock: Clock) -> None:
    pool, runtime = make_pool(tmp_path, clock, default=5, max_instances=3, a=None, b=None)
    clock.pump([0.1] * 20)
    assert len(runtime.running) == 3
    assert pool.room() == 0


def test_make_room_evicts_an_idle_instance_of_another_program(
        tmp_path: Path, clock: Clock) -> None:
    pool, runtime = make_pool(tmp_path, clock, default=2, max_instances=4, a=None, b=None)
    clock.pump([0.1] * 20)
    assert pool.sizes() == {"a": 2, "b": 2}
    assert pool.make_room("b") is True
    assert pool.sizes() == {"a": 1, "b": 2}
    assert [i.program for i in runtime.started if i.stopped] == ["a"]
    assert pool.room() == 1  # the dialog may start now


def test_removed_program_loses_its_pool(tmp_path: Path, clock: Clock) -> None:
    pool, runtime = make_pool(tmp_path, clock, default=2, echo=None)
    clock.pump([0.1] * 5)
    (tmp_path / "echo" / "echo.js").unlink()
    pool.library.scan()  # the library's rescanner does this every 5 s
    clock.pump([1.0] * 2)
    assert runtime.running == []
    assert pool.idle("echo") == 0


def test_filled_fires_when_the_pool_is_connected(tmp_path: Path, clock: Clock) -> None:
    pool, runtime = make_pool(tmp_path, clock, default=2, echo=None)
    d = pool.filled("echo")
    clock.pump([0.1] * 5)
    runtime.of("echo")[0].connect()
    assert not d.called
    runtime.of("echo")[1].connect()
    assert d.called


def test_stop_stops_idle_instances_and_never_refills(tmp_path: Path, clock: Clock) -> None:
    pool, runtime = make_pool(tmp_path, clock, default=2, echo=None)
    clock.pump([0.1] * 5)
    pool.take("echo")  # handed out: the router stops it, not the pool
    d = pool.stopService()
    assert d.called
    assert len(runtime.running) == 1 and not runtime.running[0].stopped
    clock.pump([1.0] * 5)
    assert len(runtime.started) == 2
    assert clock.getDelayedCalls() == []


class Owner:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def instanceConnected(self, instance: Any) -> None:
        self.events.append(("connected", instance))

    def instanceEvent(self, instance: Any, event: dict[str, Any]) -> None:
        self.events.append(("event", instance))

    def instanceGone(self, instance: Any, connected: bool, detail: str) -> None:
        self.events.append(("gone", instance))


def test_the_pool_is_a_runtime_over_a_warmable_runtime(tmp_path: Path, clock: Clock) -> None:
    pool, runtime = make_pool(tmp_path, clock, default=1, echo=None)
    assert verifyObject(IRuntime, pool)
    assert verifyObject(IWarmableRuntime, runtime)
    clock.advance(0)
    [warm] = runtime.started
    assert verifyObject(IWarmInstance, warm)


def test_start_binds_an_idle_instance_to_the_dialog(tmp_path: Path, clock: Clock) -> None:
    pool, runtime = make_pool(tmp_path, clock, default=1, echo=None)
    clock.advance(0)
    [warm] = runtime.started
    warm.connect()
    owner = Owner()
    got = pool.start("echo", "d1", "u1", owner)  # type: ignore[arg-type]
    assert got is warm and runtime.cold == []
    assert (warm.dialog_id, warm.user_id, warm.owner) == ("d1", "u1", owner)
    assert pool.idle("echo") == 0


def test_start_without_an_idle_instance_delegates_to_the_inner_runtime(
        tmp_path: Path, clock: Clock) -> None:
    pool, runtime = make_pool(tmp_path, clock, default=0, echo=None)
    owner = Owner()
    got: Any = pool.start("echo", "d1", "u1", owner)  # type: ignore[arg-type]
    assert runtime.cold == [got]
    assert (got.dialog_id, got.user_id, got.owner) == ("d1", "u1", owner)


def test_start_at_the_limit_evicts_an_idle_instance_first(tmp_path: Path, clock: Clock) -> None:
    pool, runtime = make_pool(tmp_path, clock, default=0, max_instances=2, a=2, b=0)
    clock.pump([0.1] * 10)
    assert pool.sizes() == {"a": 2} and pool.room() == 0
    got = pool.start("b", "d1", "u1", Owner())  # type: ignore[arg-type]
    assert runtime.cold == [got]
    assert [i.program for i in runtime.started if i.stopped] == ["a"]
    assert len(runtime.running) == 2


def test_flow_control_and_counts_pass_through(tmp_path: Path, clock: Clock) -> None:
    pool, runtime = make_pool(tmp_path, clock, default=0, echo=None)
    pool.pauseEvents()
    pool.resumeEvents()
    assert runtime.flow == ["pause", "resume"]
    assert pool.counts("echo") is True


def test_stop_all_stops_everything_and_never_refills(tmp_path: Path, clock: Clock) -> None:
    pool, runtime = make_pool(tmp_path, clock, default=2, echo=None)
    clock.pump([0.1] * 5)
    pool.start("echo", "d1", "u1", Owner())  # type: ignore[arg-type]
    d = pool.stopAll()
    assert d.called
    assert runtime.running == [] and pool.sizes() == {}
    clock.pump([1.0] * 5)
    assert len(runtime.started) == 2
    assert clock.getDelayedCalls() == []
