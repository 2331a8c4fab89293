"""The benchmark: ``python -m bench [--smoke | --hot] [--out DIR]``.

Runs the reference bounds (Node<->Node and Python->Node echo over Unix
sockets), then a real ``twistd -n libchat`` with real Node programs driven by
the Node load generator through the front protocol, and writes
``results.json``, ``RESULTS.md`` and ``latency.png`` to the output directory.
Every figure is measured over several rounds and reported as the median with
its spread (min-max) across rounds. At 100 dialogs x 10 in flight the CPU of
twistd and of its programs is read from /proc (:mod:`bench.cpu`), with the SDK
echo program and with a plain-``net`` one; ``--hot`` runs only those
per-message figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import cpu, procs, report

# (dialogs, in flight per dialog) for the closed-loop runs, light to heavy
LOADS = [(1, 1), (1, 10), (10, 1), (10, 10), (100, 1), (100, 10)]

SIZES: dict[str, dict[str, Any]] = {
    "full": dict(rounds=5, seconds=3.0, warmup=2.0, loads=LOADS, node_starts=20,
                 first=20, gap_ms=250, storm_rounds=3, storm=100, talkers=20,
                 hold=100, hold_messages=10, fill=100_000, warm=4, variants=True,
                 live=1000, option_starts=10),
    # python -m bench --hot: the per-message figures only, for profiling rounds
    "hot": dict(rounds=3, seconds=3.0, warmup=2.0, loads=[(1, 1), (100, 10)], warm=4,
                variants=False),
    "smoke": dict(rounds=1, seconds=0.5, warmup=0.3, loads=[(1, 1), (100, 10)], node_starts=3,
                  first=3, gap_ms=150, storm_rounds=1, storm=10, talkers=5,
                  hold=10, hold_messages=2, fill=2_000, warm=2, variants=False,
                 live=20, option_starts=1),
}


def spread(values: list[float]) -> dict[str, Any]:
    """Median and range of one figure over its rounds."""
    values = [v for v in values if v is not None]
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def machine() -> dict[str, Any]:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text()
                .splitlines() if ln.startswith("model name")), platform.processor())
    meminfo = dict(ln.split(":", 1) for ln in Path("/proc/meminfo").read_text().splitlines())
    import orjson

    import twisted
    return {
        "cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
        "mem_total": int(meminfo["MemTotal"].split()[0]) * 1024,
        "mem_available": int(meminfo["MemAvailable"].split()[0]) * 1024,
        "python": platform.python_version(), "twisted": twisted.__version__,
        "orjson": orjson.__version__,
        "node": subprocess.run(["node", "--version"], capture_output=True, text=True,
                               check=True).stdout.strip(),
        "loadavg_before": Path("/proc/loadavg").read_text().split()[:3],
    }


def closed_loop(target: dict[str, Any], dialogs: int, inflight: int, size: dict[str, Any],
                intent: str | None = None, cpu_of: int | None = None) -> dict[str, Any]:
    """Closed-loop throughput and latency; with ``cpu_of`` (twistd's pid) also
    the CPU per routed round trip of twistd and of its programs, in µs."""
    config = {"mode": "throughput", "target": target, "dialogs": dialogs,
              "inflight": inflight, "rounds": size["rounds"],
              "seconds": size["seconds"], "warmup": size["warmup"], "intent": intent}
    if cpu_of is None:
        r = procs.loadgen(config)
    else:
        gen = cpu.CpuLoadgen(config, cpu_of)
        r = gen.result(600)
    rounds = r["rounds"]
    out = {"dialogs": dialogs, "inflight": inflight, "errors": r["errors"],
           **{k: spread([x[k] for x in rounds]) for k in ("rate", "p50", "p90", "p99")}}
    if cpu_of is not None:
        used = gen.windows()
        out["intent"] = intent
        out["twistd_us"] = spread([w["twistd"] / x["count"] * 1e6 for w, x in zip(used, rounds)])
        out["program_us"] = spread([w["programs"] / x["count"] * 1e6
                                    for w, x in zip(used, rounds)])
    return out


def reference(workdir: Path, size: dict[str, Any]) -> dict[str, Any]:
    """The bounds: the same generator against a Node echo server, and Python->Node."""
    sock = workdir / "echo.sock"
    server = procs.node("echo_server.js", str(sock))
    try:
        server.wait_line("ready", 10)
        node_node = closed_loop({"kind": "raw", "path": str(sock)}, 100, 10, size)
        py = procs.Proc([sys.executable, "-m", "bench.pyecho", str(sock), "100", "10",
                         str(size["rounds"]), str(size["seconds"])]).result(300)
    finally:
        server.stop()
    return {"node_node": node_node, "python_node": spread([x["rate"] for x in py["rounds"]])}


def first_replies(server: procs.Libchat, intent: str, size: dict[str, Any]) -> dict[str, Any]:
    r = procs.loadgen({"mode": "first", "target": server.target, "intent": intent,
                       "count": size["first"], "gap_ms": size["gap_ms"]})
    return {"p50": r["p50"], "p90": r["p90"], "max": r["max"], "samples": r["samples"]}


def storms(server: procs.Libchat, size: dict[str, Any]) -> dict[str, Any]:
    """The storm, ``storm_rounds`` times; with the server's lag probe, the
    reactor's longest stall during each storm (libchat/lagprobe.py)."""
    runs = []
    for _ in range(size["storm_rounds"]):
        r = procs.loadgen({"mode": "storm", "target": server.target,
                           "talkers": size["talkers"], "every_ms": 20, "pre_ms": 1000,
                           "post_ms": 200, "storm": size["storm"], "talk_intent": "bench",
                           "storm_intent": "cold"})
        if server.lag_file is not None:
            time.sleep(0.7)  # the probe writes its stalls every 0.5 s
            stalls = server.stalls(r["t0"], r["t1"])
            r["stall_max"] = max((ms for ms, _ in stalls), default=0.0)
            # the reactor's own work: the CPU its thread used inside a stall
            r["stall_cpu_max"] = max((cpu for _, cpu in stalls), default=0.0)
            r["stall_total"] = sum(ms for ms, _ in stalls)
        runs.append(r)
    stall: dict[str, Any] = {}
    if server.lag_file is not None:
        stall = {k: spread([r[k] for r in runs])
                 for k in ("stall_max", "stall_cpu_max", "stall_total")}
    return {"new_dialogs": size["storm"], "talkers": size["talkers"], **stall,
            "storm_ms": spread([r["storm_ms"] for r in runs]),
            "first_p50": spread([r["first"]["p50"] for r in runs]),
            "talk_p99_before": spread([r["before"]["p99"] for r in runs]),
            "talk_p99_during": spread([r["during"]["p99"] for r in runs]),
            "talk_max_during": spread([r["during"]["max"] for r in runs]),
            "errors": sum(r["errors"] for r in runs)}


def memory(server: procs.Libchat, size: dict[str, Any]) -> dict[str, Any]:
    """Private memory per instance (idle warm ones, and after traffic) and
    libchat's own memory per live dialog and per idle dialog record."""
    idle = server.children()
    idle_private = [m["private"] for m in map(procs.memory, idle) if m]
    before = procs.rss(server.pid)
    hold = procs.node("loadgen.js", json.dumps({
        "mode": "hold", "target": server.target, "dialogs": size["hold"],
        "messages": size["hold_messages"], "intent": "cold"}), stdin=True)
    try:
        hold.wait_line("held", 120)
        used = [p for p in server.children() if p not in idle]
        used_mem = [m for m in map(procs.memory, used) if m]
        live_rss = procs.rss(server.pid)
    finally:
        assert hold.popen is not None and hold.popen.stdin is not None
        hold.popen.stdin.close()
    hold.result(120)
    rss0 = procs.rss(server.pid)
    t0 = time.perf_counter()
    fill = procs.loadgen({"mode": "fill", "target": server.target, "count": size["fill"]})
    rss1 = procs.rss(server.pid)
    out: dict[str, Any] = {
        "idle_instances": len(idle_private),
        "idle_private": statistics.median(idle_private) if idle_private else None,
        "used_instances": len(used_mem),
        "used_private": statistics.median(m["private"] for m in used_mem),
        "used_rss": statistics.median(m["rss"] for m in used_mem),
        "used_pss": statistics.median(m["pss"] for m in used_mem),
        "libchat_per_live_dialog": (live_rss - before) / max(1, len(used_mem)),
        "idle_records": fill["count"], "fill_seconds": time.perf_counter() - t0,
        "libchat_per_idle_record": (rss1 - rss0) / fill["count"],
        "libchat_rss": rss1,
    }
    return out


def live_instances(server: procs.Libchat, size: dict[str, Any]) -> dict[str, Any]:
    """``live`` idle dialogs of the cold program at once, each answered
    (measured, not computed): how many instances run, libchat's RSS."""
    before = procs.rss(server.pid)
    hold = procs.node("loadgen.js", json.dumps({
        "mode": "hold", "target": server.target, "dialogs": size["live"], "messages": 1,
        "intent": "cold"}), stdin=True)
    try:
        line = hold.wait_line("held", 600)
        held = json.loads(line.split(" ", 1)[1])
        kids = [p for p in server.children() if procs.is_node(p)]  # not the watchdog
        running = [m for m in map(procs.memory, kids) if m]
        out = {"dialogs": size["live"], "answered": held["answered"],
               "seconds_to_all_answers": held["ms"] / 1000, "instances": len(running),
               "instances_private": sum(m["private"] for m in running),
               "libchat_rss_growth": procs.rss(server.pid) - before,
               "mem_available_during": int(Path("/proc/meminfo").read_text().split(
                   "MemAvailable:")[1].split()[0]) * 1024}
    finally:
        assert hold.popen is not None and hold.popen.stdin is not None
        hold.popen.stdin.close()
    hold.result(300)
    return out


def run(size_name: str, out: Path, command: str, hot: bool = False) -> dict[str, Any]:
    size = SIZES[size_name]
    results: dict[str, Any] = {"size": size_name, "command": command, "machine": machine(),
                               "started": time.strftime("%Y-%m-%d %H:%M:%S %z")}
    if not hot:
        results["node_start_ms"] = spread(procs.node_start_ms(size["node_starts"]))
        results["node_options_ms"] = {name: spread(t) for name, t in
                                      procs.node_option_starts(size["option_starts"]).items()}
    with tempfile.TemporaryDirectory(prefix="lcb-") as tmp:
        workdir = Path(tmp)
        results["reference"] = reference(workdir, size)
        server = procs.Libchat(workdir / "main", "--warm", str(size["warm"]))
        try:
            # twistd's and the programs' CPU at 100x10, SDK echo and plain-net echo
            results["loads"] = [closed_loop(server.target, d, i, size, "bench",
                                            cpu_of=server.pid if (d, i) == (100, 10) else None)
                                for d, i in size["loads"]]
            results["netecho"] = closed_loop(server.target, 100, 10, size, "netecho",
                                             cpu_of=server.pid)
            if not hot:
                results["first_reply"] = {"cold": first_replies(server, "cold", size),
                                          "warm": first_replies(server, "bench", size)}
                results["memory"] = memory(server, size)
        finally:
            results["libchat_exit"] = server.shutdown()
        if not hot:
            # the storm on a server of its own, with the reactor lag probe (~1,000
            # timer wakeups a second: kept off the throughput server)
            storm_server = procs.Libchat(workdir / "storm", "--warm", str(size["warm"]),
                                         lag_probe=True)
            try:
                results["storm"] = storms(storm_server, size)
            finally:
                storm_server.shutdown()
            live_server = procs.Libchat(workdir / "live")
            try:
                results["live"] = live_instances(live_server, size)
            finally:
                results["live"]["exit"] = live_server.shutdown(120)
        if size["variants"] and not hot:  # the spawning choices, measured (libchat/spawning.py)
            results["storm_variants"] = []
            for name, extra, env in (
                    ("spawned by the reactor, 4 at once (before issue 14)", [],
                     {"LIBCHAT_SPAWN": "reactor"}),
                    ("launcher, boot at normal priority", [],
                     {"LIBCHAT_SPAWN": "launcher-normal"}),
                    ("unbounded spawning", ["--spawn-concurrency", "0"], {}),
                    ("2 booting at once", ["--spawn-concurrency", "2"], {}),
                    ("8 booting at once", ["--spawn-concurrency", "8"], {})):
                other = procs.Libchat(workdir / f"spawn{len(results['storm_variants'])}",
                                      *extra, env=env, lag_probe=True)
                try:
                    results["storm_variants"].append({"name": name, "storm": storms(other, size)})
                finally:
                    other.shutdown()
    results["machine"]["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3]
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    if not hot:
        report.write(results, out)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes for CI (< 60 s)")
    parser.add_argument("--hot", action="store_true", help="only the per-message figures "
                        "(reference bounds, closed loops, CPU per round trip)")
    parser.add_argument("--out", type=Path, help="output directory "
                        "(default: bench/ for a full run, bench/out/ for --smoke)")
    args = parser.parse_args(argv)
    size = "smoke" if args.smoke else "hot" if args.hot else "full"
    out = args.out or (procs.HERE / "out" if args.smoke or args.hot else procs.HERE)
    command = "python -m bench" + (" --smoke" if args.smoke else " --hot" if args.hot else "")
    results = run(size, out, command, hot=args.hot)
    sys.stdout.write(report.hot_markdown(results) if args.hot else report.markdown(results))
    return 0
