"""Several nodes over one Redis: ``python -m bench.cluster [--smoke] [--out DIR]``.

Starts a private redis-server (AOF, ``appendfsync always``, on a free loopback
port; ``tests/cluster/redis_server.py``) and real ``twistd -n libchat --redis``
nodes with the bench programs, drives them with the Node load generator
(``bench/loadgen.js``) over the front protocol, and writes ``CLUSTER.md`` and
``cluster.json``. Figures, medians over rounds with [min-max]:

1. round trip 1 dialog x 1 in flight, same node: the dialog's owner is the
   node the generator talks to (Redis append before each acknowledgement);
2. the same, cross node: the dialogs were first touched through node 1 (so
   node 1 owns them), then the generator talks to node 2: every event is
   forwarded through node 1's inbox stream and every reply comes back that way.
   Target (issue 13): p50 <= 2 ms on loopback;
3. routed throughput at 100 dialogs x 10 in flight: one node alone without
   Redis (JSON files), one cluster node, and three cluster nodes each driven by
   a generator of its own (their dialogs local), reported as the ratio of 3
   nodes to 1 on this machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench import procs
from bench.run import machine, spread
from tests.cluster.redis_server import RedisServer

HERE = Path(__file__).resolve().parent

SIZES = {
    "full": {"rounds": 5, "seconds": 3.0, "warmup": 2.0, "dialogs": 100, "inflight": 10},
    "smoke": {"rounds": 1, "seconds": 0.5, "warmup": 0.3, "dialogs": 10, "inflight": 2},
}


def node(workdir: Path, redis: RedisServer | None, name: str) -> procs.Libchat:
    extra = ("--redis", redis.endpoint, "--node-id", name) if redis is not None else ()
    server = procs.Libchat(workdir / name, *extra)
    if redis is not None:
        server.wait_log(rf"libchat cluster node {name} serving", 30)
    return server


def loop(target: dict[str, Any], size: dict[str, Any], dialogs: int, inflight: int,
         run: str | None = None, rounds: int | None = None) -> dict[str, Any]:
    config = {"mode": "throughput", "target": target, "dialogs": dialogs, "inflight": inflight,
              "rounds": rounds or size["rounds"], "seconds": size["seconds"],
              "warmup": size["warmup"], "intent": "bench"}
    if run is not None:
        config["run"] = run
    return procs.loadgen(config)  # type: ignore[no-any-return]


def figures(r: dict[str, Any]) -> dict[str, Any]:
    return {"errors": r["errors"],
            **{k: spread([x[k] for x in r["rounds"]]) for k in ("rate", "p50", "p99")}}


def together(jobs: list[Any]) -> list[Any]:
    """Run the callables at once (one generator process each); their results."""
    out: list[Any] = [None] * len(jobs)
    errors: list[BaseException] = []

    def go(i: int) -> None:
        try:
            out[i] = jobs[i]()
        except BaseException as e:  # noqa: BLE001 - re-raised below
            errors.append(e)
    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return out


def run(size_name: str) -> dict[str, Any]:
    size = SIZES[size_name]
    d, f = size["dialogs"], size["inflight"]
    results: dict[str, Any] = {"size": size_name, "machine": machine(),
                               "started": time.strftime("%Y-%m-%d %H:%M:%S %z")}
    with tempfile.TemporaryDirectory(prefix="lcc-") as tmp:
        work = Path(tmp)
        alone = node(work, None, "alone")
        try:
            results["alone"] = figures(loop(alone.target, size, d, f))
            results["alone_1x1"] = figures(loop(alone.target, size, 1, 1))
        finally:
            alone.shutdown()
        redis = RedisServer().start()
        nodes: list[procs.Libchat] = []
        try:
            nodes = [node(work, redis, f"n{i}") for i in (1, 2, 3)]
            n1, n2, n3 = nodes
            results["same_node_1x1"] = figures(loop(n1.target, size, 1, 1, run="same"))
            # node 1 owns the "cross" dialog; the generator then talks to node 2
            loop(n1.target, size, 1, 1, run="cross", rounds=1)
            results["cross_node_1x1"] = figures(loop(n2.target, size, 1, 1, run="cross"))
            loop(n1.target, size, d, f, run="crossload", rounds=1)
            results["cross_node_load"] = figures(loop(n2.target, size, d, f, run="crossload"))
            results["one_node"] = figures(loop(n1.target, size, d, f, run="one"))
            per = max(1, d // 3)
            three = together([lambda n=n, i=i: loop(n.target, size, per, f, run=f"three{i}")
                               for i, n in enumerate(nodes)])
            rates = [sum(r["rounds"][k]["rate"] for r in three) for k in range(size["rounds"])]
            results["three_nodes"] = {"rate": spread(rates),
                                      "errors": sum(r["errors"] for r in three),
                                      "p99": spread([statistics.median(
                                          x["p99"] for x in r["rounds"]) for r in three])}
        finally:
            for n in nodes:
                n.shutdown()
            redis.stop()
    one = results["one_node"]["rate"]["median"]
    results["ratio_3_to_1"] = results["three_nodes"]["rate"]["median"] / one if one else None
    return results


def ms(s: dict[str, Any]) -> str:
    return f"{s['median']:.2f} [{s['min']:.2f}–{s['max']:.2f}]"


def rate(s: dict[str, Any]) -> str:
    return f"{s['median']:,.0f} [{s['min']:,.0f}–{s['max']:,.0f}]"


def report(r: dict[str, Any]) -> str:
    m = r["machine"]
    cross = r["cross_node_1x1"]["p50"]["median"]
    lines = [
        "# Several nodes over one Redis (bench/cluster.py)", "",
        f"Run of `python -m bench.cluster` ({r['size']}) at {r['started']} on {m['cpu']}, "
        f"{m['cores']} cores; Python {m['python']}, Twisted {m['twisted']}. Redis: a private "
        "redis-server with `appendonly yes`, `appendfsync always` (every acknowledged write "
        "fsynced). The machine is shared: compare figures of this run with each other.", "",
        "### Targets (issue 13)", "",
        "| target | measured | met |", "|---|---|---|",
        f"| cross-node routed round trip p50 ≤ 2 ms (loopback) | {cross:.2f} ms | "
        f"{'yes' if cross <= 2 else '**no**'} |",
        f"| throughput of 3 nodes vs 1 node, same machine (reported as a ratio) | "
        f"{r['ratio_3_to_1']:.2f}× | reported |", "",
        "### Round trips, 1 dialog × 1 in flight (front → program → front)", "",
        "| path | msg/s | p50 ms | p99 ms |", "|---|---|---|---|",
    ]
    for key, label in (("alone_1x1", "one node, no Redis (JSON files)"),
                       ("same_node_1x1", "cluster node, dialog owned by that node"),
                       ("cross_node_1x1", "cluster, dialog owned by another node")):
        x = r[key]
        lines.append(f"| {label} | {rate(x['rate'])} | {ms(x['p50'])} | {ms(x['p99'])} |")
    lines += ["", f"### Throughput, {SIZES[r['size']]['dialogs']} dialogs × "
              f"{SIZES[r['size']]['inflight']} in flight", "",
              "| setup | msg/s | p99 ms | errors |", "|---|---|---|---|"]
    for key, label in (("alone", "one node, no Redis"), ("one_node", "one cluster node"),
                       ("cross_node_load", "one cluster node, every dialog owned by another"),
                       ("three_nodes", "three cluster nodes, a generator each (sum)")):
        x = r[key]
        lines.append(f"| {label} | {rate(x['rate'])} | {ms(x['p99'])} | {x['errors']} |")
    lines += ["", "Notes: three nodes, Redis and three load generators share the same 2 "
              "cores here, so the 3:1 ratio shows what the cluster costs on one machine, "
              "not what three machines would give; each node's own work per message grows "
              "by the Redis append (one fsynced EVALSHA per transcript entry) and, across "
              "nodes, two inbox stream hops.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    out = args.out or (HERE / "out" if args.smoke else HERE)
    out.mkdir(parents=True, exist_ok=True)
    results = run("smoke" if args.smoke else "full")
    (out / "cluster.json").write_text(json.dumps(results, indent=1))
    (out / "CLUSTER.md").write_text(report(results))
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
