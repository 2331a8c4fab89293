"""Dify behind a real ``twistd libchat``, spoken to with the frame protocol,
the agent being the fake Dify server (tests/agents/fake_dify.py) in its own
process on loopback."""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.hardening.procs import FrameConn
from tests.agents.serving import agent_servers, msg
from tests.launcher import ROOT, Process, wait_until

KEY = "sk-dify-very-secret-0123456789"


class Fake:
    def __init__(self, proc: Process, port: int) -> None:
        self.proc, self.port = proc, port
        self.base = f"http://127.0.0.1:{port}"

    def script(self, *steps: dict[str, Any], delay: float | None = None) -> None:
        body: dict[str, Any] = {"steps": list(steps)}
        if delay is not None:
            body["delay"] = delay
        req = urllib.request.Request(self.base + "/_script", data=json.dumps(body).encode(),
                                     method="POST")
        urllib.request.urlopen(req, timeout=5).read()

    def state(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.base + "/_state", timeout=5) as r:
            return json.loads(r.read())


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[Fake]:
    proc = Process([sys.executable, "-m", "tests.agents.fake_dify", "--key", KEY], cwd=ROOT,
                   log_path=tmp_path / "fake.log").spawn()
    try:
        port = int(proc.wait_log(r"fake dify listening on (\d+)", timeout=15).group(1))
        yield Fake(proc, port)
    finally:
        proc.close()


def program(base: Path, name: str, fake: Fake, **section: Any) -> None:
    (base / name).mkdir(parents=True, exist_ok=True)
    (base / name / "package.json").write_text(json.dumps({"libchat": {
        "runtime": "dify", "base_url": f"{fake.base}/v1", "api_key_env": "DIFY_TEST_KEY",
        "keywords": [name], **section}}))


@pytest.fixture
def server(tmp_path: Path, fake: Fake) -> Iterator[Any]:
    def write(**section: Any) -> Path:
        programs = tmp_path / "programs"
        program(programs, "helper", fake, **section)
        program(programs, "keyless", fake, api_key_env="NOT_SET_ANYWHERE")
        return programs
    yield from agent_servers(tmp_path, KEY, "DIFY_TEST_KEY", write)


def answer(conn: FrameConn, timeout: float = 15) -> list[dict[str, Any]]:
    return conn.recv_until(lambda e: e["event_type"] in (2001, 2002, 2003, 2004), timeout)


def test_blocking_answer(server: Any, fake: Fake) -> None:
    lc = server(response_mode="blocking")
    conn = FrameConn(lc.ports["front"])
    conn.send(msg("helper: hello"))
    got = answer(conn)
    assert [(e["event_type"], e["messages"]["content"]) for e in got] == [
        (2001, "echo: helper: hello")]
    body = fake.state()["requests"][0]["body"]
    assert body["response_mode"] == "blocking" and body["user"] == "u1"
    assert body["conversation_id"] == "" and body["inputs"] == {} and body["files"] == []


def test_streaming_is_merged_into_exactly_one_2001_and_the_conversation_is_kept(
        server: Any, fake: Fake) -> None:
    lc = server()
    conn = FrameConn(lc.ports["front"])
    conn.send(msg("helper: a picture please"))
    first = answer(conn)
    assert [e["event_type"] for e in first] == [2001]
    assert first[0]["messages"] == {"content": "echo: helper: a picture please",
                                    "attachments": [{"type": "image",
                                                     "url": "https://files/f1.png"}]}
    conn.send(msg("again"))
    assert answer(conn)[0]["messages"]["content"] == "echo: again"
    bodies = [r["body"] for r in fake.state()["requests"]]
    assert bodies[0]["conversation_id"] == "" and bodies[1]["conversation_id"].startswith("conv-")
    kept = bodies[1]["conversation_id"]
    # kill -9 and restart: the conversation id came back from the journal
    # (written behind, docs/durability.md: the kill comes once it is on disk)
    wait_until(lambda: any(kept.encode() in f.read_bytes()
                           for f in lc.data.rglob("*") if f.is_file()), 10, "journaled")
    lc.kill9()
    lc.restart()
    conn = FrameConn(lc.ports["front"])
    conn.send(msg("helper: after the crash"))
    got = conn.recv_until(lambda e: e["event_type"] == 2001, 15)
    # the binding ended with the crash (2002 program_exited, as for any
    # program); the next turn still continues the agent's conversation
    assert [e["event_type"] for e in got] == [2002, 2001]
    assert got[-1]["messages"]["content"] == "echo: helper: after the crash"
    assert fake.state()["requests"][-1]["body"]["conversation_id"] == kept


