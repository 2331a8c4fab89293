"""End to end in one process: real reactor, real Node programs, real sockets."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from libchat.protocol import codes

from .helpers import tmp_dir
from .logcheck import LogCheckMixin
from .serving import Server, alive, message, wait_until

T = 15.0  # bound on every single wait


def next_event(client: Any) -> defer.Deferred[dict]:
    return client.next_event(reactor, T)


@defer.inlineCallbacks
def ask(client: Any, content: str, **kw: Any) -> Any:
    client.send(message(content, **kw))
    event = yield next_event(client)
    return event


def content_json(event: dict) -> dict:
    assert event["event_type"] == 2001, event
    return json.loads(event["messages"]["content"])


class IntegrationTests(LogCheckMixin, TestCase):
    def setUp(self) -> None:
        super().setUp()
        self.tmp_path = tmp_dir(self)
        self.servers: list[Server] = []

    def make_server(self, *args: str, data_from: Server | None = None) -> Server:
        """A started server, stopped (and checked to leave no program) at cleanup."""
        s = Server(self.tmp_path / f"s{len(self.servers)}", *args)
        if data_from is not None:
            s.data = data_from.data
            s.service.store.directory = data_from.data
        self.servers.append(s)
        self.addCleanup(self._stop_server, s)
        return s.start()

    @defer.inlineCallbacks
    def _stop_server(self, s: Server) -> Any:
        if s.service.running:
            yield s.stop().addTimeout(T, reactor)
        assert s.service.runtime.live() == []

    @defer.inlineCallbacks
    def test_second_message_reaches_the_same_instance(self) -> None:
        server = self.make_server()
        c = yield server.client()
        first = content_json((yield ask(c, "one", intent="pid")))
        second = content_json((yield ask(c, "two")))
        assert first["pid"] == second["pid"] and second["content"] == "two"

    @defer.inlineCallbacks
    def test_two_dialogs_at_once_never_see_each_others_messages(self) -> None:
        server = self.make_server()
        a, b = (yield server.client()), (yield server.client())
        for i in range(5):
            a.send(message(f"a{i}", dialog_id="A", user_id="ua", intent="pid"))
            b.send(message(f"b{i}", dialog_id="B", user_id="ub", intent="pid"))
        got: dict[str, list] = {"A": [], "B": []}
        for client in (a, b):
            for _ in range(5):
                event = yield next_event(client)
                got[event["dialog_id"]].append((event["user_id"], content_json(event)))
        assert [c["content"] for _, c in got["A"]] == [f"a{i}" for i in range(5)]
        assert [c["content"] for _, c in got["B"]] == [f"b{i}" for i in range(5)]
        assert {u for u, _ in got["A"]} == {"ua"} and {u for u, _ in got["B"]} == {"ub"}
        assert len({c["pid"] for _, c in got["A"]}) == 1
        assert {c["pid"] for _, c in got["A"]}.isdisjoint({c["pid"] for _, c in got["B"]})

    @defer.inlineCallbacks
    def test_launch_contract_argv_env_cwd_and_socket_modes(self) -> None:
        server = self.make_server()
        c = yield server.client()
        info = content_json((yield ask(c, "x", intent="pid")))
        sock = [a for a in info["argv"] if a.startswith("--socket=")][0][len("--socket="):]
        assert info["argv"][1] == f"--port={server.port('api')}"
        assert info["has_token"] and not info["token_in_argv"]
        assert info["cwd"].endswith("/programs/pid")
        assert len(sock.encode()) < 108
        directory = Path(sock).parent
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        # the socket file is removed once the program connected: nobody else can
        assert not Path(sock).exists()

    @defer.inlineCallbacks
    def test_program_2002_and_2003_reach_upstream(self) -> None:
        server = self.make_server()
        c = yield server.client()
        yield ask(c, "x", intent="pid")
        c.send(message("end"))
        reply, ended = (yield next_event(c)), (yield next_event(c))
        assert reply["event_type"] == 2001
        assert (ended["event_type"], ended["reason"]) == (2002, codes.COMPLETED)
        declined = yield ask(c, "please", intent="decline", message_id="m-dec")
        assert declined["event_type"] == 2003 and declined["message_id"] == "m-dec"
        assert declined["messages"]["content"] == "please"

    @defer.inlineCallbacks
    def test_no_program_for_the_intent_is_2003_from_libchat(self) -> None:
        server = self.make_server()
        c = yield server.client()
        answer = yield ask(c, "zzz nothing matches zzz", message_id="m0")
        assert answer["event_type"] == 2003 and answer["message_id"] == "m0"

    @defer.inlineCallbacks
    def test_background_replies_are_marked(self) -> None:
        server = self.make_server()
        c = yield server.client()
        working = yield ask(c, "go", intent="background")
        ended = yield next_event(c)
        later = yield next_event(c)
        assert working["messages"]["content"] == "working" and "background" not in working
        assert ended["reason"] == codes.COMPLETED
        assert later["background"] is True and later["messages"]["content"] == "done in background"

    @defer.inlineCallbacks
    def test_idle_reap_kills_the_process_and_sends_idle_timeout(self) -> None:
        # idle time counts from the user message, so it must outlast Node's start
        # and first reply even on a loaded machine (0.5s did not, at load 19)
        server = self.make_server("--idle-timeout", "2")
        c = yield server.client()
        pid = content_json((yield ask(c, "x", intent="pid")))["pid"]
        ended = yield next_event(c)
        assert (ended["event_type"], ended["reason"]) == (2002, codes.IDLE_TIMEOUT)
        yield wait_until(lambda: not alive(pid), T)

    @defer.inlineCallbacks
    def test_client_close_stops_the_program(self) -> None:
        server = self.make_server()
        c = yield server.client()
        pid = content_json((yield ask(c, "x", intent="pid")))["pid"]
        c.send({"event_type": 1002, "dialog_id": "d1", "user_id": "u1"})
        ended = yield next_event(c)
        assert (ended["event_type"], ended["reason"]) == (2002, codes.CLIENT_CLOSED)
        yield wait_until(lambda: not alive(pid), T)

    @defer.inlineCallbacks
    def test_program_crashing_mid_dialog_is_program_exited(self) -> None:
        server = self.make_server()
        c = yield server.client()
        assert (yield ask(c, "hi", intent="crash"))["messages"]["content"] == "ok"
        ended = yield ask(c, "crash")
        assert (ended["event_type"], ended["reason"]) == (2002, codes.PROGRAM_EXITED)
        again = yield ask(c, "hi again", intent="crash")  # a fresh instance
        assert again["messages"]["content"] == "ok"

    @defer.inlineCallbacks
    def test_program_ignoring_sigterm_is_sigkilled(self) -> None:
        server = self.make_server("--kill-grace", "0.5")
        c = yield server.client()
        assert (yield ask(c, "hi", intent="stubborn"))["messages"]["content"] == "still here"
        pid = server.service.runtime.live()[0].pid
        c.send({"event_type": 1002, "dialog_id": "d1", "user_id": "u1"})
        assert (yield next_event(c))["reason"] == codes.CLIENT_CLOSED
        yield wait_until(lambda: not alive(pid), T)
        assert any("ignored SIGTERM" in str(e.get("log_format")) for e in self.logged)

    @defer.inlineCallbacks
    def test_program_failing_to_start_is_program_failed(self) -> None:
        server = self.make_server("--start-timeout", "1")
        c = yield server.client()
        failed = yield ask(c, "hi", intent="failstart")
        assert (failed["event_type"], failed["reason"]) == (2002, codes.PROGRAM_FAILED)
        never = yield ask(c, "hi", dialog_id="d2", intent="neverconnect")
        assert (never["event_type"], never["reason"]) == (2002, codes.PROGRAM_FAILED)
        assert server.service.runtime.live() == []

    @defer.inlineCallbacks
    def test_grandchildren_are_stopped_with_the_program(self) -> None:
        server = self.make_server()
        c = yield server.client()
        child = content_json((yield ask(c, "spawn", intent="grandchild")))["child_pid"]
        assert alive(child)
        c.send({"event_type": 1002, "dialog_id": "d1", "user_id": "u1"})
        yield next_event(c)
        yield wait_until(lambda: not alive(child), T)

    @defer.inlineCallbacks
    def test_garbage_from_a_program_stops_only_that_instance(self) -> None:
        server = self.make_server()
        c = yield server.client()
        yield ask(c, "x", dialog_id="good", intent="pid")
        c.send(message("x", dialog_id="bad", intent="garbage"))
        ended = yield next_event(c)
        assert (ended["dialog_id"], ended["reason"]) == ("bad", codes.PROGRAM_EXITED)
        assert content_json((yield ask(c, "still", dialog_id="good")))["content"] == "still"

    @defer.inlineCallbacks
    def test_busy_when_max_programs_live(self) -> None:
        server = self.make_server("--max-programs", "1")
        c = yield server.client()
        yield ask(c, "x", dialog_id="a", intent="pid")
        busy = yield ask(c, "x", dialog_id="b", intent="pid", message_id="mb")
        assert (busy["event_type"], busy["code"], busy["message_id"]) == (2004, codes.BUSY, "mb")

    @defer.inlineCallbacks
    def test_memory_is_per_user_and_survives_a_restart(self) -> None:
        server = self.make_server()
        c = yield server.client()
        assert (yield ask(c, "set city Paris", dialog_id="m1", intent="memory"))[
            "messages"]["content"] == "saved city"
        got = yield ask(c, "get city", dialog_id="m2", intent="memory")  # a later dialog
        assert json.loads(got["messages"]["content"]) == "Paris"
        other = yield ask(c, "get city", dialog_id="m3", user_id="u2", intent="memory")
        assert json.loads(other["messages"]["content"]) is None
        yield server.stop()
        saved = json.loads((server.data / "m1.json").read_text())
        assert saved["memory"]["memory"]["city"]["value"] == "Paris"
        again = self.make_server(data_from=server)
        c2 = yield again.client()
        got = yield ask(c2, "get city", dialog_id="m4", intent="memory")
        assert json.loads(got["messages"]["content"]) == "Paris"

    @defer.inlineCallbacks
    def test_replies_wait_for_an_absent_upstream(self) -> None:
        """The sender leaves right after sending: every reply waits, in order, for
        the next upstream to connect."""
        server = self.make_server()
        c = yield server.client()
        c.send(message("go", intent="background"))
        c.transport.loseConnection()  # the frame and the FIN leave together
        yield c.closed
        yield wait_until(lambda: server.service.router.pending_count() >= 3, T)
        c2 = yield server.client()
        events = []
        for _ in range(3):
            events.append((yield next_event(c2)))
        assert [e["event_type"] for e in events] == [2001, 2002, 2001]
        assert events[0]["messages"]["content"] == "working"
        assert events[2]["background"] is True

    @defer.inlineCallbacks
    def test_stopping_the_server_stops_every_program(self) -> None:
        server = self.make_server()
        c = yield server.client()
        pids = []
        for d in ("a", "b", "c"):
            pids.append(content_json((yield ask(c, "x", dialog_id=d, intent="pid")))["pid"])
        runtime_dir = server.service.runtime.runtime_dir
        yield server.stop()
        assert not any(alive(p) for p in pids)
        assert not os.path.exists(runtime_dir)
