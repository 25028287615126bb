"""Benchmarks are measurements, not timed tests: CI only runs their smoke mode to keep them working."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_methods_benchmark_smoke(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "methods.py"), "--smoke", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert "pathology/coop/1" in results["methods"]
    assert results["feature_cache"]["ratio_cached_over_uncached"] > 0
    assert "feature cache: epoch" in proc.stdout
