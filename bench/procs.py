"""The processes a benchmark runs: a real ``twistd -n libchat``, the Node
reference echo server, the load generator; and what /proc says about them."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VENV_BIN = Path(sys.executable).parent


class Proc:
    """A child whose stdout lines are read by a thread, so waits are bounded."""

    def __init__(self, argv: list[str], *, stdin: bool = False, cwd: Path = ROOT,
                 env: dict[str, str] | None = None) -> None:
        self.argv = argv
        self.popen = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL, text=True, bufsize=1)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.log: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.log.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def wait_line(self, text: str, timeout: float) -> str:
        """The first (new) line containing ``text``; fails after ``timeout``."""
        end = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, end - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"{self.argv[0]}: no {text!r} within {timeout}s") from None
            if line is None:
                raise RuntimeError(f"{self.argv[:3]} exited: {''.join(self.log[-20:])}")
            if text in line:
                return line

    def result(self, timeout: float) -> Any:
        """Wait for exit; the last stdout line parsed as JSON."""
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        self._reader.join(10)
        if self.popen.returncode != 0:
            raise RuntimeError(f"{' '.join(self.argv[:3])} failed ({self.popen.returncode}):\n"
                               + "".join(self.log[-30:]))
        return json.loads(next(ln for ln in reversed(self.log) if ln.startswith("{")))

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.popen.returncode

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


def node(script: str, *args: str, stdin: bool = False) -> Proc:
    return Proc(["node", str(HERE / script), *args], stdin=stdin)


def loadgen(config: dict[str, Any], timeout: float = 600.0) -> Any:
    return node("loadgen.js", json.dumps(config)).result(timeout)


class Libchat(Proc):
    """``twistd -n libchat`` with the bench programs, its front on a Unix socket."""

    def __init__(self, workdir: Path, *extra: str) -> None:
        self.front = workdir / "front.sock"
        data = workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        super().__init__([
            str(VENV_BIN / "twistd"), "-n", "--pidfile=", "libchat",
            "--front", f"unix:{self.front}", "--api", "tcp:0:interface=127.0.0.1",
            "--programs", str(HERE / "programs"), "--data", str(data),
            "--runtime-dir", str(workdir), "--max-programs", "2000", *extra])
        self.wait_line("libchat ready", 60)
        self.target = {"kind": "front", "path": str(self.front)}

    def shutdown(self, timeout: float = 60.0) -> dict[str, Any]:
        """SIGTERM, then what a clean stop looks like: twistd logs "Server Shut
        Down." (it then re-raises the signal, so the exit status is -15) and
        no program instance outlives it."""
        kids = self.children()
        status = self.stop(timeout)
        self._reader.join(10)
        alive = [p for p in kids if Path(f"/proc/{p}").exists()]
        return {"status": status, "clean": any("Server Shut Down." in ln for ln in self.log)
                and not alive, "instances_left": len(alive)}

    def children(self) -> list[int]:
        """Pids of the program instances (direct children of twistd)."""
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == self.pid:
                    found.append(int(entry))
        return found


def memory(pid: int) -> dict[str, int] | None:
    """Rss, Pss and private bytes of a process, from smaps_rollup; None if it
    is gone (an instance may end between listing and reading)."""
    out = {}
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    for line in text.splitlines()[1:]:
        key, value, *_ = line.split()
        out[key.rstrip(":")] = int(value) * 1024
    return {"rss": out["Rss"], "pss": out["Pss"],
            "private": out["Private_Clean"] + out["Private_Dirty"]}


def node_start_ms(count: int) -> list[float]:
    """Wall time of ``node -e 0`` (Node's own start-up), ``count`` times."""
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        subprocess.run(["node", "-e", "0"], check=True)
        times.append((time.perf_counter() - t0) * 1000)
    return times


def rss(pid: int) -> int:
    """Resident memory of a process that must be alive (libchat itself)."""
    m = memory(pid)
    if m is None:
        raise RuntimeError(f"process {pid} is gone")
    return m["rss"]
