"""The few-shot protocol: K-shot runs over several seeds, aggregated as mean and sd."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from omegaconf import OmegaConf

from domainclip.core.fileio import atomic_write_text


def aggregate(per_seed: list[dict], key: str = "top1") -> dict:
    """Mean and sd of ``key`` per evaluation and split over the seeds' metrics."""
    out = {}
    for name in ("zero_shot_before", "zero_shot_after"):
        for split in per_seed[0][name]:
            values = [m[name][split][key] for m in per_seed]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            out.setdefault(name, {})[split] = {"mean": statistics.fmean(values), "sd": sd, "values": values}
    return out


def run_few_shot(cfg, seeds: list[int], run_once):
    """Run ``run_once`` per seed (each with its own K-shot subset and init) and aggregate."""
    results = []
    for i, seed in enumerate(seeds):
        sub = OmegaConf.merge(cfg, {"seed": int(seed), "run_dir": str(Path(cfg.run_dir) / f"seed_{seed}"),
                                    "data": {"seeds": None}, "export": {"enabled": bool(cfg.export.enabled and i == 0)}})
        results.append(run_once(sub))
    summary = {"shots": int(cfg.data.shots), "seeds": [int(s) for s in seeds],
               "top1": aggregate([r.metrics for r in results]),
               "per_seed_dirs": [str(r.run_dir) for r in results]}
    run_dir = Path(cfg.run_dir)
    atomic_write_text(run_dir / "metrics.json", json.dumps({"few_shot": summary}, indent=2))
    first = results[0]
    return type(first)(run_dir=run_dir, metrics={"few_shot": summary, **first.metrics},
                       bundle_dir=first.bundle_dir, timings=first.timings)
