"""``libchat-cli`` as a person uses it: typed lines in, rendered events out."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from twisted.internet import defer, protocol, reactor
from twisted.trial.unittest import TestCase

from libchat.tools.cli import render
from libchat.tap import Options, makeService

from .logcheck import LogCheckMixin

ROOT = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).parent / "libchat-cli")
T = 20.0


class Terminal(protocol.ProcessProtocol):
    """Feeds lines to the CLI and waits for text to appear on its stdout."""

    def __init__(self) -> None:
        self.output = ""
        self.waiting: list[tuple[str, defer.Deferred[None]]] = []
        self.ended: defer.Deferred[Any] = defer.Deferred()

    def type(self, line: str) -> None:
        self.transport.write(line.encode() + b"\n")

    def expect(self, text: str) -> "defer.Deferred[None]":
        d: defer.Deferred[None] = defer.Deferred()
        self.waiting.append((text, d))
        self._check()
        return d.addTimeout(T, reactor)

    def _check(self) -> None:
        for text, d in list(self.waiting):
            if text in self.output and not d.called:
                self.waiting.remove((text, d))
                d.callback(None)

    def outReceived(self, data: bytes) -> None:
        self.output += data.decode()
        self._check()

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(reason.value.exitCode)


class CliTests(LogCheckMixin, TestCase):
    def start_server(self) -> int:
        options = Options()
        data = Path(self.mktemp())
        options.parseOptions(["--front", "tcp:0:interface=127.0.0.1",
                              "--api", "tcp:0:interface=127.0.0.1",
                              "--programs", str(ROOT / "programs"), "--data", str(data)])
        service = makeService(options, reactor)
        service.startService()
        self.addCleanup(service.stopService)
        return service.listening("front")[0].port.getHost().port

    @defer.inlineCallbacks
    def test_a_person_chats_with_hello_and_closes(self) -> Any:
        port = self.start_server()
        term = Terminal()
        proc = reactor.spawnProcess(
            term, CLI, [CLI, "--front", f"tcp:host=127.0.0.1:port={port}", "--user", "zed"],
            env=dict(os.environ))
        self.addCleanup(lambda: term.ended.called or proc.signalProcess("KILL"))
        yield term.expect("connected as zed")
        term.type("hello")
        yield term.expect("[hello] Hello! What's your name?")
        term.type("Zed")
        yield term.expect("[hello] Nice to meet you, Zed!")
        yield term.expect("-- dialog ended: completed")
        term.type("/echo ping")
        yield term.expect("[echo] echo: /echo ping")
        term.type(":close")
        yield term.expect("-- dialog ended: client_closed")
        term.type(":quit")
        code = yield term.ended.addTimeout(T, reactor)
        self.assertEqual(code, 0)


class RenderTests(LogCheckMixin, TestCase):
    def test_each_event_type_reads_clearly(self) -> None:
        self.assertEqual(render({"event_type": 2001, "program": "echo",
                                 "messages": {"content": "x"}}), "[echo] x")
        self.assertEqual(render({"event_type": 2001, "program": "c", "background": True,
                                 "messages": {"content": "1"}}), "[c, background] 1")
        self.assertIn("idle_timeout", render({"event_type": 2002, "reason": "idle_timeout"}))
        self.assertIn("2003", render({"event_type": 2003}))
        self.assertEqual(render({"event_type": 2004, "code": "BUSY", "message": "full"}),
                         "!! BUSY: full")
