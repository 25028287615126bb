"""The one GPU check: training efficiency, data feeding and memory on one accelerator, as one table.

    python benchmarks/gpu_check.py            # one H100/H200-class GPU: about 6 minutes, installs nothing
    python benchmarks/gpu_check.py --dry-run  # CPU, tiny sizes: every row runs (CI runs this)

Rows (each with its peak accelerator memory):
- LoRA (q/v of both towers) and full fine-tuning steps of a ViT-B/16-shaped ``hf_clip`` tower with
  random weights, ``bf16`` autocast, batch 256 (``--grad-cache C`` splits it GradCache-style), with
  and without ``torch.compile``. MFU = FLOPs of one step (``torch.utils.flop_counter``) x steps/s
  over the chip's dense bf16 peak (a table of known chips, else the measured matmul peak).
  Targets: LoRA >= 40% MFU, full fine-tuning >= 45%.
- Data feeding: the pathology recipe's real data path (card, reader in loader workers, transforms)
  driving the LoRA step, first from files, then from WebDataset shards of the same card; data wait
  is the share of wall time spent waiting for the next batch. Target with shards: <= 5%.
- Tile-feature extraction for whole slides: not timed here. The run extracts tile features (and
  the feature cache, and the evaluation's predictions) on the accelerator (``core.devices``);
  ``pytest -m gpu`` checks they equal the CPU's, and ``benchmarks/slides.py`` times the path.

Fixed on CPU-testable paths before any GPU figure, because a GPU makes each costly: caption choice
synchronised host and device once per sample (now one copy per tensor), and loaders now pin memory
when CUDA is present so host-to-device copies are asynchronous. The data-feeding rows cap the batch
at the demo's train split (~190 tiles).

The dry run uses a 1-layer, 32-pixel tower, batch 8, two steps and ``torch.compile(backend="eager")``
(no C++ toolchain needed), so CI proves the script works without a GPU; its figures mean nothing.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, toy_batch, toy_task, vit_b16_clip_dir, write_result  # noqa: E402
from mfu import matmul_peak, step_flops, sync  # noqa: E402

# Dense (no sparsity) bf16 tensor-core peaks from the vendors' data sheets, FLOP/s.
BF16_PEAK = {"H200": 989e12, "H100 SXM": 989e12, "H100 NVL": 835e12, "H100 PCIe": 756e12, "H100": 756e12,
             "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12}
TARGETS = {"lora": 0.40, "full": 0.45}


def chip_peak(device: str, dtype) -> tuple[float, str]:
    """The chip's dense bf16 peak from the table, else the matmul peak measured here."""
    import torch

    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(0)
        for key, peak in BF16_PEAK.items():
            if key in name:
                return peak, f"{key} data sheet"
    return matmul_peak(device, dtype, 512 if device == "cpu" else 8192), "measured matmul peak"


