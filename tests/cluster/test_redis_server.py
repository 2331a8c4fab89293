"""The private redis-server helper itself: its own port and dir, AOF that
survives kill -9, and nothing left behind."""

from __future__ import annotations

import os

import pytest

from .redis_server import RedisServer


def test_start_kill9_restart_keeps_acknowledged_writes_and_stop_leaves_nothing() -> None:
    import socket
    server = RedisServer().start()
    try:
        assert server.ping()
        with socket.create_connection(("127.0.0.1", server.port), timeout=2) as s:
            s.sendall(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n")
            assert s.makefile("rb").readline() == b"+OK\r\n"
        pid = server.proc.pid if server.proc else 0
        server.kill9()
        with pytest.raises(OSError):
            server.ping()
        server.restart()
        assert server.starts == 2
        with socket.create_connection(("127.0.0.1", server.port), timeout=2) as s:
            s.sendall(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
            f = s.makefile("rb")
            assert f.readline() == b"$1\r\n" and f.readline() == b"v\r\n"
    finally:
        server.stop()
    assert not server.dir.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_password_server_answers_only_after_auth() -> None:
    server = RedisServer(password="pw1").start()
    try:
        assert server.ping()
        assert oct((server.dir / "redis.conf").stat().st_mode & 0o777) == "0o600"
        server.password = "wrong"
        assert not server.ping()
    finally:
        server.stop()
