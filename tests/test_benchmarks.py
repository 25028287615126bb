"""Benchmarks are measurements, not timed tests: CI only runs their smoke mode to keep them working."""
from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def run_script(script: str, out: Path, monkeypatch, capsys) -> str:
    """Run ``python benchmarks/SCRIPT --smoke --out OUT`` as ``__main__`` in this interpreter (the
    libraries are imported once for all smokes; worker processes a benchmark starts are still real
    processes), restoring the thread count a benchmark may set. Returns what it printed."""
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "argv", [str(REPO / "benchmarks" / script), "--smoke", "--out", str(out)])
    monkeypatch.setattr(sys, "path", [str(REPO / "benchmarks"), *sys.path])
    threads = torch.get_num_threads()
    try:
        runpy.run_path(str(REPO / "benchmarks" / script), run_name="__main__")
    except SystemExit as exit_:
        assert exit_.code in (0, None), capsys.readouterr().err[-3000:]
    finally:
        torch.set_num_threads(threads)
    return capsys.readouterr().out


def test_methods_benchmark_smoke(tmp_path, monkeypatch, capsys):
    stdout = run_script("methods.py", tmp_path, monkeypatch, capsys)
    results = json.loads((tmp_path / "results.json").read_text())
    assert "pathology/coop/1" in results["methods"]
    assert results["feature_cache"]["ratio_cached_over_uncached"] > 0
    assert "feature cache, pathology lora: epoch" in stdout and "lora" in results["feature_cache"]["by_method"]


# script -> (results file, keys that must hold a positive figure)
SMOKES = {
    "scaling.py": ("scaling.json", [("efficiency", "2x1")]),
    "dicom_pipeline.py": ("dicom_pipeline.json", [("geometric_mean_over_types", "domainclip_over_monai"),
                                                  ("geometric_mean_over_types", "domainclip_over_bare_decode")]),
    "overhead.py": ("overhead.json", [("cases", "ViT-B/16 CLIP, full fine-tuning", "ratio")]),
    "mfu.py": ("mfu.json", [("methods", "full", "fraction_of_matmul_peak")]),
    "lora_memory.py": ("lora_memory.json", [("lora_over_full_peak",), ("lora_trainable_fraction",)]),
    "wsi_tiling.py": ("wsi_tiling.json", [("throughput", "ratio"), ("peak_growth_largest_over_smallest",)]),
    "inference.py": ("inference.json", [("ratio",), ("explain_cost_over_predict", "embedded_bundle"),
                                        ("explain_cost_over_predict", "vit_b16_clip")]),
    "end_to_end.py": ("end_to_end.json", [("recipes", "pathology", "wall_s")]),
    "shards.py": ("shards.json", [("ratio",)]),
    "slides.py": ("slides.json", [("throughput", "ratio"), ("peak_growth",)]),
    "pointing.py": ("pointing.json", [("recipes", "pathology", "positives"), ("recipes", "pathology", "random_point"),
                                      ("recipes", "pathology", "grid_upper_bound")]),
    "towers.py": ("towers.json", [("forward", "ratio"), ("lora_step", "ratio")]),
    "gpu_check.py": ("gpu_check.json", [("peak_flops",), ("rows", 0, "samples_per_s"), ("rows", 5, "samples_per_s")]),
}


@pytest.mark.timeout(900)  # a hang guard: >= 10x the test's duration on a slow 2-core machine
@pytest.mark.parametrize("script", sorted(SMOKES))
def test_benchmark_smoke(script, tmp_path, monkeypatch, capsys):
    stdout = run_script(script, tmp_path, monkeypatch, capsys)
    name, paths = SMOKES[script]
    result = json.loads((tmp_path / name).read_text())
    assert result["machine"]
    for path in paths:
        value = result
        for key in path:
            value = value[key]
        assert value > 0, (script, path)
    assert "target" in stdout  # every benchmark prints its figure next to its target
