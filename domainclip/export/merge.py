"""Merged export: LoRA folded into the base weights, saved with ``save_pretrained``."""
from __future__ import annotations

import copy
from pathlib import Path

import torch

from domainclip.core.errors import ConfigError

MERGED_DIR = "merged"


def write_merged(model, out_dir: Path) -> list[str]:
    """Save the merged transformers model (and tokenizer) under ``out_dir/merged``; returns files."""
    method, tower = model.method, model.tower
    if method.name != "lora":
        raise ConfigError(f"export.merge=true needs method=lora (got '{method.name}')")
    merged = copy.deepcopy(model.adapters["lora"].peft_model).merge_and_unload()
    if not hasattr(merged, "save_pretrained"):
        raise ConfigError("export.merge=true needs the LoRA'd side(s) to form one transformers model; "
                          "with a two-tower model use method.sides=[text]")
    if hasattr(merged, "logit_scale"):
        with torch.no_grad():
            merged.logit_scale.copy_(tower.log_logit_scale.detach())
    target = Path(out_dir) / MERGED_DIR
    merged.save_pretrained(target, safe_serialization=True)
    if "text" in method.sides:
        tower.tokenizer.save_pretrained(target)
    return [p.relative_to(out_dir).as_posix() for p in sorted(target.rglob("*")) if p.is_file()]
