"""Merged export: LoRA folded into the base weights, saved with ``save_pretrained``."""
from __future__ import annotations

import copy
from pathlib import Path

from domainclip.core.errors import ConfigError

MERGED_DIR = "merged"


def write_merged(model, out_dir: Path) -> list[str]:
    """Save the merged model under ``out_dir/merged`` as the tower saves it (transformers'
    ``save_pretrained``; open_clip towers: an open_clip checkpoint); returns the files."""
    method, tower = model.method, model.tower
    if method.name != "lora":
        raise ConfigError(f"export.merge=true needs method=lora (got '{method.name}')")
    merged = copy.deepcopy(model.adapters["lora"].peft_model).merge_and_unload()
    target = Path(out_dir) / MERGED_DIR
    tower.save_merged(merged, target, list(method.sides))
    return [p.relative_to(out_dir).as_posix() for p in sorted(target.rglob("*")) if p.is_file()]
