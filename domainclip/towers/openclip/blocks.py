"""Weight maps shared by the open_clip converters: open_clip's residual attention blocks (fused
``in_proj`` of ``nn.MultiheadAttention``) into transformers' CLIP encoder layers (separate q, k, v
projections, which peft's LoRA can target one by one), and the family record they produce."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from domainclip.core.errors import ConfigError

SUPPORTED = ("VisionTransformer + TextTransformer (OpenAI-style CLIP: RemoteCLIP, GeoRSCLIP, QuiltNet, OpenAI)",
             "timm ViT + Hugging Face text model (BiomedCLIP, UniMed-CLIP)",
             "CoCa, contrastive path (attentional pooler, embed_cls)")


@dataclass
class Part:
    """One converted side: a transformers model, its projection into the shared space, the
    family that says how to pool it, and LoRA target names inside ``net``."""

    family: str
    net: nn.Module
    head: nn.Module
    lora_targets: list[str]
    pool: nn.Module | None = None
    options: dict = field(default_factory=dict)


def refuse(what: str) -> ConfigError:
    """The one-line refusal of an architecture the converter does not know."""
    return ConfigError(f"open_clip checkpoint: {what} is not supported; the native loader knows: "
                       + "; ".join(SUPPORTED))


def take(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors under ``prefix``, with the prefix removed."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def count_blocks(state: dict[str, torch.Tensor], prefix: str) -> int:
    """How many numbered blocks ``prefix.N.`` the weights hold."""
    return len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)})


def split_in_proj(weight: torch.Tensor, bias: torch.Tensor | None, names: tuple[str, str, str], dst: str) -> dict:
    """A fused (3D, D) ``in_proj`` as three (D, D) projections named ``dst + name``."""
    out = {}
    for name, w in zip(names, weight.chunk(3, dim=0)):
        out[f"{dst}{name}.weight"] = w
    if bias is not None:
        for name, b in zip(names, bias.chunk(3, dim=0)):
            out[f"{dst}{name}.bias"] = b
    return out


def resblocks_to_clip(src: dict[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    """open_clip ``transformer.resblocks.N`` -> transformers ``encoder.layers.N`` (CLIPEncoderLayer)."""
    out = {}
    for i in range(layers):
        s, d = f"transformer.resblocks.{i}.", f"encoder.layers.{i}."
        extra = [k for k in src if k.startswith(s) and not k.startswith(
            tuple(s + p for p in ("ln_1.", "ln_2.", "attn.in_proj_", "attn.out_proj.", "mlp.c_fc.", "mlp.c_proj.")))]
        if extra:
            raise refuse(f"a residual block with {extra[0][len(s):]} (layer scale, custom attention)")
        out.update(split_in_proj(src[s + "attn.in_proj_weight"], src.get(s + "attn.in_proj_bias"),
                                 ("q_proj", "k_proj", "v_proj"), d + "self_attn."))
        for a, b in (("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"), ("attn.out_proj", "self_attn.out_proj"),
                     ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):
            out[f"{d}{b}.weight"], out[f"{d}{b}.bias"] = src[f"{s}{a}.weight"], src[f"{s}{a}.bias"]
    return out


def load_exactly(net: nn.Module, mapped: dict[str, torch.Tensor], what: str) -> None:
    """Load every tensor of ``net`` from ``mapped``; any missing or left-over name is an error."""
    missing, unexpected = net.load_state_dict(mapped, strict=False)
    if missing or unexpected:
        raise refuse(f"{what} weights that do not map (missing {missing[:3]}, left over {unexpected[:3]})")


def linear_from(weight_t: torch.Tensor, bias: torch.Tensor | None = None) -> nn.Linear:
    """An ``nn.Linear`` computing ``x @ weight_t (+ bias)`` (open_clip stores projections as (in, out))."""
    layer = nn.Linear(weight_t.shape[0], weight_t.shape[1], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight_t.T)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


def activation(quick_gelu: bool) -> str:
    """transformers' name of open_clip's activation: QuickGELU for OpenAI-trained towers, else GELU."""
    return "quick_gelu" if quick_gelu else "gelu"
