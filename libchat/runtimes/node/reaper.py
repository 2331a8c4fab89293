"""No orphans: every process libchat starts dies with it, even after ``kill -9``.

Three layers, each covering what the previous one cannot:

1. The Node SDK exits when its socket closes or its stdin (a pipe from
   libchat) reaches EOF: a killed server takes its direct children along.
2. A watchdog process (``python -m libchat.runtimes.node.reaper watch``), in its own session,
   holds a pipe from the server. When the pipe ends without a "stopping" line
   the server died: it sends SIGTERM to every process of this run, SIGKILL
   after a short grace, and removes the run's socket directory. This catches
   grandchildren and programs that ignore both signals and EOF.
3. At start, the server removes the socket directories of dead runs (their
   ``run.lock`` is no longer locked) and kills what is left of them, for the
   case where the watchdog died too.

A process is "ours" only when its environment carries ``LIBCHAT_RUN=<run id>``
(a random id per run, set by the runtime and inherited by the programs'
children): nothing is ever killed on the strength of a pid or a process
group alone, which the kernel may have reused.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

from twisted.internet import defer
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

MARKER = "LIBCHAT_RUN"
PREFIX = "libchat-"
LOCK = "run.lock"
INFO = "run.json"
STOPPING = b"stopping\n"
# sun_path holds 108 bytes: base + "/libchat-XXXXXXXX" + "/i<20 digits>.sock" + NUL
MAX_RUNTIME_BASE = 108 - 1 - 17 - 27

log = Logger()


def make_runtime_dir(base: str | None = None) -> Path:
    """A fresh 0700 directory for sockets; short, so ``sun_path`` (108 bytes)
    never overflows whatever the dialog id."""
    base = base or os.environ.get("XDG_RUNTIME_DIR") or "/tmp"
    if len(os.fsencode(base)) > MAX_RUNTIME_BASE:
        raise ValueError(f"runtime directory {base!r} is too long for Unix socket paths "
                         f"({MAX_RUNTIME_BASE} bytes at most)")
    path = Path(tempfile.mkdtemp(prefix=PREFIX, dir=base))
    os.chmod(path, 0o700)
    return path


def marked_pids(run_id: str, proc: Path = Path("/proc")) -> list[int]:
    """Processes whose environment carries this run's marker (zombies have
    an empty environment and are skipped: they are already dead)."""
    needle = f"{MARKER}={run_id}".encode()
    found = []
    me = os.getpid()
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone, or another user's
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def signal_all(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def kill_run(run_id: str, grace: float) -> int:
    """SIGTERM every process of the run, SIGKILL what is left after ``grace``.
    Returns how many processes were found. Bounded: at most ``grace + 2`` s."""
    seen: set[int] = set()
    deadline = time.monotonic() + grace
    pids = marked_pids(run_id)
    seen.update(pids)
    signal_all(pids, signal.SIGTERM)
    while pids and time.monotonic() < deadline:
        time.sleep(0.05)
        pids = marked_pids(run_id)
        seen.update(pids)
    end = time.monotonic() + 2.0
    while pids and time.monotonic() < end:  # forks in flight are caught by rescans
        signal_all(pids, signal.SIGKILL)
        time.sleep(0.05)
        pids = marked_pids(run_id)
        seen.update(pids)
    return len(seen)


class RunDir:
    """One server run: its id (the marker its processes carry) and its private
    socket directory, made on first use with a lock held while the server
    lives and ``run.json`` naming the run id."""

    def __init__(self, base: Path, run_id: str) -> None:
        self.base = base
        self.run_id = run_id
        self.path: Path | None = None
        self._lock_fd: int | None = None

    @classmethod
    def prepare(cls, base: str | None = None) -> "RunDir":
        """A new run in ``base``, after removing what dead runs left there."""
        resolved = Path(base or os.environ.get("XDG_RUNTIME_DIR") or "/tmp")
        clean_stale(resolved)
        return cls(resolved, secrets.token_hex(12))

    @classmethod
    def create_in(cls, base: str) -> "RunDir":
        run = cls.prepare(base)
        run.create()
        return run

    def create(self) -> Path:
        """Make the directory (the runtime calls this before its first program)."""
        path = make_runtime_dir(str(self.base))
        fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        (path / INFO).write_text(json.dumps({"run_id": self.run_id, "pid": os.getpid(),
                                             "started": time.time()}))
        self.release()
        self.path, self._lock_fd = path, fd
        return path

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """The environment for programs: the caller's plus this run's marker."""
        env = dict(os.environ if base is None else base)
        env[MARKER] = self.run_id
        return env

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def run_dirs(base: Path, run_id: str) -> list[Path]:
    """The directories in ``base`` whose run.json names ``run_id``."""
    found = []
    for path in base.glob(PREFIX + "*"):
        try:
            if json.loads((path / INFO).read_text()).get("run_id") == run_id:
                found.append(path)
        except (OSError, ValueError, AttributeError):
            continue
    return found


def clean_stale(base: Path) -> int:
    """Remove the run directories of dead runs in ``base`` and kill what is
    left of them. Returns the number of processes found."""
    killed = 0
    if not base.is_dir():
        return 0
    for path in base.glob(PREFIX + "*"):
        try:
            st = path.lstat()
            if not path.is_dir() or path.is_symlink() or st.st_uid != os.getuid():
                continue
            fd = os.open(path / LOCK, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            continue  # not a run directory we can prove is ours
        try:
            try:  # written after the owner took the lock: no run.json, no proof
                run_id = str(json.loads((path / INFO).read_text())["run_id"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # its server is alive
            found = kill_run(run_id, grace=1.0)
            killed += found
            shutil.rmtree(path, ignore_errors=True)
            log.info("removed stale run directory {path} ({found} leftover processes)",
                     path=str(path), found=found)
        finally:
            os.close(fd)
    return killed


class WatchdogProtocol(ProcessProtocol):
    def __init__(self) -> None:
        self.exited: defer.Deferred[None] = defer.Deferred()

    def errReceived(self, data: bytes) -> None:
        for line in data.decode("utf-8", "replace").splitlines():
            log.info("[watchdog] {line}", line=line)

    def processEnded(self, reason: Failure) -> None:
        self.exited.callback(None)


class Watchdog:
    """Starts the watchdog process and, at a clean stop (after the programs
    are stopped), tells it so and waits for it to exit."""

    def __init__(self, reactor: Any, run: RunDir, grace: float) -> None:
        self.reactor = reactor
        self.run = run
        self.grace = grace
        self.protocol = WatchdogProtocol()
        self.process: Any = None

    def start(self) -> None:
        argv = [sys.executable, "-m", "libchat.runtimes.node.reaper", "watch", str(self.run.base),
                self.run.run_id, str(self.grace)]
        env = {k: v for k, v in os.environ.items() if k != MARKER}
        self.process = self.reactor.spawnProcess(self.protocol, sys.executable, argv, env=env,
                                                 childFDs={0: "w", 1: "r", 2: "r"})
        log.info("watchdog started as pid {pid} for run {run_id}", pid=self.process.pid,
                 run_id=self.run.run_id)

    def stop(self) -> "defer.Deferred[None]":
        if self.process is None:
            self.run.release()
            return defer.succeed(None)
        if not self.protocol.exited.called:
            self.process.write(STOPPING)
            self.process.closeStdin()
        d: defer.Deferred[None] = defer.Deferred()

        def exited(_: Any) -> None:
            self.run.release()
            d.callback(None)
        self.protocol.exited.addBoth(exited)
        return d


def watch(base: str, run_id: str, grace: float) -> int:
    """The watchdog's main loop: block on stdin until the server is gone."""
    os.setsid()  # terminal signals for the server's group must not reach us
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    data = b""
    while True:
        try:
            chunk = os.read(0, 64)
        except InterruptedError:
            continue
        if not chunk:
            break
        data += chunk
    clean = data.startswith(STOPPING)
    if clean:  # the server stops its programs itself; sweep up what outlives it
        deadline = time.monotonic() + grace + 2.0
        while marked_pids(run_id) and time.monotonic() < deadline:
            time.sleep(0.1)
        found = kill_run(run_id, grace=0.5)
    else:
        found = kill_run(run_id, grace=min(grace, 1.0))
    for path in run_dirs(Path(base), run_id):
        shutil.rmtree(path, ignore_errors=True)
    try:  # the server may be gone: its end of our stderr with it
        sys.stderr.write(f"{'stopped' if clean else 'server gone'}; "
                         f"{found} leftover processes stopped\n")
        sys.stderr.flush()
    except OSError:
        pass
    return 0


if __name__ == "__main__":  # pragma: no cover - run as the watchdog process
    if len(sys.argv) == 5 and sys.argv[1] == "watch":
        sys.exit(watch(sys.argv[2], sys.argv[3], float(sys.argv[4])))
    sys.stderr.write("usage: python -m libchat.runtimes.node.reaper watch BASE RUN_ID GRACE\n")
    sys.exit(2)
