"""Programs that misbehave: each has a defined outcome, and only the
offending instance suffers (a well-behaved dialog next to it keeps working).
Real twistd, real Node, real sockets."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any, Iterator

import pytest

from .procs import FrameConn, Twistd, message, programs_dir, wait_until


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Twistd]:
    programs = programs_dir(tmp_path, "garbage", "flood", "deaf", "twice", "slowconnect", "pid",
                            "burst")
    s = Twistd(tmp_path, programs, "--max-frame", "100000", "--kill-grace", "1").start()
    try:
        yield s
    finally:
        s.close()


def healthy(c: FrameConn, dialog_id: str = "ok-1") -> None:
    """A well-behaved dialog still gets its reply."""
    c.send(message("still fine?", dialog_id, intent="pid"))
    reply = c.recv_until(lambda e: e["dialog_id"] == dialog_id)[-1]
    assert json.loads(reply["messages"]["content"])["content"] == "still fine?"


def ended(c: FrameConn, dialog_id: str, timeout: float = 10) -> dict[str, Any]:
    return c.recv_until(lambda e: e["dialog_id"] == dialog_id and e["event_type"] == 2002,
                        timeout)[-1]


def test_garbage_frames_stop_only_that_instance(server: Twistd) -> None:
    c = server.connect()
    healthy(c)
    c.send(message("hi", "junk-1", intent="garbage"))
    assert ended(c, "junk-1")["reason"] == "program_exited"
    server.wait_log(r"closing .*BAD_FRAME bad magic 0x5a5a5a5a")
    healthy(c)


def test_flooding_program_gets_every_reply_through_in_order(server: Twistd) -> None:
    c = server.connect()
    c.send(message("go", "flood-1", intent="flood"))
    c.send(message("next", "ok-1", intent="pid"))
    seen: set[str] = set()

    def both_done(e: dict[str, Any]) -> bool:
        if e["dialog_id"] == "ok-1" or (e["dialog_id"] == "flood-1" and e["event_type"] == 2002):
            seen.add(e["dialog_id"])
        return seen == {"ok-1", "flood-1"}
    events = c.recv_until(both_done)
    assert any(e["dialog_id"] == "ok-1" and e["event_type"] == 2001 for e in events)
    floods = [e["messages"]["content"] for e in events
              if e["dialog_id"] == "flood-1" and e["event_type"] == 2001]
    assert floods == [str(n) for n in range(1, 1001)]
    assert [e["reason"] for e in events if e["event_type"] == 2002] == ["completed"]
    healthy(c)


def test_replies_written_just_before_exiting_all_arrive_before_the_2002(
        server: Twistd) -> None:
    """The exit and the socket's last bytes race; libchat reads the socket to
    its end before it reports the program gone."""
    c = server.connect()
    for n in range(3):
        dialog_id = f"burst-{n}"
        c.send(message("go", dialog_id, intent="burst"))
        events = c.recv_until(lambda e: e["dialog_id"] == dialog_id and e["event_type"] == 2002)
        assert [e["messages"]["content"].split()[0] for e in events
                if e["event_type"] == 2001] == [str(k) for k in range(1, 3001)]
        assert events[-1]["reason"] == "program_exited"


def test_program_that_never_reads_is_stopped_past_its_backlog(server: Twistd) -> None:
    c = server.connect()
    c.send(message("x", "deaf-1", intent="deaf"))
    # connected: its socket is open, so what follows is written to it
    server.wait_metric("libchat_spawn_seconds_count", {"program": "deaf"})
    big = "y" * 90_000
    for n in range(40):  # ~3.6 MB for a limit of max-frame + 1 MiB (+ socket buffers)
        c.send(message(big, "deaf-1", message_id=f"m{n}"))
    assert ended(c, "deaf-1")["reason"] == "program_exited"
    server.wait_log(r"deaf of deaf-1 is not reading its socket")
    healthy(c)


def test_second_connection_of_a_program_is_refused(server: Twistd) -> None:
    c = server.connect()
    c.send(message("try", "twice-1", intent="twice"))
    reply = c.recv_until(lambda e: e["dialog_id"] == "twice-1")[-1]
    assert reply["messages"]["content"] in ("second refused: ECONNREFUSED",
                                            "second refused: ENOENT")
    healthy(c)


def test_foreign_process_cannot_take_an_instance_socket(server: Twistd, tmp_path: Path) -> None:
    c = server.connect()
    c.send(message("hi", "slow-1", intent="slowconnect"))
    server.wait_log(r"dialog slow-1 bound to slowconnect")
    run_dir = next(server.runtime_base.glob("libchat-*"))
    path = wait_until(lambda: next(run_dir.glob("*.sock"), None), what="instance socket")
    intruder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    intruder.settimeout(10)
    try:
        intruder.connect(str(path))  # same user, but not the instance's process group
        try:
            assert intruder.recv(100) == b""
        except ConnectionResetError:
            pass
    finally:
        intruder.close()
    server.wait_log(r"refusing a connection to instance \S+ from pid \d+")
    (tmp_path / "programs" / "slowconnect" / "go").write_text("")
    reply = c.recv_until(lambda e: e["dialog_id"] == "slow-1")[-1]
    assert (reply["event_type"], reply["messages"]["content"]) == (2001, "ok")