def test_an_error_event_is_program_failed_and_no_2001(server: Any, fake: Fake) -> None:
    lc = server()
    fake.script({"error_event": "the model is overloaded"})
    conn = FrameConn(lc.ports["front"])
    conn.send(msg("helper: hi"))
    got = answer(conn)
    assert [(e["event_type"], e.get("reason")) for e in got] == [(2002, "program_failed")]
    assert "the model is overloaded" in got[0]["detail"]
    assert got[0]["detail"].startswith("agent_error")


def test_401_is_program_failed_without_the_key(server: Any, fake: Fake) -> None:
    lc = server()
    fake.script({"status": 401})
    conn = FrameConn(lc.ports["front"])
    conn.send(msg("helper: hi"))
    got = answer(conn)
    assert [(e["event_type"], e.get("reason")) for e in got] == [(2002, "program_failed")]
    assert "401" in got[0]["detail"] and KEY not in json.dumps(got)


def test_429_then_success_is_the_answer(server: Any, fake: Fake) -> None:
    lc = server()
    fake.script({"status": 429})
    conn = FrameConn(lc.ports["front"])
    conn.send(msg("helper: hi"))
    got = answer(conn)
    assert [(e["event_type"], e["messages"]["content"]) for e in got] == [(2001, "echo: helper: hi")]
    assert len(fake.state()["requests"]) == 2


def test_close_during_a_slow_stream_stops_the_task(server: Any, fake: Fake) -> None:
    lc = server()
    fake.script({"slow": True})
    conn = FrameConn(lc.ports["front"])
    conn.send(msg("helper: take your time"))
    deadline = time.monotonic() + 10
    while not fake.state()["in_flight"]:
        assert time.monotonic() < deadline, "the request never reached the fake"
        time.sleep(0.02)
    conn.send({"event_type": 1002, "dialog_id": "d1", "user_id": "u1"})
    got = answer(conn)
    assert [(e["event_type"], e.get("reason")) for e in got] == [(2002, "client_closed")]
    deadline = time.monotonic() + 10
    while not fake.state()["stops"]:
        assert time.monotonic() < deadline, "stop was never called"
        time.sleep(0.02)
    stop = fake.state()["stops"][0]
    assert stop["user"] == "u1" and stop["task_id"].startswith("task-")


def test_a_program_without_its_key_is_unavailable(server: Any, fake: Fake) -> None:
    lc = server()
    conn = FrameConn(lc.ports["front"])
    conn.send(msg("keyless: hi"))
    assert [e["event_type"] for e in answer(conn)] == [2003]
    assert "keyless: unavailable: environment variable NOT_SET_ANYWHERE" in lc.output()
    assert fake.state()["requests"] == []


def test_a_burst_keeps_order_per_dialog_and_the_concurrency_cap(server: Any, fake: Fake) -> None:
    lc = server(max_concurrency=4)
    fake.script(delay=0.05)
    conns = [FrameConn(lc.ports["front"]) for _ in range(16)]
    for i, conn in enumerate(conns):
        for n in range(3):
            conn.send(msg(f"helper {i} {n}" if n == 0 else f"{i} {n}", f"burst-{i}"))
    for i, conn in enumerate(conns):
        got = [conn.recv_until(lambda e: e["event_type"] == 2001, 30)[-1] for _ in range(3)]
        assert [e["messages"]["content"] for e in got] == [
            f"echo: helper {i} 0", f"echo: {i} 1", f"echo: {i} 2"]
    state = fake.state()
    assert len(state["requests"]) == 48 and state["max_in_flight"] == 4


def test_metrics_count_agent_turns(server: Any, fake: Fake) -> None:
    lc = server()
    conn = FrameConn(lc.ports["front"])
    conn.send(msg("helper: hi"))
    answer(conn)
    m = lc.metrics()
    with urllib.request.urlopen(lc.url("/metrics"), timeout=10) as r:
        assert KEY.encode() not in r.read()
    assert m[("libchat_agent_turns_total", (("outcome", "answered"), ("program", "helper")))] == 1
    assert m[("libchat_agent_in_flight", (("program", "helper"),))] == 0
    assert m[("libchat_agent_turn_seconds_count", (("program", "helper"),))] == 1
    assert m[("libchat_agent_first_byte_seconds_count", (("program", "helper"),))] == 1
