"""``libchat-cli`` as a person (or a script) uses it, against a real
``twistd -n libchat``: typed or piped lines in, rendered events out."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import defer, protocol, reactor, task
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from libchat.tools.cli import CLOSE, Console, Session, render
from libchat.tools.client import connect

from .helpers import BUNDLED, FIXTURES
from .serving import message
from .twistd_proc import Twistd, start, stop

CLI = str(Path(sys.executable).parent / "libchat-cli")
T = 20.0


class Terminal(protocol.ProcessProtocol):
    """Feeds lines to the CLI and waits for text to appear on its stdout."""

    def __init__(self) -> None:
        self.output = ""
        self.waiting: list[tuple[Any, defer.Deferred[None]]] = []
        self.ended: defer.Deferred[Any] = defer.Deferred()

    def proc(self) -> Any:
        assert self.transport is not None, "not started"
        return self.transport

    def type(self, line: str) -> None:
        self.proc().write(line.encode() + b"\n")

    def expect(self, text: str | re.Pattern[str]) -> "defer.Deferred[None]":
        """Fires once ``text`` (a string or a pattern) is in the output; fails after T."""
        d: defer.Deferred[None] = defer.Deferred()
        self.waiting.append((text, d))
        self._check()
        return d.addTimeout(T, reactor)

    def _seen(self, text: Any) -> bool:
        return text in self.output if isinstance(text, str) else bool(text.search(self.output))

    def _check(self) -> None:
        for text, d in list(self.waiting):
            if self._seen(text) and not d.called:
                self.waiting.remove((text, d))
                d.callback(None)

    def outReceived(self, data: bytes) -> None:
        self.output += data.decode()
        self._check()

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(reason.value.exitCode)


class Server:
    """A real ``twistd -n libchat`` on free ports, in its own directory."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.proc: Twistd | None = None
        self.terminals: list[Terminal] = []
        self.ports: dict[str, int] = {}

    @defer.inlineCallbacks
    def start(self) -> Any:
        self.proc = start(["-n", "libchat",
                           "--front", "tcp:0:interface=127.0.0.1",
                           "--api", "tcp:0:interface=127.0.0.1",
                           "--web", "tcp:0:interface=127.0.0.1",
                           "--programs", f"{FIXTURES}{os.pathsep}{BUNDLED}",
                           "--data", str(self.tmp / "data"), "--kill-grace", "1"], self.tmp)
        self.ports = yield self.proc.ready.addTimeout(T, reactor)
        return self

    @property
    def front(self) -> str:
        return f"tcp:host=127.0.0.1:port={self.ports['front']}"

    def cli(self, *args: str, pty: bool = False, stdin: bytes | None = None) -> Terminal:
        """Start ``libchat-cli`` on a pipe (or a terminal); ``stdin`` is written
        and then closed, as ``printf ... | libchat-cli`` does."""
        term = Terminal()
        self.terminals.append(term)
        reactor.spawnProcess(term, CLI, [CLI, "--front", self.front, *args],
                             env=dict(os.environ), usePTY=pty)
        if stdin is not None:
            term.proc().write(stdin)
            term.proc().closeStdin()
        return term

    @defer.inlineCallbacks
    def pending_replies(self) -> Any:
        """What /metrics says waits for a front connection (an operator's view)."""
        r = yield treq.get(f"http://127.0.0.1:{self.ports['web']}/metrics", persistent=False)
        text = yield r.text()
        m = re.search(r'^libchat_pending_events\{channel="frame"\} (\S+)$', text, re.M)
        return float(m.group(1)) if m else None

    def stop(self) -> defer.Deferred[Any]:
        for term in self.terminals:
            if not term.ended.called:
                term.proc().signalProcess("KILL")
        ended = defer.gatherResults([t.ended for t in self.terminals])
        ended.addCallback(lambda _: stop(self.proc) if self.proc else None)
        return ended.addTimeout(T, reactor)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path)
    pytest_twisted.blockon(s.start())
    yield s
    pytest_twisted.blockon(s.stop())


@pytest_twisted.inlineCallbacks
def test_a_person_chats_with_hello_and_closes(server: Server) -> Any:
    term = server.cli("--user", "zed")
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
    assert code == 0


