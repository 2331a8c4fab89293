"""``python -m bench.postoffice``: the post-office hub under load.

``twistd libchat --postoffice`` (the shared launcher, port-0 listeners) and
one Node load generator (bench/po_loadgen.js, a hand-rolled RFC 6455 client so
the generator is not what is measured): ``--clients`` connected clients send
``--rate`` envelopes per second in all, each to a random other client; the
delivery latency is measured in the generator (one clock: sent_at in the
envelope, read on receipt). Hub CPU comes from /proc/<pid>/stat over the
measured window. Target: p99 <= 20 ms at 1,000 clients and 10,000 msg/s.
Writes bench/POSTOFFICE.md (or ``--out``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TARGET_P99_MS = 20.0
CONFIG = """
[postoffice]
max_connections = 20000
rate = 1000
[postoffice.apps.bench]
secret = "bench-secret"
clients = ["/bench/*"]
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(clients: int, rate: int, seconds: float, warmup: float) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from tests.launcher import LOOPBACK_ZERO, Libchat

    with tempfile.TemporaryDirectory(prefix="po-bench-") as tmp:
        cfg = Path(tmp) / "libchat.toml"
        cfg.write_text(CONFIG)
        lc = Libchat(Path(tmp) / "lc", "--config", str(cfg), "--postoffice", LOOPBACK_ZERO)
        lc.start()
        try:
            port = lc.ports["postoffice"]
            url = f"http://127.0.0.1:{port}/token?appid=bench&secret=bench-secret"
            with urllib.request.urlopen(url, timeout=10) as r:
                token = json.loads(r.read())["token"]
            spec = {"port": port, "token": token, "clients": clients, "rate": rate,
                    "seconds": seconds, "warmup": warmup}
            proc = subprocess.Popen(["node", str(ROOT / "bench" / "po_loadgen.js"),
                                     json.dumps(spec)], stdout=subprocess.PIPE, text=True)
            time.sleep(0)  # the generator connects, then warms up
            # CPU over the measured window: sample after connecting + warmup
            t0 = None
            deadline = time.monotonic() + 120
            while t0 is None and time.monotonic() < deadline:
                if lc.metrics().get(("libchat_postoffice_clients", ()), 0) >= clients:
                    time.sleep(warmup)
                    t0, c0 = time.monotonic(), cpu_seconds(lc.pid)
                else:
                    time.sleep(0.2)
            out, _ = proc.communicate(timeout=seconds + warmup + 180)
            t1, c1 = time.monotonic(), cpu_seconds(lc.pid)
            if proc.returncode != 0 or t0 is None:
                raise SystemExit(f"load generator failed ({proc.returncode})")
            result = json.loads(out)
            result["hub_cpu_percent"] = round(100 * (c1 - c0) / (t1 - t0), 1)
            result["hub_refusals"] = {k[1][0][1]: v for k, v in lc.metrics().items()
                                      if k[0] == "libchat_postoffice_refusals_total" and v}
        finally:
            lc.close()
    result.update(target_clients=clients, target_rate=rate,
                  met=bool(result["p99_ms"] is not None and result["p99_ms"] <= TARGET_P99_MS
                           and result["delivered_rate"] >= 0.98 * rate))
    return result


def report(r: dict[str, Any]) -> str:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text()
                .splitlines() if ln.startswith("model name")), platform.processor())
    fmt = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
    return f"""# Post-office hub load test (`python -m bench.postoffice`)

Machine: {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}; hub and
generator on the same machine (loopback), generator in Node (bench/po_loadgen.js).

| | target | measured |
|---|---|---|
| connected clients | {r['target_clients']} | {r['clients']} |
| offered msg/s | {r['target_rate']} | {r['offered_rate']:.0f} |
| delivered msg/s | {r['target_rate']} | {r['delivered_rate']:.0f} |
| delivery p50 (ms) | | {fmt(r['p50_ms'])} |
| delivery p99 (ms) | <= {TARGET_P99_MS:.0f} | {fmt(r['p99_ms'])} |
| delivery max (ms) | | {fmt(r['max_ms'])} |
| hub CPU (% of one core) | | {r['hub_cpu_percent']} |
| error frames | 0 | {r['errors']} |

**Target {'met' if r['met'] else 'NOT met'}** (p99 <= {TARGET_P99_MS:.0f} ms with at least 98% of
the offered rate delivered in the window of {r['seconds']:.1f} s).

```json
{json.dumps(r, indent=2)}
```
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.postoffice")
    p.add_argument("--smoke", action="store_true", help="20 clients, 200 msg/s, 2 s")
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--rate", type=int, default=10000)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--out", type=Path, default=ROOT / "bench")
    a = p.parse_args(argv)
    if a.smoke:
        a.clients, a.rate, a.seconds = 20, 200, 2.0
    r = run(a.clients, a.rate, a.seconds, warmup=1.0 if a.smoke else 3.0)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "postoffice.json").write_text(json.dumps(r, indent=2) + "\n")
    text = report(r)
    (a.out / "POSTOFFICE.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
