"""Helpers shared by the benchmarks: machine description, timing, results files."""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

OUT = Path(__file__).resolve().parent / "out"


def machine() -> str:
    """Where a figure was taken: CPU count and model, or the GPU name."""
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__})"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPU cores, {cpu} (torch {torch.__version__})"


def best_rate(fn, items: int, repeats: int = 3, warmup: int = 1) -> float:
    """Items per second of ``fn()``: the best of ``repeats`` timed calls after ``warmup`` calls
    (the best run is the least disturbed by other load on a noisy machine)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return items / min(times)


def median(values) -> float:
    return float(statistics.median(values))


def write_result(name: str, result: dict, out: Path | None = None) -> Path:
    """``out/NAME.json`` with the machine added; returns the path."""
    out = Path(out) if out else OUT
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **result}, indent=2))
    return path
