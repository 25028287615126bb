"""Benchmarks are measurements, not timed tests: CI only runs their smoke mode to keep them working."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_methods_benchmark_smoke(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "methods.py"), "--smoke", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert "pathology/coop/1" in results["methods"]
    assert results["feature_cache"]["ratio_cached_over_uncached"] > 0
    assert "feature cache, pathology lora: epoch" in proc.stdout and "lora" in results["feature_cache"]["by_method"]


# script -> (results file, keys that must hold a positive figure)
SMOKES = {
    "scaling.py": ("scaling.json", [("efficiency", "2x1")]),
    "dicom_pipeline.py": ("dicom_pipeline.json", [("geometric_mean_over_types", "domainclip_over_monai"),
                                                  ("geometric_mean_over_types", "domainclip_over_bare_decode")]),
    "overhead.py": ("overhead.json", [("cases", "ViT-B/16 CLIP, full fine-tuning", "ratio")]),
    "mfu.py": ("mfu.json", [("methods", "full", "fraction_of_matmul_peak")]),
    "lora_memory.py": ("lora_memory.json", [("lora_over_full_peak",), ("lora_trainable_fraction",)]),
    "wsi_tiling.py": ("wsi_tiling.json", [("throughput", "ratio"), ("peak_growth_largest_over_smallest",)]),
    "inference.py": ("inference.json", [("ratio",)]),
    "end_to_end.py": ("end_to_end.json", [("recipes", "pathology", "wall_s")]),
    "shards.py": ("shards.json", [("ratio",)]),
    "gpu_check.py": ("gpu_check.json", [("peak_flops",), ("rows", 0, "samples_per_s"), ("rows", 5, "samples_per_s")]),
}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("script", sorted(SMOKES))
def test_benchmark_smoke(script, tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), "--smoke", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=280, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    name, paths = SMOKES[script]
    result = json.loads((tmp_path / name).read_text())
    assert result["machine"]
    for path in paths:
        value = result
        for key in path:
            value = value[key]
        assert value > 0, (script, path)
    assert "target" in proc.stdout  # every benchmark prints its figure next to its target
