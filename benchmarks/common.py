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


def interleaved_rates(fns: dict, items: int, repeats: int = 3, warmup: int = 1) -> dict:
    """Items per second of each ``fns[name]()``, the best of ``repeats`` rounds in which every
    function runs once in turn (after ``warmup`` rounds): a slow spell of the machine then falls
    on all of them alike, not on whichever was being timed, so their ratios are steadier."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    return {name: items / seconds for name, seconds in best.items()}


def median(values) -> float:
    return float(statistics.median(values))


def write_result(name: str, result: dict, out: Path | None = None) -> Path:
    """``out/NAME.json`` with the machine added; returns the path."""
    out = Path(out) if out else OUT
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **result}, indent=2))
    return path


def vit_b16_clip_dir(out: Path, layers: int = 12, image_size: int = 224) -> Path:
    """A ViT-B/16-shaped ``transformers`` CLIP (random weights; 12 layers, width 768, text width
    512) saved to ``out`` with the MiniLM tokenizer, loaded like any real checkpoint."""
    import torch
    import transformers

    from domainclip.towers.two_tower import minilm_path

    if (out / "config.json").is_file():
        return out
    tok = transformers.AutoTokenizer.from_pretrained(str(minilm_path()))
    cfg = transformers.CLIPConfig(
        text_config=dict(vocab_size=tok.vocab_size, hidden_size=512, intermediate_size=2048, num_hidden_layers=layers,
                         num_attention_heads=8, max_position_embeddings=77, eos_token_id=tok.sep_token_id,
                         pad_token_id=tok.pad_token_id, bos_token_id=tok.cls_token_id),
        vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=layers, num_attention_heads=12,
                           image_size=image_size, patch_size=16),
        projection_dim=512)
    torch.manual_seed(0)
    transformers.CLIPModel(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def toy_task(tower: dict, method: dict, loss: str = "clip"):
    """A ContrastiveTask with four classes and two captions each."""
    from domainclip.training.task import ContrastiveTask

    classes = ["tumour", "stroma", "adipose", "lymphocytes"]
    captions = [t.format(c) for c in classes for t in ("a tile of {}.", "an H&E image of {}.")]
    pools = [[2 * k, 2 * k + 1] for k in range(4)]
    return ContrastiveTask(tower=tower, method=method, loss={"name": loss}, captions=captions, pools=pools,
                           class_prompts=pools, class_names=classes)


def toy_batch(n: int, size: int, seed: int = 0) -> dict:
    import torch

    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    return {"pixels": torch.randn(n, 3, size, size, generator=g), "label": labels, "index": torch.arange(n),
            "pool": labels}
