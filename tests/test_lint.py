"""ruff (configured in pyproject.toml) is clean over the package, the tests and the benchmarks."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_ruff_is_clean():
    pytest.importorskip("ruff", reason="ruff comes with the [dev] extra")
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "domainclip", "tests", "benchmarks"],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-1000:]
