"""The service tree tap builds: Twisted's own services, and the stop order."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.application import service
from twisted.internet import defer, reactor
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, ServerFactory
from twisted.internet.task import Clock

from libchat.tap import CollectorService, FlushService, LibchatService, Listener, StartupError

from .serving import Server, message


class FakePort:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 4242)

    def stopListening(self) -> None:
        self.log.append(f"{self.name} stops listening")


class FakeEndpoint:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    def listen(self, factory: Any) -> defer.Deferred[FakePort]:
        self.log.append(f"{self.name} listens")
        return defer.succeed(FakePort(self.name, self.log))


class FakeRouter:
    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.stopping: defer.Deferred[None] = defer.Deferred()

    def start(self) -> None:
        self.log.append("router starts")

    def stop(self) -> defer.Deferred[None]:
        self.log.append("programs stop")
        return self.stopping


class FakeStore:
    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.result: Any = None

    def flush(self) -> Any:
        self.log.append("flush")
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


class Recording(service.Service):
    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    def stopService(self) -> None:
        super().stopService()
        self.log.append(f"{self.name} stops")


def listener(role: str, log: list[str]) -> Listener:
    return Listener(role, role, f"fake:{role}", FakeEndpoint(role, log),  # type: ignore[arg-type]
                    Factory())


def test_stop_order_doors_programs_memory_api_then_the_last_flush() -> None:
    log: list[str] = []
    router = FakeRouter(log)
    top = LibchatService(router, FakeStore(log), None)  # type: ignore[arg-type]
    Recording("pool", log).setServiceParent(top)
    listener("api", log).setServiceParent(top)
    listener("front", log).setServiceParent(top)
    FlushService(FakeStore(log), 5.0, Clock()).setServiceParent(top)  # type: ignore[arg-type]
    listener("web", log).setServiceParent(top)
    top.startService()
    del log[:]
    stopped: list[Any] = []
    top.stopService().addCallback(stopped.append)
    # the programs are still stopping: the memory API still answers them
    assert log == ["web stops listening", "front stops listening", "pool stops",
                   "programs stop"]
    assert not stopped and top.listening("api")[0].running
    router.stopping.callback(None)
    assert log[4:] == ["api stops listening", "flush"] and stopped


def test_listeners_listen_in_privileged_start_service() -> None:
    """So ``twistd --uid`` binds a privileged port before it drops root."""
    log: list[str] = []
    front = listener("front", log)
    front.privilegedStartService()
    assert log == ["front listens"] and front.port is not None and not front.running
    front.startService()
    assert log == ["front listens"]  # not twice
    front.stopService()
    assert log[-1] == "front stops listening" and front.port is None


@pytest_twisted.inlineCallbacks
def test_a_busy_port_is_one_startup_error_line(logged: Any) -> Any:
    logged.allow("cannot listen on")
    taken: Any = reactor.listenTCP(0, ServerFactory(), interface="127.0.0.1")
    port = taken.getHost().port
    busy = Listener("front", "front", f"tcp:{port}:interface=127.0.0.1",
                    TCP4ServerEndpoint(reactor, port, interface="127.0.0.1"), Factory())
    try:
        with pytest.raises(StartupError) as e:
            busy.privilegedStartService()
        assert str(e.value) == (f"libchat: cannot listen on tcp:{port}:interface=127.0.0.1 "
                                "for --front: address already in use; choose another with --front")
    finally:
        yield taken.stopListening()


def test_listener_has_no_ready_deferred() -> None:
    assert not hasattr(listener("front", []), "ready")


def test_flush_service_flushes_every_interval_and_once_more_at_stop() -> None:
    log: list[str] = []
    clock = Clock()
    flusher = FlushService(FakeStore(log), 5.0, clock)  # type: ignore[arg-type]
    flusher.startService()
    clock.advance(5)
    clock.advance(5)
    n = len(log)
    assert n >= 2
    d = flusher.stopService()
    assert d.called and len(log) == n + 1
    clock.advance(60)
    assert len(log) == n + 1


def test_a_failed_flush_is_logged_and_the_next_one_still_runs(logged: Any) -> None:
    logged.allow("flushing dialogs failed")
    log: list[str] = []
    store = FakeStore(log)
    clock = Clock()
    flusher = FlushService(store, 5.0, clock)  # type: ignore[arg-type]
    store.result = OSError("disk full")
    flusher.startService()
    clock.advance(5)
    store.result = None
    clock.advance(5)
    assert log == ["flush"] * 3 and flusher._loop.running
    assert any(e.get("log_failure") is not None for e in logged.events)
    flusher.stopService()


def test_the_last_flush_waits_for_one_under_way() -> None:
    log: list[str] = []
    store = FakeStore(log)
    clock = Clock()
    flusher = FlushService(store, 5.0, clock)  # type: ignore[arg-type]
    pending: defer.Deferred[None] = defer.Deferred()
    store.result = pending
    flusher.startService()  # the first flush is under way
    store.result = None
    d = flusher.stopService()
    assert log == ["flush"] and not d.called
    pending.callback(None)
    assert log == ["flush", "flush"] and d.called


SAVES_AT_STOP = """'use strict';
const chat = require('libchat');
chat.onMessage(() => chat.reply('ready'));
process.on('SIGTERM', async () => {
  try { await chat.memory.set('bye', 'saved while stopping'); } finally { process.exit(0); }
});
"""


@pytest.fixture
def stopping_server(tmp_path: Path) -> Iterator[Server]:
    programs = tmp_path / "programs" / "saver"
    programs.mkdir(parents=True)
    (programs / "saver.js").write_text(SAVES_AT_STOP)
    s = Server(tmp_path / "srv", "--programs", str(tmp_path / "programs"),
               "--web", "tcp:0:interface=127.0.0.1", "--kill-grace", "5")
    yield s
    if s.service.running:
        pytest_twisted.blockon(s.stop())


@pytest_twisted.inlineCallbacks
def test_a_program_can_still_save_memory_while_the_server_stops(
        stopping_server: Server) -> Any:
    server = stopping_server.start()
    c = yield server.client()
    c.send(message("hi", intent="saver", dialog_id="bye"))
    reply = yield c.next_event(reactor, 20)
    assert reply["messages"]["content"] == "ready"
    yield server.stop()
    record = json.loads((server.data / "bye.json").read_text())
    assert record["memory"]["saver"]["bye"]["value"] == "saved while stopping"


def test_the_collector_service_freezes_survivors_and_thaws_them_hourly(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Long-lived data is kept out of collections; once per ``thaw`` it is
    unfrozen and collected once, so cyclic garbage frozen alive is reclaimed."""
    calls: list[str] = []
    import gc
    monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze"))
    monkeypatch.setattr(gc, "unfreeze", lambda: calls.append("unfreeze"))
    monkeypatch.setattr(gc, "collect", lambda: calls.append("collect") or 0)
    clock = Clock()
    svc = CollectorService(interval=5.0, thaw=60.0, clock=clock)
    svc.startService()
    assert calls == ["freeze"]
    clock.advance(5.0)
    assert calls == ["freeze"] * 2
    for _ in range(11):
        clock.advance(5.0)
    assert calls[-3:] == ["unfreeze", "collect", "freeze"]
    assert calls.count("unfreeze") == 1
    svc.stopService()
