"""The server as operators run it: a real ``twistd`` subprocess."""

from __future__ import annotations

import json
import os
import signal

from pathlib import Path
from typing import Any, Iterator

import pytest
import pytest_twisted
from twisted.internet import defer, reactor


from libchat.client import connect

from .conftest import BUNDLED, FIXTURES
from .serving import alive, message, wait_until
from .twistd_proc import Twistd, kill, start

T = 20.0


@pytest.fixture
def procs() -> Iterator[list[Twistd]]:
    started: list[Twistd] = []
    yield started
    for p in started:
        kill(p, signal.SIGKILL)
        if not p.ended.called:
            pytest_twisted.blockon(p.ended.addTimeout(T, reactor))


def node_children_of(dirs: list[Path]) -> list[int]:
    """Pids of node processes running one of our programs (from their cmdline)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(str(d).encode() in part for part in cmd for d in dirs) and alive(int(pid)):
            found.append(int(pid))
    return found


@defer.inlineCallbacks
def chat(port: int, content: str, **kw: Any) -> Any:
    c = yield connect(reactor, f"tcp:host=127.0.0.1:port={port}")
    try:
        c.send(message(content, **kw))
        event = yield c.next_event(reactor, T)
        return event
    finally:
        c.transport.loseConnection()


@pytest_twisted.inlineCallbacks
def test_readme_command_twistd_n_libchat_answers_a_1001(procs, tmp_path: Path) -> None:
    """Exactly `twistd -n libchat` in a directory holding ./programs (the README's
    quick start): default ports, ./data created, hello answers."""
    (tmp_path / "programs").symlink_to(BUNDLED)
    p = start(["-n", "libchat"], tmp_path)
    procs.append(p)
    ports = yield p.ready.addTimeout(T, reactor)
    assert ports["front"] == 8082 and ports["api"] == 8083
    reply = yield chat(8082, "hello", dialog_id="readme", user_id="newcomer")
    assert reply["event_type"] == 2001 and "name" in reply["messages"]["content"]
    kill(p)
    yield p.ended.addTimeout(T, reactor)
    assert json.loads((tmp_path / "data" / "readme.json").read_text())["program"] == "hello"
    assert node_children_of([BUNDLED]) == []


@pytest_twisted.inlineCallbacks
def test_daemonized_twistd_with_pidfile_and_logfile(procs, tmp_path: Path) -> None:
    pidfile, logfile = tmp_path / "libchat.pid", tmp_path / "libchat.log"
    args = ["--pidfile", str(pidfile), "--logfile", str(logfile), "libchat",
            "--front", "tcp:0:interface=127.0.0.1", "--api", "tcp:0:interface=127.0.0.1",
            "--programs", str(FIXTURES), "--data", str(tmp_path / "data")]
    launcher = start(args, tmp_path)
    launcher.ready.addErrback(lambda _: None)  # the launcher never logs "ready" itself
    yield launcher.ended.addTimeout(T, reactor)  # the launcher exits; the daemon lives
    yield wait_until(lambda: pidfile.exists() and b"libchat ready" in logfile.read_bytes(), T)
    pid = int(pidfile.read_text())
    try:
        port = int(dict((r, p) for r, p in
                        __import__("re").findall(r"libchat (\w+) listening on [\d.]+:(\d+)",
                                                 logfile.read_text()))["front"])
        reply = yield chat(port, "x", intent="pid")
        child = json.loads(reply["messages"]["content"])["pid"]
        os.kill(pid, signal.SIGTERM)
        yield wait_until(lambda: not alive(pid), T)
        assert not alive(child) and not pidfile.exists()
        assert "libchat stopped" in logfile.read_text()
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest_twisted.inlineCallbacks
def test_memory_survives_a_twistd_restart(procs, tmp_path: Path) -> None:
    args = ["-n", "--pidfile=", "libchat", "--front", "tcp:0:interface=127.0.0.1",
            "--api", "tcp:0:interface=127.0.0.1", "--programs", str(FIXTURES),
            "--data", str(tmp_path / "data")]
    first = start(args, tmp_path)
    procs.append(first)
    ports = yield first.ready.addTimeout(T, reactor)
    saved = yield chat(ports["front"], "set k v1", dialog_id="one", intent="memory")
    assert saved["messages"]["content"] == "saved k"
    kill(first)
    yield first.ended.addTimeout(T, reactor)
    second = start(args, tmp_path)
    procs.append(second)
    ports = yield second.ready.addTimeout(T, reactor)
    got = yield chat(ports["front"], "get k", dialog_id="two", intent="memory")
    assert json.loads(got["messages"]["content"]) == "v1"


@pytest_twisted.inlineCallbacks
def test_bad_options_fail_fast_with_usage(procs, tmp_path: Path) -> None:
    p = start(["-n", "--pidfile=", "libchat", "--magic", "banana"], tmp_path)
    procs.append(p)
    p.ready.addErrback(lambda _: None)
    yield p.ended.addTimeout(T, reactor)
    assert b"--magic must be an integer" in p.output


@pytest_twisted.inlineCallbacks
def test_port_in_use_fails_fast(procs, tmp_path: Path) -> None:
    from twisted.internet.protocol import Factory
    taken = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
    try:
        p = start(["-n", "--pidfile=", "libchat", "--front",
                   f"tcp:{taken.getHost().port}:interface=127.0.0.1", "--api",
                   "tcp:0:interface=127.0.0.1", "--data", str(tmp_path / "d")], tmp_path)
        procs.append(p)
        p.ready.addErrback(lambda _: None)
        yield p.ended.addTimeout(T, reactor)
        assert b"Address already in use" in p.output or b"CannotListen" in p.output
    finally:
        yield taken.stopListening()


