"""The processes a benchmark runs: a real ``twistd -n libchat``, the Node
reference echo server, the load generator; and what /proc says about them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests import launcher

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VENV_BIN = Path(sys.executable).parent


class Proc(launcher.Process):
    """A child whose output lines a thread reads (the tests' launcher), so
    waits are bounded; started by the constructor."""

    def __init__(self, argv: list[str], *, stdin: bool = False, cwd: Path = ROOT,
                 env: dict[str, str] | None = None) -> None:
        super().__init__(argv, cwd=cwd, env=env, stdin=stdin)
        self.spawn()

    @property
    def log(self) -> list[str]:
        return self.lines

    def wait_line(self, text: str, timeout: float) -> str:
        """The first (new) line containing ``text``; fails after ``timeout``."""
        return self.wait_for(text, timeout)

    def result(self, timeout: float) -> Any:
        """Wait for exit; the last stdout line parsed as JSON."""
        assert self.popen is not None
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        self.join_output(10)
        if self.popen.returncode != 0:
            raise RuntimeError(f"{' '.join(self.argv[:3])} failed ({self.popen.returncode}):\n"
                               + self.tail(30))
        return json.loads(next(ln for ln in reversed(self.lines) if ln.startswith("{")))

    def kill(self) -> None:
        self.kill9()


def node(script: str, *args: str, stdin: bool = False) -> Proc:
    return Proc(["node", str(HERE / script), *args], stdin=stdin)


def loadgen(config: dict[str, Any], timeout: float = 600.0) -> Any:
    return node("loadgen.js", json.dumps(config)).result(timeout)


class Libchat(launcher.Libchat):
    """``twistd -n libchat`` with the bench programs, its front on a Unix socket
    (the tests' launcher: bounded readiness, SIGTERM then SIGKILL)."""

    def __init__(self, workdir: Path, *extra: str, env: dict[str, str] | None = None,
                 lag_probe: bool = False) -> None:
        self.front = workdir / "front.sock"
        # the reactor stall probe (libchat/lagprobe.py): CLOCK_MONOTONIC stalls
        self.lag_file: Path | None = workdir / "lag.txt" if lag_probe else None
        full_env = dict(os.environ, **(env or {}))
        if self.lag_file is not None:
            full_env["LIBCHAT_LAG_PROBE"] = str(self.lag_file)
        super().__init__(workdir, "--front", f"unix:{self.front}",
                         "--max-programs", "2000", *extra, programs=HERE / "programs",
                         runtime_dir=workdir, cwd=ROOT, env=full_env)
        self.start(60)
        self.target = {"kind": "front", "path": str(self.front)}

    @property
    def log(self) -> list[str]:
        return self.lines

    def stalls(self, t0_ms: float, t1_ms: float) -> list[tuple[float, float]]:
        """Reactor stalls the lag probe saw between two CLOCK_MONOTONIC
        instants (ms, as the load generator reports them): (wall ms, CPU ms
        of the reactor thread over the same interval)."""
        if self.lag_file is None or not self.lag_file.exists():
            return []
        out = []
        for line in self.lag_file.read_text().splitlines():
            at, ms, cpu = line.split()
            if t0_ms <= float(at) * 1000 <= t1_ms:
                out.append((float(ms), float(cpu)))
        return out

    def shutdown(self, timeout: float = 60.0) -> dict[str, Any]:
        """SIGTERM, then what a clean stop looks like: twistd logs "Server Shut
        Down." (it then re-raises the signal, so the exit status is -15) and
        no program instance outlives it."""
        kids = self.children()
        status = self.stop(timeout)
        alive = [p for p in kids if Path(f"/proc/{p}").exists()]
        return {"status": status, "clean": any("Server Shut Down." in ln for ln in self.lines)
                and not alive, "instances_left": len(alive)}


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


def node_option_starts(count: int) -> dict[str, list[float]]:
    """Node's start-up with the options issue 14 asked about, ``count`` times
    each, interleaved (so load drifts hit every variant alike): bare, and
    loading the SDK as a program does."""
    from libchat.runtimes.node.command import NODE_SDK_DIR
    env = dict(os.environ, NODE_PATH=str(NODE_SDK_DIR))
    sdk = "require('libchat')"
    variants = {
        "node -e 0": ["node", "-e", "0"],
        "node --jitless -e 0": ["node", "--jitless", "-e", "0"],
        "node -e require(sdk)": ["node", "-e", sdk],
        "node --jitless -e require(sdk)": ["node", "--jitless", "-e", sdk],
        "node --max-semi-space-size=1 -e require(sdk)":
            ["node", "--max-semi-space-size=1", "-e", sdk],
        "node --max-semi-space-size=16 -e require(sdk)":
            ["node", "--max-semi-space-size=16", "-e", sdk],
        "node --max-lazy -e require(sdk)": ["node", "--max-lazy", "-e", sdk],
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(count):
        for name, argv in variants.items():
            t0 = time.perf_counter()
            subprocess.run(argv, check=True, env=env)
            times[name].append((time.perf_counter() - t0) * 1000)
    return times


def is_node(pid: int) -> bool:
    """A Node process (a program instance), from its command line."""
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except OSError:
        return False
    return Path(argv0.decode(errors="replace")).name.startswith("node")


def rss(pid: int) -> int:
    """Resident memory of a process that must be alive (libchat itself)."""
    m = memory(pid)
    if m is None:
        raise RuntimeError(f"process {pid} is gone")
    return m["rss"]
