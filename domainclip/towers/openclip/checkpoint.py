"""Find and read an open_clip checkpoint without open_clip: its model config, preprocessing config
and weights, from a directory, a Hugging Face hub cache snapshot (offline) or a model name plus a
weight file, as ``open_clip.create_model_and_transforms`` would find them."""
from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from domainclip.core.errors import ConfigError
from domainclip.core.fileio import load_safetensors

log = logging.getLogger(__name__)

CONFIG_FILE = "open_clip_config.json"
WEIGHT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.bin")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
HUB_ID = re.compile(r"^(hf-hub:)?[A-Za-z0-9][\w.-]*/[\w.-]+$")
# open_clip model names whose ViT heads are not 64 wide (open_clip's model_configs/*.json)
HEAD_WIDTHS = {"ViT-H": 80, "ViT-g": 88, "ViT-bigG": 104}
# text tower keys of open_clip's CLIP class, stored at the top level (CustomTextCLIP nests them in "text.")
FLAT_TEXT_KEYS = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")


@dataclass
class Checkpoint:
    """An open_clip model config (``model_cfg``), its preprocessing and the weights, keyed as in
    open_clip's ``CustomTextCLIP`` (``visual.*``, ``text.*``, ``logit_scale``...)."""

    model_cfg: dict
    preprocess_cfg: dict
    weights: list[Path]
    directory: Path | None
    state: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)


def hub_snapshot(name: str) -> Path | None:
    """The local hub cache snapshot of ``name`` (``org/repo`` or ``hf-hub:org/repo``), or None."""
    if not HUB_ID.match(name) or ".." in name:
        return None
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=name.removeprefix("hf-hub:"), local_files_only=True))
    except Exception:  # noqa: BLE001 - not in the local cache
        return None


def resolve_source(path: str | None) -> Path:
    """``tower.path`` as a local directory or weight file (a hub id resolves to its cached snapshot)."""
    if not path:
        raise ConfigError("tower.path is required for tower=open_clip: a directory holding open_clip_config.json "
                          "and weights, a weight file (with tower.model), or a hub id in the local cache")
    local = Path(str(path)).expanduser()
    if local.exists():
        return local
    if not HUB_ID.match(str(path)):
        raise ConfigError(f"tower.path={path}: no such directory or file; point it at the open_clip checkpoint directory")
    snapshot = hub_snapshot(str(path))
    if snapshot is None:
        raise ConfigError(f"tower.path={path}: no such directory or file, and not in the Hugging Face hub cache; "
                          f"download it once (huggingface-cli download {str(path).removeprefix('hf-hub:')}) "
                          "or pass the directory")
    return snapshot


