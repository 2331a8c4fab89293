"""Soak: load and faults at once, against a real twistd and real Node programs.

    python -m tests.soak.soak [--dialogs 200] [--messages 6] [--seed N]

N concurrent dialogs (one front connection, all in flight together) each save
values through the ``memory`` program; programs are SIGKILLed at random; twistd
itself is SIGKILLed midway and restarted. Then every acknowledged write is
read back, every dialog is closed, the server is stopped, and it asserts:

- every user message got its reply, or its dialog got a 2002;
- no reply reached the wrong dialog;
- every acknowledged memory write is readable after the restart;
- no leaked processes, sockets or file descriptors.

A message the crash caught before libchat journaled it (a window of one group
commit) has no record anywhere; it is counted apart and must indeed be absent
from the dialog's transcript. Exit status 1 when an assertion fails.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from libchat.runtimes.node.reaper import marked_pids

from ..hardening.procs import FrameConn, Twistd, message, programs_dir
from ..launcher import alive, wait_until

GRACE = 20.0
PHASE_LIMIT = 600.0


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Dialog:
    def __init__(self, n: int) -> None:
        self.id = f"soak-{n}"
        self.user = f"user-{n}"
        self.next = 0
        self.waiting: tuple[str, str, str] | None = None  # (message_id, key, value)
        self.acked: dict[str, str] = {}
        self.lost: list[str] = []
        # a 2002 came while a message was waiting: it answers the message only
        # if the server had it first, which the client cannot see; the reply
        # of a new instance is awaited for GRACE seconds before it counts
        self.ended: float | None = None


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.tmp = Path(tempfile.mkdtemp(prefix="libchat-soak-"))
        self.programs = programs_dir(self.tmp, "memory")
        self.dialogs = {d.id: d for d in (Dialog(n) for n in range(args.dialogs))}
        self.counts: Counter[str] = Counter()
        self.failures: list[str] = []
        self.run_ids: list[str] = []
        self.server: Twistd | None = None
        self.conn: FrameConn | None = None

    # -- plumbing ----------------------------------------------------------------

    def start_server(self) -> None:
        """Start twistd, or restart the killed one on the same data and run dirs."""
        if self.server is None:
            self.server = Twistd(self.tmp, self.programs, "--flush-interval", "2",
                                 "--max-programs", str(self.args.dialogs + 16),
                                 "--start-timeout", "60", "--kill-grace", "2",
                                 data=self.tmp / "data", runtime_base=self.tmp / "run")
            self.server.start(60)
        else:
            self.server.restart(60)
        self.run_ids.append(self.server.run_id())
        self.conn = self.server.connect()
        self.conn.timeout = 60

    def send(self, d: Dialog, content: str, key: str = "", value: str = "") -> None:
        assert self.conn is not None
        mid = f"{d.id}#{d.next}"
        d.next += 1
        d.waiting = (mid, key, value)
        d.ended = None
        self.conn.send(message(content, d.id, user_id=d.user, message_id=mid, intent="memory"))
        self.counts["user messages"] += 1

    def handle(self, e: dict[str, Any], verifying: bool = False) -> Dialog | None:
        """Account for one event; returns the dialog that may send again."""
        d = self.dialogs.get(e.get("dialog_id", ""))
        if d is None:
            self.failures.append(f"event for an unknown dialog: {e}")
            return None
        etype = e["event_type"]
        if etype == 2001:
            if d.waiting is None or e.get("message_id") != d.waiting[0]:
                self.failures.append(f"reply for a message {d.id} is not waiting for: {e}")
                self.counts["wrong-dialog replies"] += 1
                return None
            content = e["messages"]["content"]
            mid, key, value = d.waiting
            if verifying:
                if json.loads(content) != value:
                    self.failures.append(f"{d.id} {key}: read {content!r}, acked {value!r}")
                else:
                    self.counts["acknowledged writes read back"] += 1
            elif content != f"saved {key}":
                self.failures.append(f"{d.id}: unexpected reply {content!r}")
            else:
                d.acked[key] = value
                self.counts["replies"] += 1
            d.waiting = None
            return d
        if etype == 2002:
            self.counts[f"2002 {e['reason']}"] += 1
            if d.waiting is not None and d.ended is None:
                d.ended = time.monotonic()
            return None
        self.failures.append(f"unexpected event {e}")
        if d.waiting is not None:  # answered, badly: do not wait for more
            d.waiting = d.ended = None
            return d
        return None

    def events(self, verifying: bool = False) -> Any:
        """Events until no dialog waits; a message whose dialog got a 2002 and
        no reply within GRACE counts as answered by the 2002 (while reading
        back, as a failure: no program is killed then)."""
        assert self.conn is not None
        limit = time.monotonic() + PHASE_LIMIT
        while any(d.waiting for d in self.dialogs.values()):
            if time.monotonic() > limit:
                self.failures.append("phase did not finish: " + ", ".join(
                    d.id for d in self.dialogs.values() if d.waiting))
                return
            try:
                d = self.handle(self.conn.recv(0.5), verifying)
            except TimeoutError:
                d = None
            if d is not None:
                yield d
            now = time.monotonic()
            for d in self.dialogs.values():
                if d.waiting is not None and d.ended is not None and now - d.ended > GRACE:
                    if verifying:
                        self.failures.append(f"{d.id}: no answer to {d.waiting[0]}")
                    self.counts["messages answered by a 2002"] += 1
                    d.waiting, d.ended = None, None
                    yield d

    def kill_a_program(self) -> None:
        pids = marked_pids(self.run_ids[-1])
        if pids:
            try:
                os.kill(self.rng.choice(pids), signal.SIGKILL)
                self.counts["programs SIGKILLed"] += 1
            except ProcessLookupError:
                pass

    # -- phases ------------------------------------------------------------------

    def write_phase(self, until: int) -> None:
        """Send set-messages until ``until`` per dialog were sent and answered."""
        assert self.conn is not None
        for d in self.dialogs.values():
            if d.waiting is None and d.next < until:
                self.send(d, f"set k{d.next} {d.id}:{d.next}", f"k{d.next}",
                          f"{d.id}:{d.next}")
        kill_every = max(1, (self.args.dialogs * self.args.messages) // max(1, self.args.kills))
        for d in self.events():
            if self.rng.randrange(kill_every) == 0:
                self.kill_a_program()
            if d.waiting is None and d.next < until:
                self.send(d, f"set k{d.next} {d.id}:{d.next}", f"k{d.next}",
                          f"{d.id}:{d.next}")

    def crash_and_restart(self) -> None:
        """Midway: SIGKILL twistd with messages in flight, then restart."""
        assert self.server is not None and self.conn is not None
        for d in self.dialogs.values():  # put one message in flight in every dialog
            if d.waiting is None:
                self.send(d, f"set k{d.next} {d.id}:{d.next}", f"k{d.next}", f"{d.id}:{d.next}")
        time.sleep(self.rng.uniform(0.0, 0.05))  # the crash lands at a random moment
        old = self.run_ids[-1]
        self.server.kill9()
        self.counts["twistd SIGKILLed"] += 1
        self.conn.close()
        wait_until(lambda: not marked_pids(old), timeout=10,
                   what="programs of the killed server gone")
        self.start_server()
        assert self.conn is not None
        # every in-flight message now gets its dialog's 2002 (program_exited),
        # unless the crash came before it was journaled
        deadline = time.monotonic() + 15
        while any(d.waiting for d in self.dialogs.values()) and time.monotonic() < deadline:
            try:
                e = self.conn.recv(max(0.05, deadline - time.monotonic()))
            except TimeoutError:
                break
            self.handle(e)
            waiting = self.dialogs.get(e.get("dialog_id", ""))
            if e["event_type"] == 2002 and waiting is not None and waiting.waiting:
                # the old server is gone: no reply can follow this 2002
                self.counts["in flight at the crash, answered by a 2002"] += 1
                waiting.waiting = waiting.ended = None
        for d in self.dialogs.values():
            if d.waiting is not None:
                d.lost.append(d.waiting[0])
                self.counts["in flight at the crash, never journaled"] += 1
                d.waiting = None

    def verify_phase(self) -> None:
        assert self.conn is not None
        todo = {d.id: sorted(d.acked) for d in self.dialogs.values()}

        def next_get(d: Dialog) -> None:
            if todo[d.id]:
                key = todo[d.id].pop()
                self.send(d, f"get {key}", key, d.acked[key])

        for d in self.dialogs.values():
            next_get(d)
        for d in self.events(verifying=True):
            if d.waiting is None:
                next_get(d)

    def close_all(self) -> None:
        assert self.conn is not None
        for d in self.dialogs.values():
            self.conn.send({"event_type": 1002, "dialog_id": d.id, "user_id": d.user})
        closed = 0
        while closed < len(self.dialogs):
            e = self.conn.recv()
            if e["event_type"] == 2002 and e["reason"] == "client_closed":
                closed += 1

    def run(self) -> int:
        t0 = time.monotonic()
        try:
            self.start_server()
            half = self.args.messages // 2
            self.write_phase(half)
            self.crash_and_restart()
            assert self.server is not None
            baseline = fd_count(self.server.pid)
            self.write_phase(self.args.messages)
            self.verify_phase()
            self.close_all()
            wait_until(lambda: not marked_pids(self.run_ids[-1]), timeout=15,
                       what="instances stopped after 1002")
            server = self.server
            try:  # the reactor closes a dead child's pipes a moment after it exits
                wait_until(lambda: fd_count(server.pid) - baseline <= 4, timeout=10)
            except AssertionError:
                pass
            fds = fd_count(self.server.pid)
            self.counts["fd delta after closing (twistd)"] = fds - baseline
            if fds - baseline > 4:
                fd_dir = Path(f"/proc/{self.server.pid}/fd")
                kinds = Counter(os.readlink(fd_dir / f).split(":")[0] for f in os.listdir(fd_dir))
                self.failures.append(f"twistd holds {fds} fds, {baseline} before the load: "
                                     f"{dict(kinds)}")
            self.server.stop()
            self.conn.close() if self.conn else None
            self.check_lost_are_unrecorded()
            self.check_leaks()
        finally:
            if self.server is not None:
                self.server.close()
        self.counts["seconds"] = round(time.monotonic() - t0)
        self.report()
        if not self.args.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return 1 if self.failures else 0

    def check_lost_are_unrecorded(self) -> None:
        for d in self.dialogs.values():
            if not d.lost:
                continue
            record = json.loads((self.tmp / "data" / f"{d.id}.json").read_bytes())
            recorded = {m.get("message_id") for m in record["messages"]}
            for mid in d.lost:
                if mid in recorded:
                    self.failures.append(f"{mid} was journaled but never answered")

    def check_leaks(self) -> None:
        leaked = [p for run in self.run_ids for p in marked_pids(run)]
        leaked = [p for p in leaked if alive(p)]
        self.counts["leaked processes"] = len(leaked)
        run = self.tmp / "run"
        wait_until(lambda: not list(run.glob("libchat-*")), timeout=10,
                   what="run directories removed")
        sockets = list(run.rglob("*.sock"))
        self.counts["leaked sockets"] = len(sockets)
        if leaked or sockets:
            self.failures.append(f"leaked processes {leaked}, sockets {sockets}")

    def report(self) -> None:
        self.counts.setdefault("wrong-dialog replies", 0)
        self.counts.setdefault("leaked processes", 0)
        lines = [f"soak: {self.args.dialogs} dialogs x {self.args.messages} writes, "
                 f"seed {self.args.seed}"]
        lines += [f"  {k}: {v}" for k, v in sorted(self.counts.items())]
        lines += [f"  FAILURE: {f}" for f in self.failures[:20]]
        lines.append("soak: " + ("FAILED" if self.failures else "OK"))
        sys.stdout.write("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dialogs", type=int, default=200)
    parser.add_argument("--messages", type=int, default=6, help="writes per dialog")
    parser.add_argument("--kills", type=int, default=None,
                        help="random program SIGKILLs (default dialogs/5)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the temp directory")
    args = parser.parse_args(argv)
    if args.kills is None:
        args.kills = max(1, args.dialogs // 5)
    if args.seed is None:
        args.seed = random.randrange(1 << 30)
    # a CI timeout's SIGTERM still runs the finalizers (servers killed)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return Soak(args).run()


if __name__ == "__main__":
    sys.exit(main())
