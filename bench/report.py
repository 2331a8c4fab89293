"""Turns ``results.json`` into ``RESULTS.md`` (figures, ratios, targets) and
``latency.png`` (latency percentiles against load)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

MB = 1024 * 1024


def _s(fig: dict[str, Any], fmt: str = "{:.2f}", scale: float = 1.0) -> str:
    """``median [min-max]`` of a spread; a single round shows its value."""
    med = fmt.format(fig["median"] / scale)
    if fig["n"] <= 1:
        return med
    return f"{med} [{fmt.format(fig['min'] / scale)}–{fmt.format(fig['max'] / scale)}]"


def _load(results: dict[str, Any], dialogs: int, inflight: int) -> dict[str, Any] | None:
    return next((x for x in results["loads"]
                 if x["dialogs"] == dialogs and x["inflight"] == inflight), None)


def hot_figures(results: dict[str, Any]) -> dict[str, Any]:
    """The per-message figures of issue 14 (100 dialogs x 10 in flight)."""
    heavy = _load(results, 100, 10)
    light = _load(results, 1, 1)
    assert heavy is not None and light is not None, "every size runs 1x1 and 100x10"
    net = results["netecho"]
    node = results["reference"]["node_node"]["rate"]["median"]
    return {
        "twistd_us": heavy["twistd_us"]["median"],
        "net_twistd_us": net["twistd_us"]["median"],
        "ratio_node": heavy["rate"]["median"] / node,
        "ratio_net": net["rate"]["median"] / node,
        "sdk_vs_net": heavy["program_us"]["median"] / net["program_us"]["median"],
        "sdk_us": heavy["program_us"]["median"],
        "net_us": net["program_us"]["median"],
        "p50_1x1": light["p50"]["median"],
    }


def hot_targets(f: dict[str, Any]) -> list[tuple[str, str, bool]]:
    return [
        ("twistd CPU per routed round trip (/proc, 100×10, SDK program) ≤ 25 µs",
         f"{f['twistd_us']:.1f} µs (plain-net program: {f['net_twistd_us']:.1f} µs)",
         f["twistd_us"] <= 25.0),
        ("Routed throughput 100×10 / Node↔Node echo, SDK program ≥ 0.2×",
         f"{f['ratio_node']:.3f}×", f["ratio_node"] >= 0.2),
        ("Routed throughput 100×10 / Node↔Node echo, plain-net program ≥ 0.35×",
         f"{f['ratio_net']:.3f}×", f["ratio_net"] >= 0.35),
        ("SDK echo program CPU per message / plain-net echo's ≤ 1.5×",
         f"{f['sdk_vs_net']:.2f}× ({f['sdk_us']:.1f} / {f['net_us']:.1f} µs)",
         f["sdk_vs_net"] <= 1.5),
        ("1 dialog × 1 in flight, p50 round trip ≤ 0.25 ms", f"{f['p50_1x1']:.3f} ms",
         f["p50_1x1"] <= 0.25),
    ]


def _target_rows(rows: list[tuple[str, str, bool]]) -> list[str]:
    return [f"| {name} | {value} | {'yes' if ok else '**no**'} |" for name, value, ok in rows]


def hot_markdown(results: dict[str, Any]) -> str:
    """``python -m bench --hot``: the per-message targets and their loads."""
    lines = [f"Run of `{results['command']}` at {results['started']}; load average before: "
             f"{' '.join(results['machine']['loadavg_before'])}, after: "
             f"{' '.join(results['machine'].get('loadavg_after', ['?']))}.", "",
             "| target | measured | met |", "|---|---|---|"]
    lines += _target_rows(hot_targets(hot_figures(results)))
    lines += ["", "| load | msg/s | p50 ms | p99 ms |", "|---|---|---|---|"]
    for name, x in [(f"{x['dialogs']}×{x['inflight']} SDK", x) for x in results["loads"]] + [
            ("100×10 plain-net", results["netecho"]),
            ("Node↔Node echo", results["reference"]["node_node"])]:
        lines.append(f"| {name} | {_s(x['rate'], '{:,.0f}')} | {_s(x['p50'])} | "
                     f"{_s(x['p99'])} |")
    return "\n".join(lines) + "\n"


def figures(results: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers the targets are judged on."""
    ref = results["reference"]
    heavy = _load(results, 100, 10)
    assert heavy is not None, "every size runs 100 dialogs x 10 in flight"
    node_ms = results["node_start_ms"]["median"]
    mem = results["memory"]
    per_instance = mem["used_private"] + max(0.0, mem["libchat_per_live_dialog"])
    ceiling = int(results["machine"]["mem_available"] // per_instance)
    return {
        "ratio_node": heavy["rate"]["median"] / ref["node_node"]["rate"]["median"],
        "ratio_python": heavy["rate"]["median"] / ref["python_node"]["median"],
        "warm_p50": results["first_reply"]["warm"]["p50"],
        "cold_p50": results["first_reply"]["cold"]["p50"],
        "cold_budget": node_ms + 5.0,
        "storm_p99": results["storm"]["talk_p99_during"]["median"],
        "storm_stall": (results["storm"]["stall_max"]["median"]
                        if "stall_max" in results["storm"] else None),
        "live": results.get("live"),
        "per_instance": per_instance,
        "ceiling": ceiling,
    }


def targets(f: dict[str, Any]) -> list[tuple[str, str, bool]]:
    # the first row is superseded by hot_targets (issue 14's per-message table)
    return [
        ("Routed throughput, 100 dialogs ≥ 0.25× Node↔Node echo (stretch 0.4×)",
         f"{f['ratio_node']:.2f}×", f["ratio_node"] >= 0.25),
        ("First reply from the warm pool: p50 ≤ 1.5 ms", f"{f['warm_p50']:.2f} ms",
         f["warm_p50"] <= 1.5),
        ("Cold first reply: p50 ≤ Node's own start + 5 ms",
         f"{f['cold_p50']:.1f} ms (budget {f['cold_budget']:.1f} ms)",
         f["cold_p50"] <= f["cold_budget"]),
        ("Spawn storm: existing dialogs' p99 ≤ 50 ms", f"{f['storm_p99']:.1f} ms",
         f["storm_p99"] <= 50.0),
        ("Spawn storm: the reactor's longest stall ≤ 5 ms",
         "n/a" if f["storm_stall"] is None else f"{f['storm_stall']:.1f} ms",
         f["storm_stall"] is not None and f["storm_stall"] <= 5.0),
        ("≥ 1,000 live instances, measured (idle dialogs started at once, all answer)",
         _live(f["live"]), _live_ok(f["live"])),
    ]


def _live(live: dict[str, Any] | None) -> str:
    if live is None:
        return "n/a"
    return (f"{live['answered']:,} of {live['dialogs']:,} answered, {live['instances']:,} "
            f"instances running ({live['seconds_to_all_answers']:.0f} s to all answers)")


def _live_ok(live: dict[str, Any] | None) -> bool:
    return (live is not None and live["answered"] >= 1000 and live["instances"] >= 1000)


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    ref = results["reference"]
    f = figures(results)
    lines = [
        f"Run of `{results['command']}` ({results['size']} size) at {results['started']}.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['mem_total'] / 2**30:.1f} GiB "
        f"({m['mem_available'] / 2**30:.1f} GiB available), Linux {m['kernel']}; "
        f"Python {m['python']}, Twisted {m['twisted']}, orjson {m['orjson']}, Node {m['node']}.",
        f"Load average (1/5/15 min) before the run: {' '.join(m['loadavg_before'])}, after: "
        f"{' '.join(m.get('loadavg_after', ['?']))} (the machine is shared; see the notes).",
        "Figures are medians over rounds, with [min–max] across rounds.",
        "",
        "### Targets",
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    lines += _target_rows(hot_targets(hot_figures(results)))
    lines += [f"| {name} | {value} | {'yes' if ok else '**no**'} |"
              for name, value, ok in targets(f)[1:]]
    lines += [
        "",
        "### Throughput and latency (closed loop, front → program → front)",
        "",
        "| dialogs × in flight | msg/s | p50 ms | p90 ms | p99 ms |",
        "|---|---|---|---|---|",
    ]
    for x in results["loads"]:
        lines.append(f"| {x['dialogs']} × {x['inflight']} | {_s(x['rate'], '{:,.0f}')} | "
                     f"{_s(x['p50'])} | {_s(x['p90'])} | {_s(x['p99'])} |")
    nn = ref["node_node"]
    lines += [
        "",
        "### Reference bounds (same run, 100 dialogs × 10 in flight, Unix sockets)",
        "",
        "| path | msg/s | libchat 100×10 as a ratio |",
        "|---|---|---|",
        f"| Node ↔ Node echo (same load generator) | {_s(nn['rate'], '{:,.0f}')} | "
        f"{f['ratio_node']:.2f}× |",
        f"| Python/Twisted → Node echo (orjson) | {_s(ref['python_node'], '{:,.0f}')} | "
        f"{f['ratio_python']:.2f}× |",
        "",
        "### CPU per routed round trip (100 dialogs × 10 in flight, /proc utime+stime)",
        "",
        "| program | msg/s | twistd µs | programs µs (all instances) |",
        "|---|---|---|---|",
    ]
    for name, x in (("SDK echo (`bench`)", _load(results, 100, 10)),
                    ("plain-`net` echo (`netecho`)", results["netecho"])):
        assert x is not None
        lines.append(f"| {name} | {_s(x['rate'], '{:,.0f}')} | {_s(x['twistd_us'], '{:.1f}')} | "
                     f"{_s(x['program_us'], '{:.1f}')} |")
    lines += [
        "",
        "### New dialogs",
        "",
        "| figure | p50 ms | p90 ms | max ms |",
        "|---|---|---|---|",
    ]
    for kind in ("warm", "cold"):
        r = results["first_reply"][kind]
        lines.append(f"| first reply, {kind} ({len(r['samples'])} dialogs) | {r['p50']:.2f} | "
                     f"{r['p90']:.2f} | {r['max']:.2f} |")
    lines.append(f"| `node -e 0` (Node's own start) | {_s(results['node_start_ms'])} | | |")
    options = results.get("node_options_ms")
    if options:
        lines += ["", "Node's start options (same run, interleaved; NODE_PATH at the SDK):", "",
                  "| command | ms |", "|---|---|"]
        lines += [f"| `{name}` | {_s(fig)} |" for name, fig in options.items()]
    st = results["storm"]
    lines += [
        "",
        f"Spawn storm: {st['new_dialogs']} new dialogs at once (cold program) while "
        f"{st['talkers']} dialogs each send a message every 20 ms.",
        "",
        "| figure | ms |",
        "|---|---|",
        f"| time until all first replies (default: 4 booting at once) | "
        f"{_s(st['storm_ms'], '{:.0f}')} |",
        f"| new dialogs' first reply p50 | {_s(st['first_p50'], '{:.0f}')} |",
        f"| existing dialogs' p99 before the storm | {_s(st['talk_p99_before'])} |",
        f"| existing dialogs' p99 during the storm | {_s(st['talk_p99_during'])} |",
        f"| existing dialogs' max during the storm | {_s(st['talk_max_during'])} |",
    ]
    if "stall_max" in st:
        lines += [f"| the reactor's longest stall during the storm (lag probe) | "
                  f"{_s(st['stall_max'])} |",
                  f"| of which the reactor thread's own CPU, longest (the rest: waiting "
                  f"for a CPU) | {_s(st['stall_cpu_max'])} |",
                  f"| the reactor's stalls over 1 ms during the storm, summed | "
                  f"{_s(st['stall_total'])} |"]
    variants = results.get("storm_variants", [])
    if variants:
        lines += ["", "The spawning choices, same storm, one server each:",
                  "", "| spawning | all first replies ms | existing p99 during ms | "
                  "existing max during ms | longest reactor stall ms (its own CPU) |", "|---|---|---|---|---|"]
        for name, vs in [("launcher, idle-priority boot, 4 at once (default)", st)] + [
                (v["name"], v["storm"]) for v in variants]:
            stall = (f"{_s(vs['stall_max'])} (CPU {_s(vs['stall_cpu_max'])})"
                     if "stall_cpu_max" in vs else "n/a")
            lines.append(f"| {name} | {_s(vs['storm_ms'], '{:.0f}')} | "
                         f"{_s(vs['talk_p99_during'])} | {_s(vs['talk_max_during'])} | "
                         f"{stall} |")
    mem = results["memory"]
    idle = "n/a" if mem["idle_private"] is None else f"{mem['idle_private'] / MB:.1f}"
    lines += [
        "",
        "### Memory",
        "",
        "| figure | value |",
        "|---|---|",
        f"| private memory, idle warm instance ({mem['idle_instances']} measured) | {idle} MB |",
        f"| private memory per instance after traffic ({mem['used_instances']} measured) | "
        f"{mem['used_private'] / MB:.1f} MB (RSS {mem['used_rss'] / MB:.1f} MB, "
        f"PSS {mem['used_pss'] / MB:.1f} MB) |",
        f"| libchat's own memory per live dialog | {mem['libchat_per_live_dialog'] / 1024:.1f} KB |",
        f"| libchat's own memory per idle dialog record ({mem['idle_records']:,} records) | "
        f"{mem['libchat_per_idle_record'] / 1024:.2f} KB |",
        f"| computed ceiling: available memory / (instance + its dialog) | "
        f"{f['ceiling']:,} instances |",
    ]
    live = results.get("live")
    if live:
        lines += [
            f"| measured: {live['dialogs']:,} idle dialogs started at once | "
            f"{_live(live)}; their private memory {live['instances_private'] / 2**30:.2f} GiB, "
            f"libchat's RSS +{live['libchat_rss_growth'] / MB:.0f} MB |",
        ]
    lines.append("")
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loads = results["loads"]
    rate = [x["rate"]["median"] for x in loads]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for key, style in (("p50", "o-"), ("p90", "s--"), ("p99", "^:")):
        ax.plot(rate, [x[key]["median"] for x in loads], style, label=key)
    for x, r in zip(loads, rate):
        ax.annotate(f"{x['dialogs']}×{x['inflight']}", (r, x["p99"]["median"]),
                    textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("routed messages per second (dialogs × in flight)")
    ax.set_ylabel("latency, ms")
    ax.set_title("libchat: latency percentiles vs load")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write(results: dict[str, Any], out: Path) -> None:
    title = "# libchat benchmark results\n\n"
    (out / "RESULTS.md").write_text(title + markdown(results))
    plot(results, out / "latency.png")
