"""The launcher: a small long-lived process that spawns programs for libchat.

Why: ``spawnProcess`` blocks the reactor until the child has exec'd
(``posix_spawn`` has vfork semantics); with the CPUs busy booting other Node
processes that is ~20 ms per spawn, during which no message is routed
(issue 14). The launcher takes that wait in its own process. libchat sends it
one request per instance over a ``SOCK_SEQPACKET`` pair (the child's stdin,
stdout and stderr ends ride along as ``SCM_RIGHTS``); the launcher starts the
child with ``posix_spawnp`` (``POSIX_SPAWN_SETSID``: no ``env -C``/``setsid``
execs, and the child leads its own session and process group from its first
instruction), answers with its pid, reaps it and reports its wait status.

Booting at low priority: while a Node process boots (~60-100 ms of CPU) it
runs under ``SCHED_IDLE`` so it cannot take CPU from the router or from the
programs already serving dialogs; libchat says ``booted`` once the program
connected, and the launcher moves every thread of it back to ``SCHED_OTHER``.
Leaving ``SCHED_IDLE`` needs ``CAP_SYS_NICE`` or a large ``RLIMIT_NICE``; the
launcher probes that once at start and boots at normal priority when it
cannot restore it (a program must not stay idle-priority for life).

No orphans: the launcher has its own session (terminal signals to the server's
group do not reach it). When libchat's end of the pair closes (a clean stop,
or ``kill -9`` of twistd) it sends SIGTERM to every child's group, SIGKILL
after the grace, and exits; the watchdog (:mod:`.reaper`) covers the rest.

Standard library only: it is started with ``python -m`` and must start fast.
"""

from __future__ import annotations

import errno
import json
import os
import select
import signal
import socket
import sys
import time
from typing import Any

MAX_MESSAGE = 1 << 20  # a request is argv + environment: far below this
CONTROL_FD = 3
# ignored here; an ignored signal stays ignored across exec, so children get
# them back at their defaults
IGNORED = (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE)


def can_restore_priority() -> bool:
    """Can a process of ours leave SCHED_IDLE again? Probed in a forked child
    (changing our own policy and failing to restore it would be worse)."""
    if not hasattr(os, "SCHED_IDLE"):
        return False
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the probe child
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def set_policy(pid: int, policy: int) -> None:
    """Every thread of ``pid`` (Node's helper threads inherit the boot policy)."""
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        tids = [pid]
    for tid in tids:
        try:
            os.sched_setscheduler(tid, policy, os.sched_param(0))
        except OSError:
            pass  # gone, or not allowed: stays where it is


class Launcher:
    def __init__(self, control: socket.socket, grace: float) -> None:
        self.control = control
        self.grace = grace
        self.children: set[int] = set()
        self.low = can_restore_priority()

    def send(self, message: dict[str, Any]) -> None:
        try:
            self.control.send(json.dumps(message).encode())
        except OSError:
            pass  # libchat is gone: the main loop sees EOF next

    def spawn(self, request: dict[str, Any], fds: list[int]) -> None:
        ident = request["id"]
        try:
            if len(fds) != 3:
                raise ValueError(f"expected 3 descriptors, got {len(fds)}")
            low = self.low and request.get("low", True)
            # single-threaded: the working directory and the policy are ours
            # to move (glibc's posix_spawn refuses SCHED_IDLE as an attribute;
            # a child inherits its parent's policy instead)
            os.chdir(request.get("cwd") or "/")
            actions = [(os.POSIX_SPAWN_DUP2, fd, n) for n, fd in enumerate(fds)]
            if low:
                os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            try:
                pid = os.posix_spawnp(request["argv"][0], request["argv"], request["env"],
                                      file_actions=actions, setsid=True, setsigdef=IGNORED)
            finally:
                if low:
                    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        except Exception as e:  # noqa: BLE001 - reported to libchat, which logs it
            self.send({"op": "failed", "id": ident, "error": f"{type(e).__name__}: {e}"})
        else:
            self.children.add(pid)
            self.send({"op": "spawned", "id": ident, "pid": pid})
        finally:
            for fd in fds:
                os.close(fd)

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.discard(pid)
            self.send({"op": "exit", "pid": pid, "status": status})

    def handle(self, message: bytes, fds: list[int]) -> None:
        request = json.loads(message)
        op = request.get("op")
        if op == "spawn":
            self.spawn(request, fds)
            return
        for fd in fds:  # nobody else sends descriptors
            os.close(fd)
        pid = int(request.get("pid", 0))
        if pid not in self.children:
            return  # already reaped: its pid may be someone else's now
        if op == "booted" and self.low:
            set_policy(pid, os.SCHED_OTHER)
        elif op == "signal":
            try:
                os.kill(pid, int(request["sig"]))
            except OSError:
                pass

    def run(self) -> int:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.send({"op": "hello", "pid": os.getpid(), "low_priority_boot": self.low})
        poll = select.poll()
        poll.register(self.control, select.POLLIN)
        poll.register(wake_r, select.POLLIN)
        while True:
            for fd, _ in poll.poll():
                if fd == wake_r:
                    try:
                        os.read(wake_r, 512)
                    except BlockingIOError:
                        pass
                    self.reap()
                    continue
                try:
                    message, fds, _flags, _addr = socket.recv_fds(self.control, MAX_MESSAGE, 3)
                except InterruptedError:
                    continue
                except OSError as e:
                    if e.errno == errno.EAGAIN:
                        continue
                    message = b""
                for fd in fds:
                    os.set_inheritable(fd, False)
                if not message:
                    return self.shutdown()
                self.handle(message, fds)
            self.reap()

    def shutdown(self) -> int:
        """libchat is gone (or stopped): no child may outlive it."""
        self.reap()
        for sig, wait in ((signal.SIGTERM, self.grace), (signal.SIGKILL, 2.0)):
            for pid in self.children:
                for kill in (os.killpg, os.kill):
                    try:
                        kill(pid, sig)
                        break
                    except OSError:
                        continue
            deadline = time.monotonic() + wait
            while self.children and time.monotonic() < deadline:
                time.sleep(0.02)
                self.reap()
            if not self.children:
                break
        return 0


def main(argv: list[str]) -> int:
    os.setsid()  # terminal signals for the server's group must not reach us
    for sig in IGNORED:
        signal.signal(sig, signal.SIG_IGN)
    grace = float(argv[1]) if len(argv) > 1 else 5.0
    control = socket.socket(fileno=CONTROL_FD)
    os.set_inheritable(CONTROL_FD, False)
    return Launcher(control, grace).run()


if __name__ == "__main__":  # pragma: no cover - run as the launcher process
    sys.exit(main(sys.argv))
