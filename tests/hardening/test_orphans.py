"""No orphans: kill -9 of twistd leaves no program, grandchild or socket
behind within a few seconds; what a dead run left is cleaned at the next
start; and only processes proven to be ours are ever killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from libchat.runtimes.node.reaper import LOCK, MARKER, RunDir, clean_stale, marked_pids

from .procs import Twistd, alive, message, programs_dir, wait_until


@pytest.fixture
def spawned() -> Any:
    procs: list[subprocess.Popen[bytes]] = []
    pids: list[int] = []
    yield procs, pids
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def start_programs(server: Twistd) -> tuple[int, set[int]]:
    """A grandchild-spawning program and a SIGTERM-ignoring one; returns the
    grandchild's pid and every pid of the run."""
    c = server.connect()
    c.send(message("spawn", "gc-1", intent="grandchild"))
    grandchild = json.loads(c.recv()["messages"]["content"])["child_pid"]
    c.send(message("hi", "st-1", intent="stubborn"))
    assert c.recv()["messages"]["content"] == "still here"
    c.close()
    pids = set(marked_pids(server.run_id()))
    assert grandchild in pids and len(pids) == 3, pids
    return grandchild, pids


def test_kill9_of_twistd_leaves_no_process_or_socket(tmp_path: Path, spawned: Any) -> None:
    server = Twistd(tmp_path, programs_dir(tmp_path, "grandchild", "stubborn")).start()
    try:
        grandchild, pids = start_programs(server)
        spawned[1].extend(pids)
        run_dir = next(server.runtime_base.glob("libchat-*"))
        server.kill9()
        wait_until(lambda: not any(alive(p) for p in pids), timeout=5,
                   what=f"every process of the run gone: {pids}")
        wait_until(lambda: not run_dir.exists(), timeout=5, what="socket directory removed")
    finally:
        server.close()


def test_next_start_cleans_a_dead_run_whose_watchdog_died_too(
        tmp_path: Path, spawned: Any) -> None:
    programs = programs_dir(tmp_path, "grandchild", "stubborn")
    first = Twistd(tmp_path, programs).start()
    try:
        grandchild, pids = start_programs(first)
        spawned[1].extend(pids)
        # all three die at once: twistd frozen first, so it cannot stop the
        # instances itself when it sees the launcher go (nor the launcher
        # when it sees twistd go, nor the watchdog after either)
        os.kill(first.pid, signal.SIGSTOP)
        launcher = first.spawn_launcher_pid()
        os.kill(launcher, signal.SIGSTOP)
        os.kill(first.watchdog_pid(), signal.SIGKILL)
        os.kill(launcher, signal.SIGKILL)
        first.kill9()
        # the SDK makes the direct children leave; the grandchild stays
        wait_until(lambda: sum(alive(p) for p in pids) == 1, timeout=5)
        assert alive(grandchild)
        stale = next(first.runtime_base.glob("libchat-*"))
        second = Twistd(tmp_path, programs, runtime_base=first.runtime_base).start()
        try:
            assert not alive(grandchild), "the next start did not kill the leftover"
            assert not stale.exists()
            second.wait_log(r"removed stale run directory .* \(1 leftover processes\)")
        finally:
            second.kill9()
    finally:
        first.close()


def test_clean_stale_spares_live_runs_and_unmarked_processes(
        short_tmp: Path, spawned: Any) -> None:
    tmp_path = short_tmp
    procs, _ = spawned
    live = RunDir.create_in(str(tmp_path))
    dead = RunDir.create_in(str(tmp_path))
    sleeper = "import time; time.sleep(60)"
    ours = subprocess.Popen([sys.executable, "-c", sleeper], env=dead.env())
    live_child = subprocess.Popen([sys.executable, "-c", sleeper], env=live.env())
    # same command, no marker: a pid we cannot prove is ours
    stranger = subprocess.Popen([sys.executable, "-c", sleeper],
                                env={k: v for k, v in os.environ.items() if k != MARKER})
    procs.extend([ours, live_child, stranger])
    wait_until(lambda: ours.pid in marked_pids(dead.run_id))
    dead.release()  # its server died: the lock is free
    try:
        assert clean_stale(tmp_path) == 1
        assert ours.wait(5) is not None
        assert dead.path is not None and not dead.path.exists()
        assert live.path is not None and (live.path / LOCK).exists()
        assert live_child.poll() is None and stranger.poll() is None
    finally:
        live.release()


def test_clean_stale_ignores_directories_it_cannot_prove_are_ours(tmp_path: Path) -> None:
    foreign = tmp_path / "libchat-notours"
    foreign.mkdir()
    (foreign / "something.sock").write_text("")
    assert clean_stale(tmp_path) == 0
    assert foreign.exists()


def test_clean_stop_leaves_no_process(tmp_path: Path, spawned: Any) -> None:
    """SIGTERM: programs stopped by the server, then the watchdog exits too."""
    server = Twistd(tmp_path, programs_dir(tmp_path, "grandchild", "stubborn")).start()
    try:
        _, pids = start_programs(server)
        spawned[1].extend(pids)
        watchdog = server.watchdog_pid()
        server.stop()
        server.wait_log("libchat stopped")
        assert not any(alive(p) for p in pids)
        wait_until(lambda: not alive(watchdog), timeout=5, what="watchdog exited")
        assert not list(server.runtime_base.glob("libchat-*"))
    finally:
        server.close()
