"""Weight maps shared by the open_clip converters: open_clip's residual attention blocks (fused
``in_proj`` of ``nn.MultiheadAttention``) into transformers' CLIP encoder layers (separate q, k, v
projections, which peft's LoRA can target one by one). Every converted tensor remembers where in
the checkpoint it came from, so a merged model can be written back in open_clip's layout."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from domainclip.core.errors import ConfigError

SUPPORTED = ("VisionTransformer + TextTransformer (OpenAI-style CLIP: RemoteCLIP, GeoRSCLIP, QuiltNet, OpenAI)",
             "timm ViT + Hugging Face text model (BiomedCLIP, UniMed-CLIP)",
             "CoCa, contrastive path (attentional pooler, embed_cls)")
# how a converted tensor sits in its checkpoint tensor: as is, transposed, one third of a fused
# q/k/v projection (rows), or a row range
Origin = tuple  # (checkpoint key, "same" | "T" | ("third", i) | ("rows", start, stop) | ("last_row", key))


@dataclass
class Part:
    """One converted side: a transformers model, its projection into the shared space, the
    family that says how to pool it, LoRA target names inside ``net`` and the origin of every
    tensor (by name under the converted model: ``net.``, ``head.``, ``pool.``)."""

    family: str
    net: nn.Module
    head: nn.Module
    lora_targets: list[str]
    origins: dict[str, Origin]
    pool: nn.Module | None = None
    options: dict = field(default_factory=dict)


def refuse(what: str) -> ConfigError:
    """The one-line refusal of an architecture the converter does not know."""
    return ConfigError(f"open_clip checkpoint: {what} is not supported; the native loader knows: "
                       + "; ".join(SUPPORTED))


class WeightMap:
    """Converted tensors by destination name, read from the checkpoint under ``prefix``, each with
    its ``Origin``."""

    def __init__(self, state: dict[str, torch.Tensor], prefix: str):
        self.state, self.prefix = state, prefix
        self.tensors: dict[str, torch.Tensor] = {}
        self.origins: dict[str, Origin] = {}

    def __contains__(self, key: str) -> bool:
        return self.prefix + key in self.state

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.state[self.prefix + key]

    def keys(self) -> list[str]:
        """Checkpoint keys under the prefix, without it."""
        return [k[len(self.prefix):] for k in self.state if k.startswith(self.prefix)]

    def copy(self, dst: str, key: str) -> None:
        self.tensors[dst], self.origins[dst] = self[key], (self.prefix + key, "same")

    def pair(self, dst: str, key: str) -> None:
        """``weight`` and ``bias`` of one layer."""
        for p in ("weight", "bias"):
            self.copy(f"{dst}.{p}", f"{key}.{p}")

    def thirds(self, key: str, dsts: tuple[str, str, str]) -> None:
        """A fused (3D, ...) q/k/v tensor as three (D, ...) tensors."""
        for i, (dst, chunk) in enumerate(zip(dsts, self[key].chunk(3, dim=0))):
            self.tensors[dst], self.origins[dst] = chunk, (self.prefix + key, ("third", i))

    def rows(self, dst: str, key: str, start: int, stop: int) -> None:
        self.tensors[dst], self.origins[dst] = self[key][start:stop], (self.prefix + key, ("rows", start, stop))

    def fixed(self, dst: str, tensor: torch.Tensor) -> None:
        """A tensor with no checkpoint origin (a module the converted model never uses)."""
        self.tensors[dst] = tensor

    def load(self, net: nn.Module, what: str, under: str) -> dict[str, Origin]:
        """Load every tensor of ``net``; any missing or left-over name is an error. Returns the
        origins named under ``under`` (``net.``, ``pool.``...)."""
        missing, unexpected = net.load_state_dict(self.tensors, strict=False)
        if missing or unexpected:
            raise refuse(f"{what} weights that do not map (missing {missing[:3]}, left over {unexpected[:3]})")
        return {under + k: v for k, v in self.origins.items()}


def count_blocks(keys: list[str], prefix: str) -> int:
    """How many numbered blocks ``prefix.N.`` the keys hold."""
    return len({k[len(prefix):].split(".")[0] for k in keys if k.startswith(prefix)})


def resblocks_to_clip(wm: WeightMap, layers: int) -> None:
    """open_clip ``transformer.resblocks.N`` -> transformers ``encoder.layers.N`` (CLIPEncoderLayer)."""
    keys = wm.keys()
    for i in range(layers):
        s, d = f"transformer.resblocks.{i}.", f"encoder.layers.{i}."
        extra = [k for k in keys if k.startswith(s) and not k.startswith(
            tuple(s + p for p in ("ln_1.", "ln_2.", "attn.in_proj_", "attn.out_proj.", "mlp.c_fc.", "mlp.c_proj.")))]
        if extra:
            raise refuse(f"a residual block with {extra[0][len(s):]} (layer scale, custom attention)")
        for p in ("weight", "bias"):
            wm.thirds(f"{s}attn.in_proj_{p}", tuple(f"{d}self_attn.{n}.{p}" for n in ("q_proj", "k_proj", "v_proj")))
        for a, b in (("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"), ("attn.out_proj", "self_attn.out_proj"),
                     ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):
            wm.pair(d + b, s + a)


def linear_from(wm: WeightMap, weight: str, bias: str | None = None, transposed: bool = True,
                under: str = "") -> tuple[nn.Linear, dict[str, Origin]]:
    """An ``nn.Linear`` from checkpoint tensors (open_clip stores projection parameters as
    (in, out): ``transposed``) and the origins of its weight and bias."""
    w = wm[weight].T if transposed else wm[weight]
    has_bias = bias is not None and bias in wm
    layer = nn.Linear(w.shape[1], w.shape[0], bias=has_bias)
    origins = {under + "weight": (wm.prefix + weight, "T" if transposed else "same")}
    with torch.no_grad():
        layer.weight.copy_(w)
        if has_bias:
            layer.bias.copy_(wm[bias])
            origins[under + "bias"] = (wm.prefix + bias, "same")
    return layer, origins


def activation(quick_gelu: bool) -> str:
    """transformers' name of open_clip's activation: QuickGELU for OpenAI-trained towers, else GELU."""
    return "quick_gelu" if quick_gelu else "gelu"


def write_back(state: dict[str, torch.Tensor], origins: dict[str, Origin], tensors: dict[str, torch.Tensor]) -> None:
    """Put converted ``tensors`` (by converted name) back into checkpoint ``state`` in place."""
    for name, tensor in tensors.items():
        if name not in origins:
            continue
        key, how = origins[name]
        tensor = tensor.detach().to(state[key].dtype)
        if how == "same":
            state[key] = tensor.clone()
        elif how == "T":
            state[key] = tensor.T.contiguous()
        elif how[0] == "last_row":  # all rows but the last, which is another tensor (CoCa's class token)
            state[key], state[how[1]] = tensor[:-1].clone(), tensor[-1].clone()
        else:
            fused = state[key].clone()
            start, stop = (how[1] * len(tensor), (how[1] + 1) * len(tensor)) if how[0] == "third" else how[1:]
            fused[start:stop] = tensor
            state[key] = fused
