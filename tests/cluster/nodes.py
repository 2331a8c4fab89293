"""Several real ``twistd -n libchat --redis`` nodes on one private redis-server.

Synchronous, like ``tests/launcher.py`` and ``redis_server.py``: the tests of
this folder drive real processes with blocking clients (a frame client on a
plain socket, HTTP with urllib), every wait bounded. A node is ready when it
logs ``libchat cluster node <id> serving``.
"""

from __future__ import annotations

import json
import select
import time
import urllib.error
import urllib.request
from pathlib import Path
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ..hardening.procs import FrameConn as _Blocking
from ..hardening.procs import message
from ..launcher import BUNDLED, FIXTURES, Libchat
from .redis_server import RedisServer

__all__ = ["FrameConn", "Node", "gather", "http", "message", "private_redis",
           "started_nodes"]

SERVING = r"libchat cluster node (\S+) serving"


class Node(Libchat):
    def __init__(self, workdir: Path, redis: RedisServer, node_id: str, *args: str,
                 programs: str = f"{FIXTURES}:{BUNDLED}") -> None:
        self.node_id = node_id
        super().__init__(workdir / node_id, "--redis", redis.endpoint, "--node-id", node_id,
                         "--kill-grace", "1", *args, programs=programs)

    def start(self, timeout: float = 30.0) -> "Node":
        super().start(timeout)
        self.wait_serving(timeout)
        return self

    def wait_serving(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            line = self.wait_for("serving (Redis", max(0.1, deadline - time.monotonic()))
            if self.node_id in line:
                return

    def front(self, timeout: float = 10.0) -> "FrameConn":
        return FrameConn(self.ports["front"], timeout)

    def http(self, method: str, path: str, body: Any = None, user: str | None = None,
             timeout: float = 10.0) -> tuple[int, Any]:
        return http(self.ports["web"], method, path, body, user, timeout)

    def health(self) -> dict[str, Any]:
        status, body = self.http("GET", "/healthz")
        assert status == 200, body
        return body["cluster"]  # type: ignore[no-any-return]


def http(port: int, method: str, path: str, body: Any = None, user: str | None = None,
         timeout: float = 10.0) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    if user is not None:
        req.add_header("X-User-Id", user)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


class FrameConn(_Blocking):
    """The hardening tests' blocking frame client, under the names these tests use."""

    next = _Blocking.recv
    until = _Blocking.recv_until


def gather(conns: list[FrameConn], count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The first ``count`` events arriving on any of ``conns``; bounded."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        for conn in conns:
            got.extend(conn.events)
            conn.events.clear()
        if len(got) >= count:
            break
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"{len(got)} of {count} events within {timeout}s")
        ready, _, _ = select.select([c.sock for c in conns], [], [], left)
        for conn in conns:
            if conn.sock in ready:
                got.append(conn.next(0.5))
    return got[:count]


@contextmanager
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of the test module's own, stopped and removed after."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def started_nodes(work: Path, redis: RedisServer, names: Sequence[str],
                  *args: str, **kw: Any) -> Iterator[list[Node]]:
    """Nodes started in order, and stopped (SIGTERM, then their dirs) after."""
    started: list[Node] = []
    try:
        for name in names:
            started.append(Node(work, redis, name, *args, **kw).start())
        yield started
    finally:
        for n in started:
            n.stop()
            n.close()
