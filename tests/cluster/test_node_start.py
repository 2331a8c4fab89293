"""Starting a cluster node (CONTRACT §14): the options, a Redis that does not
fsync every write, a node id already in use, no Redis at all."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest
from twisted.python import usage

from libchat.options import Options

from .nodes import Node, message
from .redis_server import RedisServer, free_port

pytestmark = pytest.mark.timeout(90)


@pytest.mark.parametrize("argv, message", [
    (["--node-id", "n1"], "--node-id needs --redis"),
    (["--redis-password-file", "/x"], "--redis-password-file needs --redis"),
    (["--redis", "redis://:secret@h:6379/0"], "--redis-password-file, not in the URL"),
    (["--redis", "http://h"], "expected tcp:host=H:port=P"),
    (["--redis", "tcp:host=h:port=1", "--node-id", "a b"], "--node-id must match"),
    (["--redis", "tcp:host=h:port=1", "--redis-password-file", "/nonexistent"],
     "cannot read --redis-password-file"),
])
def test_cluster_options_are_checked_before_anything_starts(
        tmp_path: Path, argv: list[str], message: str) -> None:
    (tmp_path / "programs").mkdir()
    with pytest.raises(usage.UsageError, match=message.replace("-", r"\-")) as e:
        Options().parseOptions(["--programs", str(tmp_path / "programs"), *argv])
    assert "secret" not in str(e.value)


def test_a_redis_that_does_not_fsync_every_write_is_an_error_line_and_a_health_field(
        tmp_path: Path) -> None:
    redis = RedisServer(appendfsync="everysec").start()
    node = Node(tmp_path, redis, "lax")
    try:
        node.start()
        node.wait_log(r"appendfsync everysec: an acknowledged write can be lost", 5)
        health = node.health()
        assert health["redis_durable"] is False and health["serving"] is True
    finally:
        node.stop()
        node.close()
        redis.stop()


def test_a_node_id_held_by_a_live_node_waits_and_then_gives_up_in_one_line(
        tmp_path: Path) -> None:
    redis = RedisServer().start()
    first = Node(tmp_path / "a", redis, "same")
    second = Node(tmp_path / "b", redis, "same")
    try:
        first.start()
        second.spawn()
        second.wait_log(r"node id same is still leased", 10)
        status = second.popen.wait(30) if second.popen is not None else None
        second.join_output()
        assert status not in (None, 0)
        second.wait_log(r"--node-id same is held by another live node; give each node its own", 1)
        assert first.health()["serving"] is True
    finally:
        for n in (second, first):
            n.stop()
            n.close()
        redis.stop()


def test_no_redis_at_the_endpoint_ends_twistd_with_one_line(tmp_path: Path) -> None:
    node = Node.__new__(Node)
    port = free_port()  # nobody listens there
    Node.__init__(node, tmp_path, _Nowhere(port), "lonely")
    try:
        node.spawn()
        node.wait_log(rf"cannot use Redis at tcp:host=127.0.0.1:port={port}", 30)
        assert node.popen is not None and node.popen.wait(15) != 0
    finally:
        node.stop()
        node.close()


class _Nowhere:
    def __init__(self, port: int) -> None:
        self.endpoint = f"tcp:host=127.0.0.1:port={port}"


PASSWORD = "pw-7f3c9e1d-never-logged"


def test_the_redis_password_reaches_no_log_metric_health_or_command_line(
        tmp_path: Path) -> None:
    """``--redis-password-file`` on a real twistd node and a password-protected
    redis-server, through traffic and a Redis restart (the reconnects log):
    the password is in none of the node's output, ``/metrics``, ``/healthz``
    or the process's command line; a wrong one ends the node with one line
    that does not show it either."""
    redis = RedisServer(password=PASSWORD).start()
    secret = tmp_path / "redis.pw"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    wrong = tmp_path / "wrong.pw"
    wrong.write_text("wrong-" + PASSWORD + "\n")
    node = Node(tmp_path, redis, "sec", "--redis-password-file", str(secret))
    refused = Node(tmp_path, redis, "bad", "--redis-password-file", str(wrong))
    try:
        node.start()
        conn = node.front()
        conn.send(message("set k v", "pw-d", intent="memory"))
        assert conn.until(lambda e: e["event_type"] == 2001, 15)[-1]["messages"][
            "content"] == "saved k"
        redis.kill9()
        redis.restart()
        node.wait_log(r"reading inbox \S+ again", 20)  # reconnected, with AUTH
        deadline = time.monotonic() + 20
        while True:  # a 2004 while the command connection comes back: again
            conn.send(message("get k", "pw-d", message_id=f"get-{time.monotonic()}"))
            last = conn.until(lambda e: e["event_type"] in (2001, 2004), 15)[-1]
            if last["event_type"] == 2001 or time.monotonic() > deadline:
                break
        assert last["messages"]["content"] == '"v"', last
        conn.close()
        exposed = {"output": node.output(),
                   "metrics": urllib.request.urlopen(node.url("/metrics"), timeout=10)
                   .read().decode(),
                   "healthz": json.dumps(node.http("GET", "/healthz")[1]),
                   "cmdline": Path(f"/proc/{node.pid}/cmdline").read_bytes().decode()}
        assert node.health()["serving"] is True
        refused.spawn()
        refused.wait_log(r"cannot use Redis at .*", 30)
        assert refused.popen is not None and refused.popen.wait(15) != 0
        refused.join_output()
        exposed["refused output"] = refused.output()
        leaked = [where for where, text in exposed.items() if PASSWORD in text]
        assert leaked == [], leaked
    finally:
        for n in (refused, node):
            n.stop()
            n.close()
        redis.stop()
