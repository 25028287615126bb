"""End to end: wall time of each phase of ``python -m domainclip recipe=pathology`` (data and
captions, features, training, evaluation, export) with a fresh cache, and the data wait as a share
of training-step time (Lightning's SimpleProfiler: ``train_dataloader_next`` vs ``run_training_batch``).

    python benchmarks/end_to_end.py                     # recipe=pathology
    python benchmarks/end_to_end.py --recipes pathology radiology satellite
    python benchmarks/end_to_end.py --smoke

Targets: total < 5 minutes on 2 CPU cores; data wait <= 5% of step time.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_result  # noqa: E402

PROFILER = ["+trainer.profiler._target_=pytorch_lightning.profilers.SimpleProfiler", "+trainer.profiler.filename=profile"]


def profiled_total(text: str, action: str) -> float:
    """Total seconds of ``action`` in a SimpleProfiler report."""
    for line in text.splitlines():
        if action in line:
            numbers = re.findall(r"\d+\.\d+(?:e[-+]\d+)?", line)
            if len(numbers) >= 2:
                return float(numbers[-2])  # columns: mean, num calls, total, percent
    return 0.0


def run_recipe(recipe: str, extra: list[str], fresh_cache: bool = True) -> dict:
    run_dir = Path(tempfile.mkdtemp(prefix=f"e2e-{recipe}-"))
    env = dict(os.environ)
    if fresh_cache:  # nothing reused: demo data, captions and features are all made in this run
        env["DOMAINCLIP_CACHE"] = tempfile.mkdtemp(prefix="e2e-cache-")
    cmd = [sys.executable, "-m", "domainclip", f"recipe={recipe}", f"run_dir={run_dir}", f"hydra.run.dir={run_dir}",
           f"+trainer.profiler.dirpath={run_dir}", "trainer.enable_progress_bar=false", *PROFILER, *extra]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    timings = json.loads((run_dir / "metrics.json").read_text())["timings"]
    report = next(run_dir.glob("*profile*.txt")).read_text()
    wait, step = profiled_total(report, "train_dataloader_next"), profiled_total(report, "run_training_batch")
    return {"wall_s": wall, "phases_s": timings, "data_wait_s": wait, "step_s": step,
            "data_wait_fraction": wait / step if step else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--recipes", nargs="+", default=["pathology"])
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    smoke = ["trainer.max_epochs=1", "eval.bootstrap=0", "export.enabled=false", "tower.image.size=64"]
    extra = smoke if args.smoke else []
    results = {r: run_recipe(r, extra, fresh_cache=not args.smoke) for r in args.recipes}
    write_result("end_to_end", {"recipes": results}, args.out)
    print(f"machine: {machine()}")
    for recipe, r in results.items():
        phases = ", ".join(f"{k} {v:.1f}" for k, v in r["phases_s"].items())
        print(f"recipe={recipe}: wall {r['wall_s']:.1f} s (target < 300 s); phases (s): {phases}")
        if r["data_wait_fraction"] is not None:
            print(f"  data wait {r['data_wait_s']:.2f} s of {r['step_s']:.2f} s in training steps = "
                  f"{100 * r['data_wait_fraction']:.1f}% (target <= 5%)")


if __name__ == "__main__":
    main()