def reset_memory(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gb(device: str) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None


def make_step(task, device: str, dtype, compiled: bool, dry_run: bool, grad_cache: int = 0):
    """One optimizer step of the task's own loss and optimizer, optionally compiled; with
    ``grad_cache=C`` the loss of the whole batch with the activation memory of C samples."""
    from contextlib import nullcontext

    import torch

    from domainclip.training.grad_cache import grad_cache_backward

    opt = task.make_optimizer()
    loss_fn = task.loss
    if compiled:
        loss_fn = torch.compile(loss_fn, backend="eager" if dry_run else "inductor")
    autocast = torch.autocast(device.split(":")[0], dtype=dtype)

    def step(batch):
        with autocast:
            if grad_cache:
                grad_cache_backward(task, batch, 0, grad_cache, lambda loss: loss.backward(), nullcontext)
            else:
                loss_fn(batch, 0).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def training_row(tower: dict, method: str, args, peak: float, compiled: bool) -> dict:
    """Steps/s, MFU and peak memory of one (method, compile) case on a fixed batch."""
    import torch

    cfg = {"name": "full", "lr": 1e-5} if method == "full" else {"name": "lora", "sides": ["image", "text"]}
    reset_memory(args.device)
    task = toy_task(tower, cfg).to(args.device).train()
    batch = {k: v.to(args.device) for k, v in toy_batch(args.batch, args.size).items()}
    with torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16):
        flops = step_flops(task, batch)
    step = make_step(task, args.device, torch.bfloat16, compiled, args.dry_run, args.grad_cache)
    for _ in range(args.warmup):  # compilation and cuBLAS autotuning happen here
        step(batch)
    sync(args.device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step(batch)
    sync(args.device)
    seconds = (time.perf_counter() - start) / args.steps
    return {"row": f"{method}{' + compile' if compiled else ''}", "batch": args.batch, "step_ms": 1e3 * seconds,
            "samples_per_s": args.batch / seconds, "mfu": flops / seconds / peak,
            "target": TARGETS[method], "peak_memory_gb": peak_memory_gb(args.device)}


def recipe_parts(tower_path: str, args, extra: list[str]):
    """The pathology recipe's run parts (card, reader, datasets) on the benchmark tower."""
    from hydra import compose, initialize_config_dir

    from domainclip.core.paths import config_dir
    from domainclip.pipeline.run import setup

    overrides = ["recipe=pathology", "tower=hf_clip", f"tower.path={tower_path}", "method=lora",
                 "method.sides=[image,text]", f"data.num_workers={args.workers}", "data.cache_features=false",
                 f"run_dir={tempfile.mkdtemp(prefix='gpu-check-')}", *extra]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return setup(compose("config", overrides=overrides))


def endless(dataset, batch: int, workers: int, pin: bool):
    """Batches of the recipe's train dataset through DataLoader workers, without end: files are
    drawn with replacement in one long epoch; a shard stream is read epoch after epoch."""
    from torch.utils.data import DataLoader, IterableDataset, RandomSampler

    common = {"batch_size": batch, "num_workers": workers, "pin_memory": pin, "persistent_workers": workers > 0}
    if isinstance(dataset, IterableDataset):
        loader = DataLoader(dataset, **common)
        while True:
            yield from loader
    sampler = RandomSampler(dataset, replacement=True, num_samples=10**9)
    yield from DataLoader(dataset, sampler=sampler, **common)


def feeding_row(label: str, parts, args) -> dict:
    """Drive the LoRA step from the recipe's train data; data wait = time blocked on the loader."""
    import torch

    dataset = parts.dm.datasets["train"]
    batch_size = min(args.batch, len(parts.data.splits["train"]))  # the demo's train split is ~190 tiles
    task = parts.task.to(args.device).train()
    step = make_step(task, args.device, torch.bfloat16, False, args.dry_run, args.grad_cache)
    reset_memory(args.device)
    batches = endless(dataset, batch_size, args.workers, args.device.startswith("cuda"))
    waited, start = 0.0, None
    for i in range(args.warmup + args.steps):
        t = time.perf_counter()
        batch = next(batches)
        if i == args.warmup:
            start = t
        if i >= args.warmup:
            waited += time.perf_counter() - t
        step({k: v.to(args.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()})
        sync(args.device)
    total = time.perf_counter() - start
    return {"row": f"data feeding: {label}", "batch": batch_size, "step_ms": 1e3 * total / args.steps,
            "samples_per_s": batch_size * args.steps / total, "data_wait": waited / total, "target": 0.05,
            "peak_memory_gb": peak_memory_gb(args.device)}


def feeding_rows(tower_path: str, args) -> list[dict]:
    from domainclip.shards.build import build_shards

    rows = [feeding_row("files (readers in workers)", recipe_parts(tower_path, args, []), args)]
    shards = Path(tempfile.mkdtemp(prefix="gpu-check-shards-"))
    build_shards("demo_pathology", shards, size=args.size, workers=max(1, min(args.workers, 4)))
    parts = recipe_parts(tower_path, args, ["data.source=shards", f"data.shards={shards}"])
    rows.append(feeding_row("WebDataset shards", parts, args))
    return rows


def print_table(rows: list[dict], args, peak: float, peak_source: str) -> None:
    print(f"machine: {machine()}; bf16 peak {peak / 1e12:.1f} TFLOP/s ({peak_source})"
          f"{'; DRY RUN on CPU, figures mean nothing' if args.dry_run else ''}")
    print(f"{'row':38} {'batch':>5} {'step ms':>9} {'samples/s':>10} {'MFU':>6} {'wait':>6} {'peak GB':>8}  target")
    for r in rows:
        mfu = f"{r['mfu']:.2f}" if "mfu" in r else "-"
        wait = f"{r['data_wait']:.1%}" if "data_wait" in r else "-"
        mem = f"{r['peak_memory_gb']:.1f}" if r.get("peak_memory_gb") is not None else "n/a"
        target = (f"MFU >= {r['target']:.0%}" if "mfu" in r else f"wait <= {r['target']:.0%}") if "target" in r else ""
        print(f"{r['row']:38} {r.get('batch', '-'):>5} {r.get('step_ms', 0):>9.1f} {r.get('samples_per_s', 0):>10.1f} "
              f"{mfu:>6} {wait:>6} {mem:>8}  {target}{r.get('note', '')}")


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: check the script, not the GPU")
    ap.add_argument("--smoke", action="store_true", help="alias of --dry-run (the benchmarks' CI flag)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--grad-cache", type=int, default=0, help="GradCache chunk size (0 = whole batch at once)")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    args.dry_run = args.dry_run or args.smoke
    args.device = "cpu" if args.dry_run or not torch.cuda.is_available() else "cuda"
    if args.device == "cpu" and not args.dry_run:
        sys.exit("no CUDA device: run with --dry-run to check the script on CPU")
    layers, args.size = (1, 32) if args.dry_run else (12, 224)
    if args.dry_run:
        args.batch, args.steps, args.warmup, args.workers = 8, 2, 1, 2
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    tower_path = str(vit_b16_clip_dir(Path(tempfile.mkdtemp(prefix="vitb16-")), layers, args.size))
    peak, peak_source = chip_peak(args.device, torch.bfloat16)
    rows = []
    for method in ("lora", "full"):
        for compiled in (False, True) if not args.no_compile else (False,):
            rows.append(training_row({"name": "hf_clip", "path": tower_path}, method, args, peak, compiled))
    rows += feeding_rows(tower_path, args)
    rows.append({"row": "whole-slide tile features", "note": "not timed here: benchmarks/slides.py times extraction; pytest -m gpu checks it on the GPU"})
    write_result("gpu_check", {"device": args.device, "dry_run": args.dry_run, "peak_flops": peak,
                               "peak_source": peak_source, "rows": rows}, args.out)
    print_table(rows, args, peak, peak_source)


if __name__ == "__main__":
    main()
