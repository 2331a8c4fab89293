"""``python -m bench --smoke`` runs end to end (figures are not asserted:
performance claims come from bench/RESULTS.md, never from tests)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import ROOT


@pytest.mark.timeout(300)  # a real twistd, Node load generators, three servers
def test_bench_smoke_runs_and_writes_its_reports(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="pip install -e '.[bench]'")
    done = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    for key in ("reference", "loads", "first_reply", "storm", "memory", "node_start_ms",
                "netecho"):
        assert key in results, key
    heavy = next(x for x in results["loads"] if (x["dialogs"], x["inflight"]) == (100, 10))
    for load in (heavy, results["netecho"]):  # CPU per round trip read from /proc
        assert load["twistd_us"]["median"] > 0 and load["program_us"]["median"] > 0
    assert results["libchat_exit"]["clean"]  # twistd stopped cleanly, programs included
    assert results["storm"]["errors"] == 0
    assert "### Targets" in (tmp_path / "RESULTS.md").read_text()
    assert (tmp_path / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "### Targets" in done.stdout


def test_the_observer_bench_measures_something() -> None:
    done = subprocess.run([sys.executable, "-m", "bench.observers"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"metrics observers per round trip: median \d+\.\d\d us "
                        r"\[\d+\.\d\d-\d+\.\d\d\]\n", done.stdout), done.stdout
