"""LoRA memory: peak memory of training steps with LoRA vs full fine-tuning, same tower (ViT-B/16
-shaped CLIP) and batch, and the share of trainable parameters. Each mode runs in its own process;
on CPU the figure is peak resident memory (``ru_maxrss``), on CUDA ``max_memory_allocated``.

On CPU the workers run with ``MALLOC_MMAP_THRESHOLD_=131072``: glibc then returns every freed
tensor buffer to the system, so resident memory follows the memory actually in use. With glibc's
default (a threshold that grows to 32 MB) freed activation buffers stay resident in the heap, and
``ru_maxrss`` measures the allocator's high-water mark instead; ``--glibc-default`` shows that.
Both modes are measured without and with ``tower.activation_checkpointing``.

    python benchmarks/lora_memory.py
    python benchmarks/lora_memory.py --smoke    # one tiny layer, without checkpointing only

Targets: LoRA peak / full peak <= 0.5; LoRA trainable parameters <= 1%. Without checkpointing
the ViT-B/16 batch-8 activations (0.86 GB saved for LoRA) outweigh the weights (0.56 GB), and
LoRA saves only gradients and optimizer state: 0.55 (2026-11-24); with checkpointing, 0.44.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, toy_batch, toy_task, vit_b16_clip_dir, write_result  # noqa: E402

METHODS = {"lora": {"name": "lora", "sides": ["image", "text"], "r": 8}, "full": {"name": "full", "lr": 1e-5}}


def worker(args) -> None:
    import torch

    torch.set_num_threads(2)
    tower = {"name": "hf_clip", "path": args.tower, "activation_checkpointing": args.checkpointing}
    task = toy_task(tower, METHODS[args.method])
    batch = toy_batch(args.batch, task.tower.preprocess.size)
    opt = task.make_optimizer()
    task.train()  # as Trainer.fit does (transformers checkpoints only in training mode)
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(args.steps):
        task.loss(batch, 0).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    trainable = sum(p.numel() for p in task.parameters() if p.requires_grad)
    total = sum(p.numel() for p in task.parameters())
    print(json.dumps({"peak_mb": peak / 1024, "after_load_mb": loaded / 1024, "trainable": trainable, "total": total}))


def run_mode(method: str, tower: str, args, checkpointing: bool) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--method", method, "--tower", tower, "--batch", str(args.batch),
           "--steps", str(args.steps)] + (["--checkpointing"] if checkpointing else [])
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    if not args.glibc_default:
        env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(tower: str, args, checkpointing: bool) -> dict:
    modes = {m: run_mode(m, tower, args, checkpointing) for m in METHODS}
    lora, full = modes["lora"], modes["full"]
    return {"modes": modes, "lora_over_full_peak": lora["peak_mb"] / full["peak_mb"],
            "lora_over_full_training_increment": (lora["peak_mb"] - lora["after_load_mb"]) /
            max(full["peak_mb"] - full["after_load_mb"], 1e-9),
            "lora_trainable_fraction": lora["trainable"] / lora["total"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("--method", default="lora")
    ap.add_argument("--tower", default="")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--checkpointing", action="store_true")
    ap.add_argument("--glibc-default", action="store_true", help="measure with glibc's default malloc settings")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    layers, size = (12, 224) if not args.smoke else (1, 32)
    if args.smoke:
        args.batch, args.steps = 2, 1
    tower = str(vit_b16_clip_dir(Path(tempfile.mkdtemp(prefix="vitb16-")), layers, size))
    runs = {"default": compare(tower, args, False)}
    if not args.smoke:  # the smoke keeps the script working; tests/test_scaling.py checks checkpointing itself
        runs["activation_checkpointing"] = compare(tower, args, True)
    result = {"batch": args.batch, "glibc_default": args.glibc_default, **runs["default"], "runs": runs}
    write_result("lora_memory", result, args.out)
    print(f"machine: {machine()}; batch {args.batch}")
    for name, run in runs.items():
        for m, r in run["modes"].items():
            print(f"{name:24s} {m}: peak {r['peak_mb']:.0f} MB (after load {r['after_load_mb']:.0f} MB), "
                  f"trainable {r['trainable']:,} of {r['total']:,}")
        print(f"{name:24s} LoRA / full peak memory: {run['lora_over_full_peak']:.2f} (target <= 0.5); training "
              f"increment {run['lora_over_full_training_increment']:.2f}")
    print(f"LoRA trainable {100 * result['lora_trainable_fraction']:.2f}% (target <= 1%)")


if __name__ == "__main__":
    main()
