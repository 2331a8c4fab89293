"""A private ``redis-server`` for tests: its own free loopback port, its own
temp dir, AOF with ``appendfsync always`` (what §14 requires of production),
never the system one.

Synchronous on purpose: starting, killing and restarting block the caller for
the few tens of milliseconds redis needs, so a chaos test inside the reactor
can say ``server.kill9(); ...; server.restart()`` and know where it stands.
Readiness is a real ``PING`` answered ``+PONG`` (with ``AUTH`` first when a
password is set), polled against a deadline; ``stop()`` leaves no process and
no files.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REDIS_SERVER = os.environ.get("LIBCHAT_REDIS_SERVER", "/usr/bin/redis-server")
READY_SECONDS = 10.0


def free_port() -> int:
    """A loopback port nobody listens on right now (redis binds it just after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _command(*args: str) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        raw = a.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


def _reply(f: Any) -> Any:
    """One RESP2 reply from a file of the socket."""
    line = f.readline()
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)[:-2]
        return data
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_reply(f) for _ in range(n)]
    raise RuntimeError(f"unexpected reply {line!r}")


class RedisServer:
    """One redis-server process in a temp dir it owns.

    ``kill9()`` is a crash (the AOF keeps every acknowledged write, since it
    fsyncs each one); ``restart()`` starts it again on the same dir and port.
    """

    def __init__(self, password: str | None = None, unixsocket: bool = False,
                 appendfsync: str = "always") -> None:
        if not os.path.exists(REDIS_SERVER):
            pytest.skip(f"{REDIS_SERVER} is not installed (apt-get install redis-server)")
        self.password = password
        self.appendfsync = appendfsync  # "everysec": a Redis that may lose acked writes
        self.dir = Path(tempfile.mkdtemp(prefix="lcredis-"))
        self.port = free_port()
        self.socket_path: Path | None = self.dir / "redis.sock" if unixsocket else None
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    # -- what clients use --------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """The Twisted client endpoint string of this server (CONTRACT §14)."""
        return f"tcp:host=127.0.0.1:port={self.port}"

    @property
    def unix_endpoint(self) -> str:
        assert self.socket_path is not None, "started without unixsocket=True"
        return f"unix:path={self.socket_path}"

    # -- lifecycle --------------------------------------------------------------

    def _argv(self) -> list[str]:
        argv = [REDIS_SERVER, str(self.dir / "redis.conf"),
                "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--appendonly", "yes", "--appendfsync", self.appendfsync, "--save", "",
                "--daemonize", "no", "--logfile", str(self.dir / "redis.log")]
        if self.socket_path is not None:
            argv += ["--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        return argv

    def start(self) -> RedisServer:
        assert self.proc is None, "already running"
        conf = self.dir / "redis.conf"
        # the password goes in a 0600 file, not on a command line `ps` shows
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            if self.password is not None:
                f.write(f'requirepass "{self.password}"\n')
        self.proc = subprocess.Popen(self._argv(), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.starts += 1
        try:
            self._wait_ready()
        except BaseException:
            self._reap(signal.SIGKILL)
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_SECONDS
        last: Exception | None = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited {self.proc.returncode}: "
                                   + self.log_tail())
            try:
                if self.ping():
                    return
            except OSError as e:
                last = e
            time.sleep(0.01)  # polling a readiness condition, with a deadline
        raise TimeoutError(f"redis-server not ready in {READY_SECONDS}s ({last}): "
                           + self.log_tail())

    def ping(self) -> bool:
        """True once the server answers PING (after AUTH when it has a password)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as s:
            f = s.makefile("rb")
            if self.password is not None:
                s.sendall(_command("AUTH", self.password))
                if not f.readline().startswith(b"+OK"):
                    return False
            s.sendall(_command("PING"))
            return f.readline().startswith(b"+PONG")

    def call(self, *args: str) -> Any:
        """One command on a fresh connection; the reply parsed (bulk: bytes)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5.0) as s:
            f = s.makefile("rb")
            if self.password is not None:
                s.sendall(_command("AUTH", self.password))
                _reply(f)
            s.sendall(_command(*args))
            return _reply(f)

    def kill9(self) -> None:
        """A crash: SIGKILL, reaped; the dir (and its AOF) stays for restart()."""
        self._reap(signal.SIGKILL)

    def restart(self) -> None:
        """Start again on the same dir and port (after kill9() or stop_process())."""
        if self.proc is not None:
            self._reap(signal.SIGKILL)
        self.start()

    def stop_process(self) -> None:
        self._reap(signal.SIGTERM)

    def stop(self) -> None:
        """Stop the server and remove its dir: nothing is left behind."""
        self._reap(signal.SIGTERM)
        shutil.rmtree(self.dir, ignore_errors=True)

    def _reap(self, sig: int) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return " | ".join((self.dir / "redis.log").read_text().splitlines()[-lines:])
        except OSError:
            return "(no log)"


def running_server(password: str | None = None, unixsocket: bool = False
                   ) -> Iterator[RedisServer]:
    """The body of a fixture: a started server, always stopped afterwards."""
    server = RedisServer(password=password, unixsocket=unixsocket)
    try:
        yield server.start()
    finally:
        server.stop()
