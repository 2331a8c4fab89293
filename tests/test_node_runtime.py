"""The Node runtime's parts: the command and environment (the memory API as
bound), procmon-style supervision over a fake reactor, and, end to end
through ``makeService``, what a program really receives for ``--api``."""

from __future__ import annotations

import json
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.testing import MemoryReactorClock

from libchat.runtimes.node.command import ApiAddress, NodeCommand
from libchat.runtimes.node.process import Supervisor

# A program that does not use the SDK (so nothing it parses can hide what it
# was given): it writes its arguments and the API variables next to itself
# and exits.
REPORTER = """
const fs = require('fs');
const env = {};
for (const k of ['LIBCHAT_API_HOST', 'LIBCHAT_API_SOCKET']) env[k] = process.env[k] ?? null;
fs.writeFileSync('report.json', JSON.stringify({argv: process.argv.slice(2), env}));
"""


# -- the command ---------------------------------------------------------------------


def build(api: ApiAddress) -> Any:
    cmd = NodeCommand("node", {"PATH": "/bin", "LIBCHAT_API_HOST": "stale"}, 1, 2)
    return cmd.build(Path("/p/x"), Path("/p/x/x.js"), Path("/r/i1.sock"), "tok", "d1", api)


@pytest.mark.parametrize("address, expected", [
    (IPv4Address("TCP", "127.0.0.2", 4321), ApiAddress("127.0.0.2", 4321)),
    (IPv4Address("TCP", "0.0.0.0", 4321), ApiAddress("127.0.0.1", 4321)),
    (IPv6Address("TCP", "::", 4321), ApiAddress("::1", 4321)),
    (IPv6Address("TCP", "::1", 4321), ApiAddress("::1", 4321)),
    (UNIXAddress(b"/run/api.sock"), ApiAddress(socket="/run/api.sock")),
    (None, ApiAddress("127.0.0.1", 0)),
])
def test_the_api_address_is_the_bound_one(address: Any, expected: ApiAddress) -> None:
    """Wildcard listeners are reached through their family's loopback."""
    assert ApiAddress.of(address) == expected


def test_a_tcp_api_gives_its_host_and_port() -> None:
    cmd = build(ApiAddress("127.0.0.2", 4321))
    assert "--port=4321" in cmd.argv and "--socket=/r/i1.sock" in cmd.argv
    assert cmd.env["LIBCHAT_API_HOST"] == "127.0.0.2"
    assert "LIBCHAT_API_SOCKET" not in cmd.env
    assert cmd.env["LIBCHAT_TOKEN"] == "tok" and "tok" not in " ".join(cmd.argv)


def test_a_unix_api_gives_its_socket_and_no_port() -> None:
    cmd = build(ApiAddress(socket="/run/api.sock"))
    assert not any(a.startswith("--port") for a in cmd.argv)
    assert cmd.env["LIBCHAT_API_SOCKET"] == "/run/api.sock"
    assert "LIBCHAT_API_HOST" not in cmd.env  # not the caller's stale value either


# -- supervision (Twisted procmon's discipline) ---------------------------------------


class FakeProcess:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[str] = []
        self.gone = False

    def signalProcess(self, name: str) -> None:
        if self.gone:
            raise ProcessExitedAlready()
        self.signals.append(name)


class SpawningReactor(MemoryReactorClock):
    def spawnProcess(self, protocol: Any, executable: Any, args: Any = (), env: Any = None,
                     path: Any = None, uid: Any = None, gid: Any = None, usePTY: Any = 0,
                     childFDs: Any = None) -> FakeProcess:
        self.process = FakeProcess(99_999_999)  # no such group: killpg fails with ESRCH
        return self.process


def supervised(grace: float = 5.0) -> tuple[Supervisor, SpawningReactor, list[str]]:
    clock = SpawningReactor()
    kills: list[str] = []
    sup = Supervisor(clock, grace, on_kill=lambda: kills.append("kill"))
    sup.spawn(None, ["node"], {}, None)  # type: ignore[arg-type]
    return sup, clock, kills


