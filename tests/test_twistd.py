"""The server as operators run it: a real ``twistd`` subprocess."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from libchat.tools.client import connect

from .helpers import BUNDLED, FIXTURES, tmp_dir
from .logcheck import LogCheckMixin
from .serving import alive, message, wait_until
from .twistd_proc import Twistd, kill, start, stop

T = 20.0


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
        # a restarted server first hands over what it kept for absent
        # upstreams (e.g. 2002 program_exited of dialogs of the killed run)
        while event.get("dialog_id") != kw.get("dialog_id", event.get("dialog_id")):
            event = yield c.next_event(reactor, T)
        return event
    finally:
        c.transport.loseConnection()
        yield c.closed


class TwistdTests(LogCheckMixin, TestCase):
    def setUp(self) -> None:
        super().setUp()
        self.tmp_path = tmp_dir(self)

    def start(self, args: list[str]) -> Twistd:
        """A twistd in our directory, stopped (and waited for) at cleanup."""
        p = start(args, self.tmp_path)
        self.addCleanup(lambda: stop(p).addTimeout(T, reactor))
        return p

    @defer.inlineCallbacks
    def test_readme_command_twistd_n_libchat_answers_a_1001(self) -> None:
        """Exactly `twistd -n libchat` in a directory holding ./programs (the README's
        quick start): default ports, ./data created, hello answers."""
        tmp_path = self.tmp_path
        (tmp_path / "programs").symlink_to(BUNDLED)
        p = self.start(["-n", "libchat"])
        ports = yield p.ready.addTimeout(T, reactor)
        assert ports["front"] == 8082 and ports["api"] == 8083
        reply = yield chat(8082, "hello", dialog_id="readme", user_id="newcomer")
        assert reply["event_type"] == 2001 and "name" in reply["messages"]["content"]
        kill(p)
        yield p.ended.addTimeout(T, reactor)
        assert json.loads((tmp_path / "data" / "readme.json").read_text())["program"] == "hello"
        assert node_children_of([BUNDLED]) == []

    @defer.inlineCallbacks
    def test_daemonized_twistd_with_pidfile_and_logfile(self) -> None:
        tmp_path = self.tmp_path
        pidfile, logfile = tmp_path / "libchat.pid", tmp_path / "libchat.log"
        args = ["--pidfile", str(pidfile), "--logfile", str(logfile), "libchat",
                "--front", "tcp:0:interface=127.0.0.1", "--api", "tcp:0:interface=127.0.0.1",
                "--programs", str(FIXTURES), "--data", str(tmp_path / "data")]
        launcher = self.start(args)
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

    @defer.inlineCallbacks
    def test_memory_survives_a_twistd_restart(self) -> None:
        tmp_path = self.tmp_path
        args = ["-n", "--pidfile=", "libchat", "--front", "tcp:0:interface=127.0.0.1",
                "--api", "tcp:0:interface=127.0.0.1", "--programs", str(FIXTURES),
                "--data", str(tmp_path / "data")]
        first = self.start(args)
        ports = yield first.ready.addTimeout(T, reactor)
        saved = yield chat(ports["front"], "set k v1", dialog_id="one", intent="memory")
        assert saved["messages"]["content"] == "saved k"
        kill(first)
        yield first.ended.addTimeout(T, reactor)
        second = self.start(args)
        ports = yield second.ready.addTimeout(T, reactor)
        got = yield chat(ports["front"], "get k", dialog_id="two", intent="memory")
        assert json.loads(got["messages"]["content"]) == "v1"

    @defer.inlineCallbacks
    def test_bad_options_fail_fast_with_usage(self) -> None:
        p = self.start(["-n", "--pidfile=", "libchat", "--magic", "banana"])
        p.ready.addErrback(lambda _: None)
        yield p.ended.addTimeout(T, reactor)
        assert b"--magic must be an integer" in p.output

    @defer.inlineCallbacks
    def test_port_in_use_fails_fast(self) -> None:
        tmp_path = self.tmp_path
        from twisted.internet.protocol import Factory
        taken = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
        try:
            p = self.start(["-n", "--pidfile=", "libchat", "--front",
                       f"tcp:{taken.getHost().port}:interface=127.0.0.1", "--api",
                       "tcp:0:interface=127.0.0.1", "--data", str(tmp_path / "d")])
            p.ready.addErrback(lambda _: None)
            yield p.ended.addTimeout(T, reactor)
            assert b"Address already in use" in p.output or b"CannotListen" in p.output
        finally:
            yield taken.stopListening()


