"""A run that died after training is not lost: ``python -m domainclip.export run_dir=`` evaluates
the checkpoint, writes metrics.json and the report, then the bundle."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import domainclip
from domainclip.pipeline.run import run


def test_export_recovers_a_run_that_died_after_training(make_cfg, tiny_tower):
    result = run(make_cfg("recipe=pathology", *tiny_tower, "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
                          "eval.bootstrap=0", "export.enabled=false"))
    original = json.loads((result.run_dir / "metrics.json").read_text())["metrics"]
    (result.run_dir / "metrics.json").unlink()  # as if killed between training and evaluation
    shutil.rmtree(result.run_dir / "report")
    proc = subprocess.run([sys.executable, "-m", "domainclip.export", f"run_dir={result.run_dir}"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "evaluating the checkpoint first" in proc.stderr
    recovered = json.loads((result.run_dir / "metrics.json").read_text())["metrics"]
    for split in ("val", "test"):
        for when in ("zero_shot_before", "zero_shot_after"):
            assert recovered[when][split]["top1"] == original[when][split]["top1"], (when, split)
    assert recovered["clinical"]["thresholds"] == original["clinical"]["thresholds"]
    assert (result.run_dir / "report" / "summary.md").is_file()
    assert domainclip.load_bundle(result.run_dir / "bundle").classes == list(original["zero_shot_after"]["test"]
                                                                                ["recall_per_class"])
