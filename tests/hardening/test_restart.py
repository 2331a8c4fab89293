"""kill -9 of twistd and a restart: nothing acknowledged is lost, every dialog
is back with its owner, program and transcript, and a dialog whose program
was running is told so (2002 program_exited) instead of hanging."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from libchat.runtimes.node.reaper import marked_pids

from .procs import Twistd, message, programs_dir, wait_until


@pytest.fixture
def server(tmp_path: Path) -> Any:
    servers: list[Twistd] = []

    def make(*args: str) -> Twistd:
        programs = programs_dir(tmp_path, "memory", "stubborn", "background")
        # port 0 for the web doors too: another run on this machine must not
        # collide on the default 8080
        s = Twistd(tmp_path, programs, "--flush-interval", "3600",
                   "--web", "tcp:0:interface=127.0.0.1", *args)
        servers.append(s)
        return s.start()

    yield make
    for s in servers:
        s.close()


def test_kill9_then_restart_loses_nothing_acknowledged(server: Any, tmp_path: Path) -> None:
    first = server()
    run_id = first.run_id()
    c = first.connect()
    # an acknowledged memory write (the program replies only after the 200)
    c.send(message("set colour teal", "mem-1", intent="memory"))
    assert c.recv()["messages"]["content"] == "saved colour"
    # a dialog whose program is running (foreground) when the server dies
    c.send(message("hi", "busy-1", intent="stubborn"))
    assert c.recv()["messages"]["content"] == "still here"
    # a reply that arrives while no upstream is connected
    c.send(message("go", "bg-1", intent="background"))
    got = c.recv_until(lambda e: e["event_type"] == 2002)
    assert [e["event_type"] for e in got] == [2001, 2002]
    c.close()
    journal = tmp_path / "data" / ".journal"

    def queued() -> bool:  # written behind, within one group commit
        return any(b'"t":"pq"' in line and b"done in background" in line
                   for p in journal.glob("*.log") for line in p.read_bytes().splitlines())
    wait_until(queued, what="pending reply journaled")
    assert not list((tmp_path / "data").glob("*.json")), "a snapshot was written; the test " \
        "must prove the journal alone"

    first.kill9()
    wait_until(lambda: not marked_pids(run_id), timeout=5, what="programs of the dead run gone")

    second = server()
    c = second.connect()
    events: list[dict[str, Any]] = []
    wanted = {("bg-1", 2001), ("busy-1", 2002), ("mem-1", 2002)}
    while not wanted <= {(e["dialog_id"], e["event_type"]) for e in events}:
        try:
            events.append(c.recv())
        except TimeoutError:
            raise AssertionError(f"{events}\n" + "\n".join(second.lines)) from None
    by_dialog = {(e["dialog_id"], e["event_type"]): e for e in events}
    assert len(events) == 3, events  # exactly once each
    assert by_dialog[("bg-1", 2001)]["messages"]["content"] == "done in background"
    assert by_dialog[("bg-1", 2001)]["background"] is True
    assert by_dialog[("busy-1", 2002)]["reason"] == "program_exited"
    assert by_dialog[("mem-1", 2002)]["reason"] == "program_exited"

    # memory saved before the crash is answered to a new instance
    c.send(message("get colour", "mem-1", intent="memory"))
    assert json.loads(c.recv()["messages"]["content"]) == "teal"
    # a dialog keeps its owner: another user is refused
    c.send(message("hi", "busy-1", user_id="intruder"))
    refused = c.recv()
    assert (refused["event_type"], refused["code"]) == (2004, "BAD_REQUEST")
    c.close()
    second.stop()  # twistd re-raises SIGTERM after a clean stop
    second.wait_log("libchat stopped")
    record = json.loads((tmp_path / "data" / "busy-1.json").read_bytes())
    assert (record["user_id"], record["program"], record["state"]) == ("u1", "stubborn", "open")
    assert [m["event_type"] for m in record["messages"]] == [1001, 2001, 2002]
    assert record["messages"][-1]["reason"] == "program_exited"