@pytest_twisted.inlineCallbacks
def test_on_a_terminal_a_prompt_waits_below_every_line(server: Server) -> Any:
    term = server.cli("--user", "tty", pty=True)
    yield term.expect(re.compile(r"connected as tty.*\r?\n> ", re.S))
    term.type("/echo hi")
    # the reply replaces the prompt line, and a fresh prompt follows it
    yield term.expect(re.compile(r"\[echo\] echo: /echo hi\r?\n> "))
    term.type(":quit")
    assert (yield term.ended.addTimeout(T, reactor)) == 0


@pytest_twisted.inlineCallbacks
def test_piped_input_waits_for_the_echo_and_prints_no_prompt(server: Server) -> Any:
    """``printf '/echo x\\n' | libchat-cli`` prints the echo, then exits 0."""
    term = server.cli(stdin=b"/echo x\n")
    code = yield term.ended.addTimeout(T, reactor)
    assert code == 0
    assert "[echo] echo: /echo x\n" in term.output
    assert "> " not in term.output and "\x1b" not in term.output


@pytest_twisted.inlineCallbacks
def test_piped_input_waits_for_every_message_and_a_close(server: Server) -> Any:
    term = server.cli(stdin=b"/echo one\n/echo two\n:close\n")
    assert (yield term.ended.addTimeout(T, reactor)) == 0
    lines = term.output.splitlines()
    assert lines[1:] == ["[echo] echo: /echo one", "[echo] echo: /echo two",
                         "-- dialog ended: client_closed (you may start another topic) --"]


@pytest_twisted.inlineCallbacks
def test_another_clients_kept_reply_is_not_shown(server: Server) -> Any:
    """Carol leaves before her echo comes back; the server keeps it and hands
    it to the next front connection, dave's CLI, which must not print it."""
    carol = yield connect(reactor, server.front)
    carol.send(message("/echo carol-secret", dialog_id="carol-d", user_id="carol"))
    carol.transport.loseConnection()
    yield carol.closed
    # the echo came back with nobody connected: it waits for a front connection
    yield poll(server.pending_replies, lambda n: n == 1)
    dave = server.cli("--user", "dave")
    yield dave.expect("connected as dave")
    dave.type("/echo dave-own")
    yield dave.expect("[echo] echo: /echo dave-own")
    assert (yield server.pending_replies()) == 0  # dave's connection did receive it
    dave.type(":quit")
    assert (yield dave.ended.addTimeout(T, reactor)) == 0
    assert "carol" not in dave.output


@defer.inlineCallbacks
def poll(ask: Any, ok: Any, timeout: float = T, step: float = 0.05) -> Any:
    """Ask the server (a Deferred-returning probe) until ``ok(answer)``, bounded:
    for a state it has no event for."""
    deadline = reactor.seconds() + timeout
    while True:
        answer = yield ask()
        if ok(answer):
            return answer
        if reactor.seconds() > deadline:
            raise AssertionError(f"still {answer!r} after {timeout} s")
        yield task.deferLater(reactor, step, lambda: None)


# -- the pieces, without a server ---------------------------------------------


def test_each_event_type_reads_clearly() -> None:
    assert render({"event_type": 2001, "program": "echo", "messages": {"content": "x"}}) == "[echo] x"
    assert render({"event_type": 2001, "program": "c", "background": True,
                   "messages": {"content": "1"}}) == "[c, background] 1"
    assert "idle_timeout" in render({"event_type": 2002, "reason": "idle_timeout"})
    assert "2003" in render({"event_type": 2003})
    assert render({"event_type": 2004, "code": "BUSY", "message": "full"}) == "!! BUSY: full"


def reply(dialog: str, message_id: str | None = None, **kw: Any) -> dict[str, Any]:
    event = {"event_type": 2001, "dialog_id": dialog, "messages": {"content": "r"}, **kw}
    if message_id is not None:
        event["message_id"] = message_id
    return event


def test_session_shows_only_its_own_dialogs_including_earlier_ones() -> None:
    s = Session("dave", "d1")
    assert not s.accept(reply("carol-d", "m"))
    assert s.accept(reply("d1"))
    s.new()
    assert s.accept(reply("d1")), "a background reply of an earlier dialog is still ours"
    assert s.label(reply("d1")).startswith("(dialog d1) ")
    assert s.accept({"event_type": 2004, "code": "BAD_FRAME", "message": "x"}), \
        "an error about the connection itself is ours"


