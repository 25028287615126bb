"""Zero-shot vs each adaptation method on the demo cards (top-1, mean +- sd over seeds at K
shots) and the feature-cache speed-up (epoch time cached / uncached, measured in one run).

    python benchmarks/methods.py                      # pathology card, 1/4/16 shots, 3 seeds
    python benchmarks/methods.py --cards pathology radiology satellite
    python benchmarks/methods.py --cards radiology --cache-only   # the feature-cache ratio alone
    python benchmarks/methods.py --smoke              # seconds: keeps the script working in CI
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from torch.utils.data import DataLoader, Subset  # noqa: E402

from domainclip.core.paths import config_dir  # noqa: E402
from domainclip.pipeline.run import run_once, setup  # noqa: E402

METHODS = ["zero_shot", "linear_probe", "lora", "coop", "cocoop", "vpt", "full", "wise_ft"]
QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_checkpointing=false", "export.enabled=false",
         "logger=csv", "~trainer.callbacks", "eval.bootstrap=0", "eval.external_cards=[]"]


def cfg_for(card: str, method: str, shots: int, seed: int, out: Path, extra: list[str]):
    overrides = [f"recipe={card}", f"method={method}", f"data.shots={shots}", f"seed={seed}",
                 f"run_dir={out / card / method / f'k{shots}_s{seed}'}", *QUIET, *extra]
    if method == "full":
        overrides.append("method.unlocked_layers=2")
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("config", overrides=overrides)


def method_table(cards, shots_list, seeds, out: Path, extra: list[str]) -> dict:
    table = {}
    for card in cards:
        for method in METHODS:
            for shots in shots_list:
                tops = []
                for seed in seeds:
                    result = run_once(cfg_for(card, method, shots, seed, out, extra))
                    tops.append(result.metrics["zero_shot_after"]["test"]["top1"])
                sd = statistics.stdev(tops) if len(tops) > 1 else 0.0
                table[f"{card}/{method}/{shots}"] = {"mean": statistics.fmean(tops), "sd": sd, "values": tops}
                print(f"{card:10s} {method:13s} {shots:3d}-shot  top-1 {statistics.fmean(tops):.3f} +- {sd:.3f}",
                      flush=True)
    return table


def epoch_seconds(task, dataset, batch_size: int, timed: int = 2) -> float:
    """Steady-state time of one training epoch (forward, backward, step) over ``dataset``: one
    warm-up epoch (first-call allocations and kernel selection), then the best of ``timed``."""
    opt = torch.optim.AdamW([p for p in task.parameters() if p.requires_grad], lr=1e-4)
    task.train()
    times = []
    for _ in range(1 + timed):
        start = time.perf_counter()
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            opt.zero_grad()
            task.loss(batch, 0).backward()
            opt.step()
        times.append(time.perf_counter() - start)
    return min(times[1:])


CACHE_METHODS = ["coop", "cocoop", "lora"]  # trained by the task on cached image features


def cache_speedup(card: str, method: str, out: Path, extra: list[str], smoke: bool = False) -> dict:
    """Epoch time with cached image features vs decoding + running the frozen backbone (the smoke:
    over two batches, one timed epoch)."""
    cfg = cfg_for(card, method, 0, 0, out / "cache", extra)
    cfg.data.shots = None
    parts = setup(cfg)
    cached = parts.dm.datasets["train"]
    from domainclip.pipeline.run import build_datasets

    cfg.data.cache_features = False
    uncached, _ = build_datasets(cfg, parts.data, parts.task, parts.bank.pool_ids)
    uncached = uncached["train"]
    if smoke:
        keep = range(min(2 * cfg.data.batch_size, len(cached)))
        cached, uncached = Subset(cached, keep), Subset(uncached, keep)
    timed = 1 if smoke else 2
    t_uncached = epoch_seconds(parts.task, uncached, cfg.data.batch_size, timed)
    t_cached = epoch_seconds(parts.task, cached, cfg.data.batch_size, timed)
    return {"card": card, "method": method, "samples": len(cached), "epoch_s_uncached": t_uncached,
            "epoch_s_cached": t_cached, "ratio_cached_over_uncached": t_cached / t_uncached}


def cache_table(card: str, methods: list[str], out: Path, extra: list[str], smoke: bool = False) -> dict:
    """``cache_speedup`` per method; ``ratio_cached_over_uncached`` is the worst of them. LoRA on
    the text side and CoCoOp still train the text tower each step, near the matmul peak, so the
    cache cannot bring them to 0.1 of an epoch with the (small) EfficientNet image tower."""
    rows = {m: cache_speedup(card, m, out, extra, smoke) for m in methods}
    for m, r in rows.items():
        print(f"feature cache, {card} {m}: epoch {r['epoch_s_cached']:.3f} s cached vs {r['epoch_s_uncached']:.3f} s "
              f"uncached -> ratio {r['ratio_cached_over_uncached']:.4f} (target <= 0.1)", flush=True)
    return {"by_method": rows, "ratio_cached_over_uncached": max(r["ratio_cached_over_uncached"] for r in rows.values())}


def main(argv=None) -> int:
    global METHODS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cards", nargs="+", default=["pathology"])
    ap.add_argument("--shots", nargs="+", type=int, default=[1, 4, 16])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--out", default="benchmarks/out/methods")
    ap.add_argument("--methods", nargs="+", default=None, help=f"subset of {METHODS}")
    ap.add_argument("--smoke", action="store_true", help="one method, one shot, one seed, one epoch")
    ap.add_argument("--cache-only", action="store_true", help="only the feature-cache epoch times")
    args = ap.parse_args(argv)
    METHODS = args.methods or METHODS
    out = Path(args.out)
    extra = [f"trainer.max_epochs={args.epochs}", f"+trainer.check_val_every_n_epoch={args.epochs}"]
    if args.smoke:
        METHODS = ["zero_shot", "coop"]
        args.cards, args.shots, args.seeds = args.cards[:1], [1], [0]
        extra = ["trainer.max_epochs=1", "tower.image.size=64"]
    results = {"methods": {} if args.cache_only else method_table(args.cards, args.shots, args.seeds, out, extra),
               "feature_cache": cache_table(args.cards[0], CACHE_METHODS if not args.smoke else ["lora"], out, extra,
                                            args.smoke)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