def weight_files(source: Path) -> list[Path]:
    """The weight file a source names: the file itself, or open_clip's file in the directory."""
    if source.is_file():
        return [source]
    for name in WEIGHT_NAMES:
        if (source / name).is_file():
            return [source / name]
    found = sorted(p for p in source.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    if len(found) != 1:
        raise ConfigError(f"tower.path={source}: expected one of {list(WEIGHT_NAMES)} (found {[p.name for p in found]})")
    return found


def read_checkpoint(path: str | None, model: str | None = None) -> Checkpoint:
    """Locate the config and weights (nothing is built yet) and read the weights."""
    source = resolve_source(path)
    directory = source if source.is_dir() else None
    files = weight_files(source)
    state = normalise_keys(read_weights(files[0]))
    if directory is not None and (directory / CONFIG_FILE).is_file():
        model_cfg, pre = _config_file(directory / CONFIG_FILE)
    elif model:
        model_cfg, pre = infer_clip_config(state, str(model)), {}
    else:
        raise ConfigError(f"tower.path={path}: no {CONFIG_FILE} beside the weights; set tower.model to the open_clip "
                          "model name the checkpoint was trained as (e.g. ViT-B-32, ViT-B-16-quickgelu)")
    return Checkpoint(model_cfg, pre, files, directory, state)


def _config_file(path: Path) -> tuple[dict, dict]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not readable JSON ({exc}); re-download the checkpoint") from None
    if not isinstance(data, dict) or not isinstance(data.get("model_cfg"), dict):
        raise ConfigError(f"{path}: no 'model_cfg' object; this is not an open_clip config")
    return data["model_cfg"], dict(data.get("preprocess_cfg") or {})


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file, or of a pickled checkpoint read with ``weights_only=True``
    (no code in a checkpoint runs); ``state_dict`` nesting and DDP's ``module.`` prefix removed."""
    if path.suffix == ".safetensors":
        state = load_safetensors(path)
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - pickle refused, TorchScript archive, damaged file
            raise ConfigError(f"{path}: not readable with torch.load(weights_only=True) ({type(exc).__name__}); "
                              "save its state_dict (or convert it to safetensors) and point at that") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{path}: not a state dict of tensors")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def normalise_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """open_clip's ``CLIP`` keeps its text tower at the top level; nest it under ``text.`` as
    ``CustomTextCLIP`` (and CoCa) do, so one set of converters reads both."""
    if "positional_embedding" not in state:
        return dict(state)
    return {("text." + k if k.startswith(FLAT_TEXT_KEYS) else k): v for k, v in state.items()}


def head_width(model: str) -> int:
    """Width of one attention head of a named open_clip ViT (64 unless the name says otherwise)."""
    return next((w for prefix, w in HEAD_WIDTHS.items() if model.startswith(prefix + "-")), 64)


def infer_clip_config(state: dict[str, torch.Tensor], model: str) -> dict:
    """An OpenAI-style ViT + text transformer config read off the weight shapes (as open_clip's
    ``build_model_from_openai_state_dict`` does), with QuickGELU when the name ends ``-quickgelu``."""
    if "visual.proj" not in state or "text.token_embedding.weight" not in state:
        raise ConfigError(f"tower.model={model}: the weights are not an OpenAI-style ViT CLIP; give the directory with "
                          f"its {CONFIG_FILE} instead")
    width = state["visual.conv1.weight"].shape[0]
    patch = state["visual.conv1.weight"].shape[-1]
    grid = round(math.sqrt(state["visual.positional_embedding"].shape[0] - 1))
    layers = len({k.split(".")[3] for k in state if k.startswith("visual.transformer.resblocks.")})
    text_width = state["text.ln_final.weight"].shape[0]
    text_layers = len({k.split(".")[3] for k in state if k.startswith("text.transformer.resblocks.")})
    vision = {"image_size": grid * patch, "patch_size": patch, "width": width, "layers": layers,
              "head_width": head_width(model)}
    text = {"context_length": state["text.positional_embedding"].shape[0],
            "vocab_size": state["text.token_embedding.weight"].shape[0], "width": text_width,
            "heads": text_width // 64, "layers": text_layers}
    return {"embed_dim": state["visual.proj"].shape[1], "quick_gelu": model.endswith("-quickgelu"),
            "vision_cfg": vision, "text_cfg": text}


def denormalise_keys(state: dict[str, torch.Tensor], flat_text: bool) -> dict[str, torch.Tensor]:
    """``normalise_keys`` undone: the text tower back at the top level for open_clip's ``CLIP``."""
    if not flat_text:
        return dict(state)
    return {(k[len("text."):] if k.startswith("text.") and k[len("text."):].startswith(FLAT_TEXT_KEYS) else k): v
            for k, v in state.items()}


def write_checkpoint(directory: Path, model_cfg: dict, preprocess_cfg: dict, state: dict[str, torch.Tensor]) -> list[Path]:
    """Save in open_clip's format: ``open_clip_config.json`` + ``open_clip_model.safetensors``."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    config = directory / CONFIG_FILE
    config.write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}, indent=2))
    weights = directory / WEIGHT_NAMES[0]
    save_file({k: v.contiguous() for k, v in state.items()}, str(weights))
    return [config, weights]
