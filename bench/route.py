"""The router's Python cost per routed round trip, in-process (issue 14).

``python -m bench.route`` drives the real front door (:mod:`libchat.doors.frame`
over a string transport), the real router and the real file store with its
journal (writes handed to a queue, not to disk: this measures the reactor
thread's work, not fsync), with fake program instances whose replies go
through :func:`~libchat.protocol.events.parse_program` as a Node instance's
do. 100 dialogs, one frame per message each way. Prints the median of 5
rounds in microseconds; ``--profile`` prints a cProfile of one round instead.
The whole twistd's CPU under real load is ``python -m bench``'s figure.
"""

from __future__ import annotations

import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from twisted.internet import defer, task
from twisted.internet.testing import StringTransport

from libchat.core.library import ProgramLibrary
from libchat.core.router import Router
from libchat.doors.frame import FrontFactory
from libchat.jsonc import dumps
from libchat.protocol.events import parse_program
from libchat.protocol.wire import encode_event
from libchat.storage.store import JsonFileStore
from libchat.testing import FakeRuntime

DIALOGS = 100


class QueuedIO:
    """run_io that keeps the journal's writes pending until :meth:`run`
    (a write in flight while the reactor routes, as in production)."""

    def __init__(self) -> None:
        self.calls: list[tuple[defer.Deferred[Any], Callable[..., Any], tuple[Any, ...]]] = []

    def __call__(self, f: Callable[..., Any], *args: Any) -> "defer.Deferred[Any]":
        d: defer.Deferred[Any] = defer.Deferred()
        self.calls.append((d, f, args))
        return d

    def run(self) -> None:
        calls, self.calls = self.calls, []
        for d, _f, _args in calls:  # not written: only the reactor's part is measured
            d.callback(None)


def setup(tmp: Path) -> tuple[Callable[[int], None], Router]:
    programs = tmp / "programs" / "bench"
    programs.mkdir(parents=True)
    (programs / "package.json").write_text('{"name": "bench", "main": "bench.js"}')
    (programs / "bench.js").write_text("")
    io = QueuedIO()
    store = JsonFileStore(tmp / "data", run_io=io)
    store.load()
    runtime = FakeRuntime()
    clock = task.Clock()
    router = Router(clock, ProgramLibrary([tmp / "programs"]), runtime, store,
                    max_programs=1000, now=time.time)
    router.start()
    proto = FrontFactory(router, clock=clock).buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    frames = [encode_event({"event_type": 1001, "dialog_id": f"d{i}", "user_id": "bench",
                            "message_id": f"d{i}.0", "intent": "bench",
                            "messages": {"content": "hello", "attachments": []}})
              for i in range(DIALOGS)]
    for f in frames:
        proto.dataReceived(f)
    instances = {i.dialog_id: i for i in runtime.started}
    payload = "x" * 64
    # the load generator's frames and the programs' bodies, built once: only
    # libchat's part is timed (message ids repeat; the router does not mind)
    upstream = [encode_event({"event_type": 1001, "dialog_id": f"d{i}", "user_id": "bench",
                              "message_id": f"d{i}.1",
                              "messages": {"content": payload, "attachments": []}})
                for i in range(DIALOGS)]
    replies = [dumps({"event_type": 2001, "dialog_id": f"d{i}", "user_id": "bench",
                      "message_id": f"d{i}.1", "messages": {"content": payload,
                                                            "attachments": []}})
               for i in range(DIALOGS)]
    order = [instances[f"d{i}"] for i in range(DIALOGS)]

    def rounds(n: int) -> None:
        for k in range(n):
            i = k % DIALOGS
            proto.dataReceived(upstream[i])
            inst = order[i]
            encode_event(inst.sent.pop())  # what NodeInstance.send writes to the program
            inst.say(parse_program(2001, replies[i]))  # what the program's frame becomes
            if k % 200 == 199:
                transport.clear()
                io.run()
    return rounds, router


def per_round_trip(rounds: int = 5, number: int = 20_000) -> list[float]:
    """CPU µs per round trip of each round. Between rounds what survived is
    frozen out of the cyclic collector, as twistd's CollectorService does
    every few seconds (libchat/tap.py)."""
    with tempfile.TemporaryDirectory(prefix="lcr-") as tmp:
        run, _ = setup(Path(tmp))
        run(number)  # warm-up
        out = []
        for _ in range(rounds):
            _freeze()
            t0 = time.process_time()
            run(number)
            out.append((time.process_time() - t0) / number * 1e6)
        return out


def _freeze() -> None:
    if hasattr(gc, "freeze"):  # CPython; PyPy's collector is generational anyway
        gc.freeze()


def main(argv: list[str]) -> None:
    if "--profile" in argv:
        import cProfile
        import pstats
        with tempfile.TemporaryDirectory(prefix="lcr-") as tmp:
            run, _ = setup(Path(tmp))
            run(5000)
            prof = cProfile.Profile()
            prof.runcall(run, 20_000)
            pstats.Stats(prof).sort_stats("tottime").print_stats(30)
        return
    runs = per_round_trip()
    print(f"router per round trip (in-process): median {statistics.median(runs):.2f} us "
          f"[{min(runs):.2f}-{max(runs):.2f}]")


if __name__ == "__main__":
    main(sys.argv[1:])
