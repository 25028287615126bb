"""Framework overhead: training-step throughput of domainclip's Lightning task vs a bare PyTorch
loop doing the same forward, backward and AdamW step on the same tower, batch and optimizer.

    python benchmarks/overhead.py            # embedded LiT tower (LoRA) and ViT-B/16-shaped CLIP (full FT), batch 8
    python benchmarks/overhead.py --smoke

Target: Lightning / bare >= 0.95 on both towers.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, toy_batch, toy_task, vit_b16_clip_dir, write_result  # noqa: E402


def bare_rate(task, batch, steps: int, warmup: int) -> float:
    """Samples/s of a plain loop: loss, backward, step, zero_grad."""

    opt = task.make_optimizer()  # the optimizer Lightning gets from configure_optimizers
    task.train()
    for i in range(warmup + steps):
        if i == warmup:
            start = time.perf_counter()
        loss = task.loss(batch, 0)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return steps * len(batch["label"]) / (time.perf_counter() - start)


def lightning_rate(task, batch, steps: int, warmup: int) -> float:
    """Samples/s of ``Trainer.fit`` on the same task (timed from the first step after warm-up)."""
    import pytorch_lightning as pl

    marks = {}

    class Timer(pl.Callback):
        def on_train_batch_start(self, trainer, module, b, idx):
            if idx == warmup:
                marks["start"] = time.perf_counter()

        def on_train_batch_end(self, trainer, module, out, b, idx):
            marks["end"] = time.perf_counter()

    data = [{k: v[i] for k, v in batch.items()} for i in range(len(batch["label"]))] * (warmup + steps)
    loader = __import__("torch").utils.data.DataLoader(data, batch_size=len(batch["label"]))
    trainer = pl.Trainer(accelerator="cpu", max_steps=warmup + steps, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[Timer()])
    trainer.fit(task, loader)
    return steps * len(batch["label"]) / (marks["end"] - marks["start"])


def measure(name: str, tower: dict, method: dict, batch_size: int, steps: int, warmup: int, rounds: int) -> dict:
    """Alternate bare and Lightning rounds and keep each one's best: the machine's speed drifts
    (shared cores), and back-to-back single runs would compare two different machines."""
    import torch

    bare, light = [], []
    for _ in range(rounds):
        torch.manual_seed(0)
        task = toy_task(tower, method)
        batch = toy_batch(batch_size, task.tower.preprocess.size)
        bare.append(bare_rate(task, batch, steps, warmup))
        torch.manual_seed(0)
        light.append(lightning_rate(toy_task(tower, method), batch, steps, warmup))
    return {"bare_samples_per_s": max(bare), "lightning_samples_per_s": max(light), "ratio": max(light) / max(bare),
            "rounds": {"bare": bare, "lightning": light}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    layers, size = (12, 224) if not args.smoke else (1, 32)
    if args.smoke:
        args.batch, args.steps, args.warmup, args.rounds = 4, 2, 1, 1
    tmp = Path(tempfile.mkdtemp(prefix="vitb16-"))
    clip = {"name": "hf_clip", "path": str(vit_b16_clip_dir(tmp, layers, size))}
    embedded = {"name": "two_tower", "image": {"size": 224 if not args.smoke else 64}}
    cases = {"embedded LiT, LoRA (text) + heads": (embedded, {"name": "lora", "sides": ["text"]}),
             "ViT-B/16 CLIP, full fine-tuning": (clip, {"name": "full", "lr": 1e-5})}
    results = {k: measure(k, t, m, args.batch, args.steps, args.warmup, args.rounds) for k, (t, m) in cases.items()}
    write_result("overhead", {"batch": args.batch, "cases": results}, args.out)
    print(f"machine: {machine()}")
    for name, r in results.items():
        print(f"{name}: bare {r['bare_samples_per_s']:.2f} samples/s, Lightning {r['lightning_samples_per_s']:.2f}"
              f" samples/s, ratio {r['ratio']:.3f} (target >= 0.95)")


if __name__ == "__main__":
    main()
