"""The one launcher of a real ``twistd -n libchat`` subprocess.

Used by the end-to-end tests (``tests/web``, ``tests/hardening``,
``tests/twistd_proc.py``), the soak (``tests/soak``) and the benchmark
(``bench/procs.py``). It lives in ``tests/`` rather than ``libchat/``: it is
scaffolding, not part of the shipped package, and the benchmark only runs
from a checkout (``python -m bench`` in the repository root), where
``tests`` is an importable package beside ``bench``. It imports nothing but
the standard library, so importing it costs the benchmark nothing.

What it does, for every user alike:

- every listener (front, memory API, web) on port ``0`` of 127.0.0.1, so
  parallel runs on one machine never collide on a default port; the bound
  ports come from the readiness lines ``libchat <role> listening on
  host:port`` logged before ``libchat ready``;
- a bounded wait for ``libchat ready`` (an error naming the last log lines if
  twistd exits or stays silent);
- every log line kept in ``lines`` and appended to a log file in the work
  directory (a temporary directory: nothing lands in the checkout);
- ``stop()``: SIGTERM, then SIGKILL after a grace; ``close()`` is the
  finalizer (always kill, never raise); ``kill9()`` and ``restart()`` on the
  same data directory for crash tests.

Waits on things no process can signal (another process's death) use
``wait_until``, bounded.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "programs"
FIXTURES = ROOT / "tests" / "programs"
TWISTD = Path(sys.executable).with_name("twistd")
LISTENING = re.compile(r"libchat (\w+) listening on ([\d.]+):(\d+)")
READY = "libchat ready"
LOOPBACK_ZERO = "tcp:0:interface=127.0.0.1"
# what a healthy server never logs
BAD_LOG = re.compile(r"Unhandled Error|Traceback \(most recent call last\)|#critical\]")


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Poll a condition nothing can signal (a process's death), bounded;
    returns the predicate's first true value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what or predicate}")
        time.sleep(0.02)


class Process:
    """A child whose output lines a thread reads, so every wait is bounded.

    ``on_line(line)`` and ``on_exit(returncode)`` are called from reader
    threads (the Twisted adapter in ``tests/twistd_proc.py`` hops them onto
    the reactor).
    """

    def __init__(self, argv: Sequence[str], *, cwd: Path | str = ROOT,
                 env: dict[str, str] | None = None, stdin: bool = False,
                 log_path: Path | None = None,
                 on_line: Callable[[str], None] | None = None,
                 on_exit: Callable[[int], None] | None = None,
                 on_err: Callable[[str], None] | None = None) -> None:
        self.argv = [str(a) for a in argv]
        self.cwd = Path(cwd)
        self.env = dict(os.environ if env is None else env)
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.stdin = stdin
        self.log_path = log_path
        self.on_line = on_line
        self.on_exit = on_exit
        # with on_err, stderr is read apart (lines go to on_err, and to the
        # output as well): tests of one-line start-up errors need it
        self.on_err = on_err
        self.lines: list[str] = []
        self._cursor = 0  # for wait_for: lines consumed so far
        self._cond = threading.Condition()
        self._eof = False
        self.popen: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    # -- running -----------------------------------------------------------------

    def spawn(self) -> Process:
        self._eof = False
        self.popen = subprocess.Popen(
            self.argv, cwd=self.cwd, env=self.env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if self.on_err else subprocess.STDOUT, stdin=subprocess.PIPE if self.stdin else subprocess.DEVNULL,
            text=True, errors="replace", bufsize=1)
        self._reader = threading.Thread(target=self._read, args=(self.popen,), daemon=True)
        self._reader.start()
        err_reader = None
        if self.on_err is not None:
            err_reader = threading.Thread(target=self._read_err, args=(self.popen,), daemon=True)
            err_reader.start()
        if self.on_exit is not None:
            threading.Thread(target=self._waiter, args=(self.popen, self._reader, err_reader),
                             daemon=True).start()
        return self

    def _read(self, popen: subprocess.Popen[str]) -> None:
        assert popen.stdout is not None
        log: IO[str] | None = open(self.log_path, "a") if self.log_path else None
        try:
            for raw in popen.stdout:
                line = raw.rstrip("\n")
                if log is not None:
                    log.write(line + "\n")
                    log.flush()
                with self._cond:
                    self.lines.append(line)
                    self._line(line)
                    self._cond.notify_all()
                if self.on_line is not None:
                    self.on_line(line)
        finally:
            if log is not None:
                log.close()
            with self._cond:
                self._eof = True
                self._cond.notify_all()

    def _read_err(self, popen: subprocess.Popen[str]) -> None:
        assert popen.stderr is not None and self.on_err is not None
        for raw in popen.stderr:
            line = raw.rstrip("\n")
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
            self.on_err(line)

    def _waiter(self, popen: subprocess.Popen[str], reader: threading.Thread,
                err_reader: threading.Thread | None = None) -> None:
        code = popen.wait()
        reader.join(5)  # the last lines first (a daemon's child may hold the pipe)
        if err_reader is not None:
            err_reader.join(5)
        assert self.on_exit is not None
        self.on_exit(code)

    def _line(self, line: str) -> None:
        """Hook, called with the condition held, for each new line."""

    @property
    def pid(self) -> int:
        assert self.popen is not None, "not started"
        return self.popen.pid

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def tail(self, n: int = 40) -> str:
        with self._cond:
            return "\n".join(self.lines[-n:])

    # -- waiting on output ---------------------------------------------------------

    def wait_log(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """The first log line so far (or to come) matching ``pattern``; bounded."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    m = regex.search(line)
                    if m:
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no log line {pattern!r} within {timeout}s:\n"
                                         + "\n".join(self.lines[-30:]))
                if self._eof:
                    raise RuntimeError(f"{self.argv[0]} exited without logging {pattern!r}:\n"
                                       + "\n".join(self.lines[-30:]))
                self._cond.wait(left)

    def wait_for(self, text: str, timeout: float) -> str:
        """The first line not yet consumed by ``wait_for`` that contains
        ``text`` (lines before it are consumed too); bounded."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                while self._cursor < len(self.lines):
                    line = self.lines[self._cursor]
                    self._cursor += 1
                    if text in line:
                        return line
                left = deadline - time.monotonic()
                if self._eof:
                    raise RuntimeError(f"{self.argv[0]} exited without logging {text!r}:\n"
                                       + "\n".join(self.lines[-40:]))
                if left <= 0:
                    raise TimeoutError(f"{self.argv[0]} did not log {text!r} in {timeout}s:\n"
                                       + "\n".join(self.lines[-40:]))
                self._cond.wait(left)

    def join_output(self, timeout: float = 5.0) -> None:
        """Wait (bounded) until every line of an ended process is read."""
        if self._reader is not None:
            self._reader.join(timeout)

    # -- stopping --------------------------------------------------------------------

    def signal(self, sig: int) -> None:
        if self.running:
            assert self.popen is not None
            try:
                self.popen.send_signal(sig)
            except ProcessLookupError:
                pass

    def stop(self, grace: float = 15.0) -> int | None:
        """SIGTERM, SIGKILL if still running after ``grace`` s; the exit status."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        self.join_output()
        return self.popen.returncode

    def kill9(self) -> None:
        """SIGKILL, no clean-up: what a crash looks like."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)
        self.join_output()

    def close(self) -> None:
        """Finalizer: never leaves the process running, never raises."""
        try:
            self.stop(grace=5.0)
        except Exception:  # noqa: BLE001 - a finalizer must not mask the test's error
            pass
        finally:
            if self.popen is not None and self.popen.poll() is None:
                self.popen.kill()


class Libchat(Process):
    """``twistd -n libchat`` on port-0 listeners with its own data and runtime dirs.

    ``args`` come after the defaults, so they override them (``--front
    unix:...``, ``--web tcp:8090``); ``twistd_args`` go before ``libchat``
    (``--logger ...``). The runtime directory (Unix socket paths) gets a short
    path under /tmp unless given, and is removed by ``close()``.
    """

    def __init__(self, workdir: Path, *args: str, programs: Path | str | None = BUNDLED,
                 data: Path | None = None, runtime_dir: Path | None = None,
                 twistd_args: Sequence[str] = (), env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.data = data or workdir / "data"
        self._own_runtime = runtime_dir is None
        self.runtime_base = runtime_dir or Path(tempfile.mkdtemp(prefix="lc-", dir="/tmp"))
        self.runtime_base.mkdir(parents=True, exist_ok=True)
        self.ports: dict[str, int] = {}
        defaults = ["--front", LOOPBACK_ZERO, "--api", LOOPBACK_ZERO, "--web", LOOPBACK_ZERO,
                    "--data", str(self.data), "--runtime-dir", str(self.runtime_base)]
        if programs is not None:
            defaults += ["--programs", str(programs)]
        env = dict(os.environ if env is None else env)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        super().__init__([str(TWISTD), "-n", "--pidfile=", *twistd_args, "libchat",
                          *defaults, *args], cwd=cwd or workdir, env=env,
                         log_path=workdir / "twistd.log")
        self._ready = False

    def _line(self, line: str) -> None:
        m = LISTENING.search(line)
        if m:
            self.ports[m.group(1)] = int(m.group(3))
        if READY in line:
            self._ready = True

    def start(self, timeout: float = 30.0) -> Libchat:
        """Spawn and wait (bounded) for ``libchat ready``."""
        with self._cond:
            self.ports.clear()
            self._ready = False
            self._cursor = len(self.lines)
        self.spawn()
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._ready:
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    break
                self._cond.wait(left)
            ready = self._ready
        if not ready:
            why = "exited" if self._eof else f"not ready within {timeout}s"
            self.close()
            raise AssertionError(f"twistd {why}:\n" + self.tail())
        return self

    def restart(self, timeout: float = 30.0) -> Libchat:
        """Start again on the same data and runtime directories (after
        ``stop()`` or ``kill9()``); the ports are new."""
        assert not self.running, "stop or kill9 it first"
        return self.start(timeout)

    def close(self) -> None:
        super().close()
        self.remove_runtime_dir()

    def remove_runtime_dir(self) -> None:
        """Remove the runtime directory this launcher made (not one it was given)."""
        if self._own_runtime:
            shutil.rmtree(self.runtime_base, ignore_errors=True)

    # -- what tests and the benchmark read -------------------------------------------

    @property
    def web(self) -> int:
        return self.ports["web"]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.web}{path}"

    def run_id(self) -> str:
        """The marker id of this run's processes (from the watchdog's log line)."""
        return self._this_run(r"watchdog started as pid \d+ for run (\w+)").group(1)

    def watchdog_pid(self) -> int:
        return int(self._this_run(r"watchdog started as pid (\d+)").group(1))

    def spawn_launcher_pid(self) -> int:
        """The program launcher's pid (libchat/runtimes/node/launcher.py)."""
        return int(self._this_run(r"launcher started as pid (\d+)").group(1))

    def _this_run(self, pattern: str) -> re.Match[str]:
        """Like wait_log, among the lines of the current run only (after a restart)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + 10
        with self._cond:
            start = self._run_start()
            while True:
                for line in self.lines[start:]:
                    m = regex.search(line)
                    if m:
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no log line {pattern!r}:\n" + self.tail())
                self._cond.wait(left)

    def _run_start(self) -> int:
        starts = [i for i, line in enumerate(self.lines) if "twistd" in line
                  and "starting up" in line]
        return starts[-1] if starts else 0

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """One scrape of ``/metrics``: {(sample name, sorted labels): value}."""
        import urllib.request

        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(self.url("/metrics"), timeout=10) as response:
            text = response.read().decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def wait_metric(self, name: str, labels: dict[str, str] | None = None,
                    at_least: float = 1.0, timeout: float = 10.0) -> float:
        """Wait (bounded) until a sample of ``/metrics`` reaches ``at_least``: a
        state of the server, where a log line's text would be a detail."""
        key = (name, tuple(sorted((labels or {}).items())))
        def reached() -> list[float]:
            value = self.metrics().get(key, 0.0)
            return [value] if value >= at_least else []
        return wait_until(reached, timeout, f"{name}{labels or ''} >= {at_least}")[0]

    def bad_lines(self) -> list[str]:
        """Log lines a healthy server never writes (tracebacks, critical)."""
        with self._cond:
            return [line for line in self.lines if BAD_LOG.search(line)]

    def children(self) -> list[int]:
        """Pids of the children of twistd (program instances, the watchdog);
        the programs the launcher started count, the launcher itself does not
        (libchat/runtimes/node/launcher.py)."""
        parent: dict[int, int] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                parent[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
        direct = [p for p, pp in parent.items() if pp == self.pid]
        launchers = set()
        for pid in direct:
            try:
                if b"launcher.py" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    launchers.add(pid)
            except OSError:
                continue
        return [p for p in direct if p not in launchers] + [
            p for p, pp in parent.items() if pp in launchers]
