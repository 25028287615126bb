"""A received LoRA adapter's files, checked before peft sees them.

peft acts on what ``adapter_config.json`` says: ``megatron_config`` makes it import the module
named by ``megatron_core``, ``target_modules`` is a regular expression it matches against every
module name, and ``r`` sizes the matrices it allocates before any weight is read. So a bundle's
adapter config is never handed to peft: the method builds its own ``LoraConfig`` from its
settings, and the file must agree with it. Keys the method writes must equal its values, peft's
bookkeeping keys must have their types, every other key must hold peft's default, and the rank
and the tensor shapes in the safetensors header must fit the base model's layers.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from torch import nn

from domainclip.core.errors import BundleError
from domainclip.core.fileio import check_safetensors_header
from domainclip.core.safe_json import loads_bounded

CONFIG_FILE, WEIGHTS_FILE = "adapter_config.json", "adapter_model.safetensors"
METHOD_KEYS = {"r": "r", "lora_alpha": "lora_alpha", "lora_dropout": "lora_dropout", "target_modules": "target_modules"}
BOOKKEEPING = {  # what peft writes about itself: type-checked, never acted on
    "base_model_name_or_path": (str, type(None)), "revision": (str, type(None)), "peft_version": (str,),
    "inference_mode": (bool,), "task_type": (type(None),), "peft_type": (str,), "auto_mapping": (dict, type(None)),
}


def _defaults(cfg) -> dict:
    """peft's defaults for every field of ``cfg``'s class, as JSON would write them."""
    return json.loads(json.dumps(type(cfg)(r=1).to_dict(), default=str))


def check_adapter_config(folder: Path, cfg) -> None:
    """Refuse ``folder/adapter_config.json`` unless it is what this method, with these settings,
    writes: the values ``cfg`` (the method's own ``LoraConfig``) holds for the method's keys,
    typed bookkeeping, and peft's defaults everywhere else (no importable module names, no
    patterns, no extra layers)."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise BundleError(f"{path}: missing; re-export the bundle")
    found = loads_bounded(path.read_text(encoding="utf-8", errors="replace"), str(path), BundleError)
    if not isinstance(found, dict):
        raise BundleError(f"{path}: must hold a JSON object; re-export the bundle")
    defaults, own = _defaults(cfg), json.loads(json.dumps(cfg.to_dict(), default=str))
    for key, value in found.items():
        if key not in defaults:
            raise BundleError(f"{path}: key '{key}' is not a LoRA setting; re-export the bundle")
        if key in METHOD_KEYS:
            expected = own[key]
        elif key in BOOKKEEPING:
            plain = not isinstance(value, dict) or all(isinstance(v, str) for v in value.values())
            if not isinstance(value, BOOKKEEPING[key]) or not plain or (key == "peft_type" and value != "LORA"):
                raise BundleError(f"{path}: '{key}' holds {type(value).__name__} {str(value)[:60]!r}; re-export")
            continue
        else:
            expected = defaults[key]
        if value != expected:
            raise BundleError(f"{path}: '{key}' is {str(value)[:80]!r} where the method writes {str(expected)[:80]!r}; "
                              "a bundle's adapter config may not change how peft builds or imports anything. "
                              "Re-export the bundle")


def layer_sides(module: nn.Module) -> tuple[int, int] | None:
    """(inputs, outputs) of a layer LoRA can wrap (linear, convolution, embedding, attention)."""
    for a, b in (("in_features", "out_features"), ("in_channels", "out_channels"),
                 ("num_embeddings", "embedding_dim"), ("embed_dim", "embed_dim")):
        if hasattr(module, a) and hasattr(module, b):
            return int(getattr(module, a)), int(getattr(module, b))
    return None


def check_rank_and_shapes(folder: Path, base: nn.Module, cfg) -> None:
    """Before peft allocates anything: the rank fits every targeted layer of ``base`` (it cannot
    exceed the layer's larger side), and every LoRA tensor in the weights file's header has that
    rank. Shapes come from the header; no tensor is read."""
    from safetensors import safe_open

    pattern = re.compile(cfg.target_modules)
    sides = [s for name, m in base.named_modules() if pattern.fullmatch(name) and (s := layer_sides(m))]
    if not sides:
        raise BundleError(f"{folder}: the adapter targets no layer of this base model; re-export the bundle")
    widest = min(max(s) for s in sides)
    if not 1 <= cfg.r <= widest:
        raise BundleError(f"{folder}: LoRA rank r={cfg.r} is outside 1..{widest} (the targeted layers' size); "
                          "re-export the bundle")
    weights = Path(folder) / WEIGHTS_FILE
    check_safetensors_header(weights)
    with safe_open(str(weights), framework="pt") as fh:
        for key in fh.keys():
            shape = fh.get_slice(key).get_shape()
            rank_axis = 0 if "lora_A" in key else 1 if "lora_B" in key else None
            if rank_axis is not None and (len(shape) < 2 or shape[rank_axis] != cfg.r):
                raise BundleError(f"{weights}: tensor '{key}' has shape {shape}, not rank {cfg.r}; re-export")
