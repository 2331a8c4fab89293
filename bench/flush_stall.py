"""Benchmark: does a snapshot flush of many changed dialogs stall routing?

    python bench/flush_stall.py [--dialogs 10000] [--entries 20]

Fills a JsonFileStore (real files, the reactor's thread pool as in twistd)
with N changed dialogs, then, while one flush runs, routes messages through a
Router (fake programs answer at once) and records the worst gap between two
reactor turns and the worst message round trip. For comparison it times what
serialising the same records on the reactor thread with the stdlib encoder
(the previous flush) costs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet import defer, reactor, task, threads  # noqa: E402

from libchat.core.library import ProgramLibrary  # noqa: E402
from libchat.storage.records import DialogRecord  # noqa: E402
from libchat.core.router import Router  # noqa: E402
from libchat.storage.store import JsonFileStore  # noqa: E402
from libchat.testing import FakeRuntime, FakeUpstream  # noqa: E402


def fill(store: JsonFileStore, dialogs: int, entries: int) -> None:
    for n in range(dialogs):
        r = DialogRecord(dialog_id=f"bench-{n}", user_id=f"u{n}", created_at=0, updated_at=0,
                         program="echo", state="open")
        for i in range(entries):
            r.append({"event_type": 1001 if i % 2 == 0 else 2001, "message_id": f"m{i}",
                      "messages": {"content": f"message {i} of dialog {n} " * 3,
                                   "attachments": []}, "at": 1.0}, 1.0)
        r.remember("echo", "k", {"n": n, "tags": ["a", "b"]}, 1.0)
        store.add(r)


@defer.inlineCallbacks
def run(args: argparse.Namespace) -> Any:
    tmp = Path(tempfile.mkdtemp(prefix="libchat-bench-"))
    (tmp / "programs" / "echo").mkdir(parents=True)
    (tmp / "programs" / "echo" / "echo.js").write_text("")
    (tmp / "programs" / "echo" / "package.json").write_text(
        json.dumps({"libchat": {"keywords": ["echo"]}}))

    def run_io(f: Any, *a: Any) -> Any:
        return threads.deferToThreadPool(reactor, reactor.getThreadPool(), f, *a)

    store = JsonFileStore(tmp / "data", run_io=run_io,  # as tap.makeService builds it
                          pause=lambda: task.deferLater(reactor, 0, lambda: None))
    store.load()
    fill(store, args.dialogs, args.entries)
    yield task.deferLater(reactor, 0.5, lambda: None)  # let the journal settle
    records = list(store._dirty.values())

    t = time.perf_counter()
    for r in records:  # what the previous flush did on the reactor thread
        json.dumps(r.to_json(), ensure_ascii=False, indent=1, sort_keys=True).encode()
    inline_ms = (time.perf_counter() - t) * 1000

    runtime = FakeRuntime()
    router = Router(reactor, ProgramLibrary([tmp / "programs"], now=reactor.seconds),
                    runtime, store)
    up = FakeUpstream()
    router.attach(up)
    gaps: list[float] = []
    trips: list[float] = []
    last = [time.perf_counter()]

    def tick() -> None:
        now = time.perf_counter()
        gaps.append(now - last[0])
        last[0] = now
        t0 = time.perf_counter()  # one routed message and its reply
        router.receive(up, {"event_type": 1001, "dialog_id": "probe", "user_id": "p",
                            "message_id": f"p{len(trips)}",
                            "messages": {"content": "echo x", "attachments": []}})
        runtime.live[-1].say({"event_type": 2001, "messages": {"content": "y"}})
        trips.append(time.perf_counter() - t0)

    loop = task.LoopingCall(tick)
    loop.start(0.001)
    t = time.perf_counter()
    reactor_before = time.process_time()
    written = yield store.flush()
    flush_s = time.perf_counter() - t
    loop.stop()
    del reactor_before
    gaps.sort()
    trips.sort()
    out = {
        "dialogs written": written,
        "flush wall time (s)": round(flush_s, 2),
        "reactor ticks during flush": len(gaps),
        "max reactor gap during flush (ms)": round(gaps[-1] * 1000, 1),
        "p99 reactor gap (ms)": round(gaps[int(len(gaps) * 0.99)] * 1000, 1),
        "max routed round trip (ms)": round(trips[-1] * 1000, 2),
        "previous flush: reactor-thread serialisation (ms)": round(inline_ms),
    }
    for k, v in out.items():
        sys.stdout.write(f"{k}: {v}\n")
    import shutil
    shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dialogs", type=int, default=10_000)
    parser.add_argument("--entries", type=int, default=20)
    args = parser.parse_args()
    d = run(args)
    d.addErrback(lambda f: (f.printTraceback(), None)[1])
    d.addBoth(lambda _: reactor.stop())
    reactor.run()


if __name__ == "__main__":
    main()
