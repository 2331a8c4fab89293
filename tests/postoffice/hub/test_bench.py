"""``python -m bench.postoffice --smoke`` runs end to end (figures are not
asserted: performance claims come from bench/POSTOFFICE.md)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.timeout(120)
def test_bench_smoke_runs_and_writes_its_report(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "bench.postoffice", "--smoke",
                           "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=100, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    r = json.loads((tmp_path / "postoffice.json").read_text())
    assert r["clients"] == 20 and r["errors"] == 0 and r["delivered_measured"] > 0
    assert "delivery p99" in (tmp_path / "POSTOFFICE.md").read_text()