def test_terminate_sends_term_then_one_kill_after_the_grace() -> None:
    sup, clock, kills = supervised(grace=5.0)
    sup.terminate()
    sup.terminate()  # once only
    assert clock.process.signals == ["TERM"]
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(5.0)
    assert clock.process.signals == ["TERM", "KILL"] and kills == ["kill"]


def test_exit_cancels_the_kill_timer() -> None:
    sup, clock, kills = supervised()
    sup.terminate(drain=1.0)
    assert clock.process.signals == []  # the program may finish by itself first
    clock.advance(1.0)
    assert clock.process.signals == ["TERM"]
    sup.ended()
    assert clock.getDelayedCalls() == []
    clock.advance(10)
    assert kills == [] and clock.process.signals == ["TERM"]


def test_a_process_that_already_exited_is_tolerated() -> None:
    sup, clock, kills = supervised(grace=1.0)
    clock.process.gone = True
    sup.terminate()  # ProcessExitedAlready: no error
    clock.advance(1.0)
    assert kills == ["kill"] and clock.process.signals == []


def test_signal_is_the_group_when_it_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[tuple[int, int]] = []
    monkeypatch.setattr("os.killpg", lambda pid, sig: sent.append((pid, sig)))
    sup, clock, _ = supervised()
    sup.terminate()
    sup.ended()  # leftovers of the group are killed with it
    assert sent == [(clock.process.pid, signal.SIGTERM), (clock.process.pid, signal.SIGKILL)]
    assert clock.process.signals == []


# -- end to end: what programs receive for --api (bug: always 127.0.0.1 / --port=0) ----


@pytest.fixture
def reporter(tmp_path: Path) -> Path:
    programs = tmp_path / "programs"
    (programs / "report").mkdir(parents=True)
    (programs / "report" / "report.js").write_text(REPORTER)
    return programs


@defer.inlineCallbacks
def report_for(tmp_path: Path, programs: Path, api: str) -> Any:
    """Start libchat with ``--api api``, send one message to the reporter,
    wait for its dialog's 2002 (it exits without connecting) and read what
    it was given."""
    from .serving import Server, message

    s = Server(tmp_path / "server", "--api", api, "--programs", str(programs),
               "--web", "tcp:0:interface=127.0.0.1")
    s.start()
    try:
        client = yield s.client()
        client.send(message("hi", intent="report"))
        while True:
            event = yield client.next_event(reactor, 15.0)
            if event["event_type"] == 2002:
                break
    finally:
        yield s.stop()
    return json.loads((programs / "report" / "report.json").read_text())


@pytest_twisted.inlineCallbacks
def test_a_program_reaches_the_api_on_its_bound_host(tmp_path: Path, reporter: Path) -> Any:
    report = yield report_for(tmp_path, reporter, "tcp:0:interface=127.0.0.2")
    [port] = [a for a in report["argv"] if a.startswith("--port=")]
    assert int(port.split("=")[1]) > 0
    assert report["env"] == {"LIBCHAT_API_HOST": "127.0.0.2", "LIBCHAT_API_SOCKET": None}


@pytest_twisted.inlineCallbacks
def test_a_unix_api_gives_programs_its_socket_path_and_no_port(
        tmp_path: Path, reporter: Path) -> Any:
    short = Path(tempfile.mkdtemp(prefix="lc-api-", dir="/tmp"))  # sun_path is short
    try:
        path = short / "api.sock"
        report = yield report_for(tmp_path, reporter, f"unix:{path}")
    finally:
        shutil.rmtree(short, ignore_errors=True)
    assert not any(a.startswith("--port") for a in report["argv"]), report["argv"]
    assert report["env"] == {"LIBCHAT_API_HOST": None, "LIBCHAT_API_SOCKET": str(path)}
