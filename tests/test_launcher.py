"""The launcher (spawning off the reactor): exits and output come back as
Twisted reports them, children lead their own session, and closing the
launcher ends every child it has; the lag probe records late timers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from libchat.lagprobe import LagProbe
from libchat.runtimes.node.spawner import LauncherClient

from .launcher import alive

TIMEOUT = 20


class Recorder(ProcessProtocol):
    def __init__(self) -> None:
        self.out = b""
        # the reason in a list: a Deferred fired with a Failure would raise it
        self.ended: defer.Deferred[list[Failure]] = defer.Deferred()

    def childDataReceived(self, fd: int, data: bytes) -> None:
        self.out += data

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback([reason])


@pytest.fixture
def client() -> Any:
    c = LauncherClient(reactor, grace=1.0)
    yield c
    pytest_twisted.blockon(c.stop().addTimeout(TIMEOUT, reactor))


@pytest_twisted.inlineCallbacks
def test_a_child_runs_in_its_directory_in_its_own_session(client: LauncherClient,
                                                          tmp_path: Path) -> Any:
    proto = Recorder()
    p = client.spawn(proto, ["sh", "-c", "pwd; ps -o sid= -p $$; exit 3"], dict(os.environ),
                     str(tmp_path))
    pid = yield p.started.addTimeout(TIMEOUT, reactor)
    [reason] = yield proto.ended.addTimeout(TIMEOUT, reactor)
    assert reason.check(ProcessTerminated) and reason.value.exitCode == 3
    cwd, sid = proto.out.decode().split()[:2]
    assert cwd == str(tmp_path) and int(sid) == pid


@pytest_twisted.inlineCallbacks
def test_a_signal_asked_before_the_pid_is_known_is_delivered(client: LauncherClient) -> Any:
    proto = Recorder()
    p = client.spawn(proto, ["sleep", "30"], dict(os.environ), None)
    p.signalProcess("KILL")  # the launcher has not answered yet
    [reason] = yield proto.ended.addTimeout(TIMEOUT, reactor)
    assert reason.check(ProcessTerminated) and reason.value.signal == 9


@pytest_twisted.inlineCallbacks
def test_a_clean_exit_is_process_done(client: LauncherClient) -> Any:
    proto = Recorder()
    client.spawn(proto, ["true"], dict(os.environ), None)
    [reason] = yield proto.ended.addTimeout(TIMEOUT, reactor)
    assert reason.check(ProcessDone)


@pytest_twisted.inlineCallbacks
def test_an_exec_failure_fails_the_start(client: LauncherClient) -> Any:
    p = client.spawn(Recorder(), ["/nonexistent/program"], dict(os.environ), None)
    with pytest.raises(OSError):
        yield p.started.addTimeout(TIMEOUT, reactor)


@pytest_twisted.inlineCallbacks
def test_closing_the_launcher_ends_every_child() -> Any:
    c = LauncherClient(reactor, grace=0.5)
    proto = Recorder()
    # ignores SIGTERM: the launcher must escalate to SIGKILL
    p = c.spawn(proto, ["sh", "-c", "trap '' TERM; while :; do sleep 0.1; done"],
                dict(os.environ), None)
    pid = yield p.started.addTimeout(TIMEOUT, reactor)
    yield c.stop().addTimeout(TIMEOUT, reactor)
    assert not alive(pid)


def test_the_lag_probe_writes_late_timers(tmp_path: Path) -> None:
    clock = Clock()
    now = [100.0]
    probe = LagProbe(clock, str(tmp_path / "lag"), monotonic=lambda: now[0])
    probe.startService()
    now[0] += 0.001
    clock.advance(0.001)  # on time: nothing
    now[0] += 0.021
    clock.advance(0.021)  # 20 ms late
    probe.stopService()
    [line] = (tmp_path / "lag").read_text().splitlines()
    at, ms, _cpu = line.split()
    assert float(at) == pytest.approx(100.002) and float(ms) == pytest.approx(20.0)
    assert clock.getDelayedCalls() == []