def test_session_counts_what_still_waits_for_an_answer() -> None:
    s = Session("u", "d1")
    m1, m2 = s.message("a")["message_id"], s.message("b")["message_id"]
    assert s.waiting() == 2
    s.accept(reply("d1", "someone-else"))
    assert s.waiting() == 2
    s.accept(reply("d1", m2))
    assert s.pending["d1"] == [m1]
    s.accept(reply("d1"))  # names no message: answers the oldest
    assert s.waiting() == 0
    s.message("c")
    s.accept({"event_type": 2004, "dialog_id": "d1", "code": "BUSY", "message": "full"})
    assert s.waiting() == 0
    s.message("d")
    close = s.close()
    assert close == {"event_type": 1002, "dialog_id": "d1", "user_id": "u"}
    assert s.pending["d1"][-1] is CLOSE
    s.accept({"event_type": 2002, "dialog_id": "d1", "reason": "client_closed"})
    assert s.waiting() == 0
    m = s.message("e")["message_id"]
    s.accept({"event_type": 2004, "code": "BAD_REQUEST", "message": "x", "message_id": m})
    assert s.waiting() == 0, "an error naming the message answers it, dialog or not"


class Sent:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def send(self, event: dict[str, Any]) -> None:
        self.events.append(event)


def console(wait: float = 10.0, interactive: bool = False) -> tuple[Console, StringTransport, Clock, Sent]:
    clock, sent, transport = Clock(), Sent(), StringTransport()
    c = Console(sent, Session("u", "d1"), clock, wait, interactive)  # type: ignore[arg-type]
    c.makeConnection(transport)
    transport.clear()
    return c, transport, clock, sent


def test_end_of_input_waits_until_the_last_answer() -> None:
    c, transport, clock, sent = console()
    c.dataReceived(b"hello\n")
    c.readConnectionLost()
    assert not transport.disconnecting, "an answer is still due"
    c.event(reply("other", sent.events[0]["message_id"]))
    assert not transport.disconnecting, "another dialog's event answers nothing"
    c.event(reply("d1", sent.events[0]["message_id"], program="p"))
    assert transport.disconnecting
    assert transport.value() == b"[p] r\n"
    assert clock.getDelayedCalls() == []


def test_end_of_input_gives_up_after_wait_seconds() -> None:
    c, transport, clock, sent = console(wait=3)
    c.dataReceived(b"hello\n")
    c.readConnectionLost()
    clock.advance(2.9)
    assert not transport.disconnecting
    clock.advance(0.1)
    assert transport.disconnecting
    assert b"no answer to 1 of the events sent after 3 s" in transport.value()


def test_end_of_input_with_nothing_sent_leaves_at_once() -> None:
    c, transport, clock, sent = console()
    c.readConnectionLost()
    assert transport.disconnecting and sent.events == []


def test_prompt_only_when_interactive() -> None:
    c, transport, clock, sent = console(interactive=True)
    c.dataReceived(b"hi\n")
    assert transport.value() == b"> "
    transport.clear()
    c.event(reply("d1", sent.events[0]["message_id"], program="p"))
    assert transport.value() == b"\r\x1b[K[p] r\n> "
    c2, transport2, _, sent2 = console(interactive=False)
    c2.dataReceived(b"hi\n")
    c2.event(reply("d1", sent2.events[0]["message_id"], program="p"))
    assert transport2.value() == b"[p] r\n"


def test_piped_close_waits_for_the_answers_before_it_then_sends_the_rest() -> None:
    c, transport, clock, sent = console(wait=5)
    c.dataReceived(b"a\n:close\nb\n")
    assert [e["event_type"] for e in sent.events] == [1001], "the close waits for a's answer"
    c.event(reply("d1", sent.events[0]["message_id"]))
    assert [e["event_type"] for e in sent.events] == [1001, 1002, 1001]
    assert sent.events[2]["messages"] == {"content": "b"}


def test_piped_close_waits_at_most_wait_seconds() -> None:
    c, transport, clock, sent = console(wait=5)
    c.dataReceived(b"a\n:close\n")
    clock.advance(4.9)
    assert len(sent.events) == 1
    clock.advance(0.1)
    assert [e["event_type"] for e in sent.events] == [1001, 1002]


def test_on_a_terminal_close_is_sent_at_once() -> None:
    c, transport, clock, sent = console(interactive=True)
    c.dataReceived(b"a\n:close\n")
    assert [e["event_type"] for e in sent.events] == [1001, 1002]
    assert clock.getDelayedCalls() == []


def test_a_long_pasted_line_is_sent_not_a_reason_to_quit() -> None:
    c, transport, clock, sent = console()
    c.dataReceived(b"x" * 100_000 + b"\n")
    assert not transport.disconnecting
    assert len(sent.events[0]["messages"]["content"]) == 100_000
