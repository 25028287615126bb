"""Data-parallel scaling: training samples/s with 2 DDP ranks vs 1, weak scaling (fixed batch per
rank), Lightning DDP with domainclip's task, cross-rank negatives included.

    python benchmarks/scaling.py                # CPU (gloo): 1 rank x 1 thread, 1 rank x 2 threads, 2 ranks x 1 thread
    python benchmarks/scaling.py --accelerator gpu --ranks 1 2 4 8   # on a GPU machine
    python benchmarks/scaling.py --smoke        # tiny steps, 1 and 2 ranks only

Efficiency = samples/s at R ranks / (R x samples/s at 1 rank) with the same threads per rank; on
CPU we also report 2 ranks x 1 thread against 1 rank x 2 threads (the same cores).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_result  # noqa: E402

HERE = Path(__file__).resolve()


def worker(args) -> None:
    """Train ``args.steps`` steps with ``args.ranks`` ranks; rank 0 writes samples/s to ``args.result``."""
    import pytorch_lightning as pl
    import torch

    from domainclip.training.task import ContrastiveTask

    torch.set_num_threads(args.threads)
    captions = [f"a {c} tissue tile" for c in ("red", "green", "blue", "grey")]
    task = ContrastiveTask(tower={"name": "two_tower", "image": {"size": args.size}},
                           method={"name": "lora", "sides": ["image", "text"], "lr": 1e-4},
                           loss={"name": "clip"}, captions=captions, pools=[[0], [1], [2], [3]],
                           class_prompts=[[0], [1], [2], [3]], class_names=["r", "g", "b", "k"])
    n = args.batch * args.ranks * args.steps
    g = torch.Generator().manual_seed(0)
    data = [{"pixels": torch.randn(3, args.size, args.size, generator=g), "label": torch.tensor(i % 4),
             "index": torch.tensor(i), "pool": torch.tensor(i % 4)} for i in range(n)]
    loader = torch.utils.data.DataLoader(data, batch_size=args.batch, shuffle=True)
    timer = StepTimer(warmup=args.warmup, batch=args.batch)
    strategy = "ddp" if args.ranks > 1 else "auto"
    trainer = pl.Trainer(accelerator=args.accelerator, devices=args.ranks, strategy=strategy, max_epochs=1,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[timer])
    trainer.fit(task, loader)
    if trainer.global_rank == 0:
        Path(args.result).write_text(json.dumps({"samples_per_s": timer.rate(args.ranks)}))


def _step_timer_class():
    import pytorch_lightning as pl

    class StepTimerCallback(pl.Callback):
        """Wall time of the training steps after ``warmup`` steps (rank 0)."""

        def __init__(self, warmup: int, batch: int):
            self.warmup, self.batch, self.steps, self.start, self.end = warmup, batch, 0, None, None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == self.warmup:
                self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.end, self.steps = time.perf_counter(), batch_idx + 1 - self.warmup

        def rate(self, ranks: int) -> float:
            return self.steps * self.batch * ranks / (self.end - self.start)

    return StepTimerCallback


def StepTimer(**kw):  # noqa: N802 - a factory that keeps Lightning out of the parent's imports
    return _step_timer_class()(**kw)


def measure(ranks: int, threads: int, args, out: Path) -> float:
    """Run one configuration as its own process tree (Lightning launches the extra ranks)."""
    result = out / f"scaling_r{ranks}_t{threads}.json"
    cmd = [sys.executable, str(HERE), "--worker", "--ranks", str(ranks), "--threads", str(threads),
           "--batch", str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--size", str(args.size), "--accelerator", args.accelerator, "--result", str(result)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run(cmd, check=True, env=env, capture_output=True, text=True)
    return json.loads(result.read_text())["samples_per_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--accelerator", default="cpu")
    ap.add_argument("--result", default="")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    args = ap.parse_args()
    if args.worker:
        args.ranks = args.ranks[0]
        return worker(args)
    if args.smoke:
        args.batch, args.steps, args.warmup, args.size = 4, 3, 1, 64
    args.out.mkdir(parents=True, exist_ok=True)
    rates = {f"{r}x{args.threads}": measure(r, args.threads, args, args.out) for r in args.ranks}
    base = rates[f"1x{args.threads}"]
    result = {"where": args.accelerator, "batch_per_rank": args.batch, "image_size": args.size,
              "samples_per_s": rates,
              "efficiency": {k: v / (int(k.split("x")[0]) * base) for k, v in rates.items()}}
    if args.accelerator == "cpu" and 2 in args.ranks and not args.smoke:
        same_cores = measure(1, 2 * args.threads, args, args.out)
        rates[f"1x{2 * args.threads}"] = same_cores
        result["two_ranks_over_one_rank_same_cores"] = rates[f"2x{args.threads}"] / same_cores
    write_result("scaling", result, args.out)
    print(f"machine: {machine()}")
    for key, rate in rates.items():
        print(f"ranks x threads {key}: {rate:.1f} samples/s")
    for key, eff in result["efficiency"].items():
        print(f"scaling efficiency {key}: {eff:.2f} (target 1.00 = linear; samples/s over ranks x one-rank samples/s)")
    if "two_ranks_over_one_rank_same_cores" in result:
        print(f"2 ranks x 1 thread / 1 rank x 2 threads (same cores): {result['two_ranks_over_one_rank_same_cores']:.2f}")


if __name__ == "__main__":
    main()
