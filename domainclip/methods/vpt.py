"""Visual prompt tuning. ViT towers: VPT-shallow, learnable tokens inserted after the CLS token.
Other image encoders (the EfficientNet default): learnable pixel-space padding prompts added to
the input border (Bahng et al. 2022, "Exploring Visual Prompts for Adapting Large-Scale Models")."""
from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from domainclip.core.errors import ConfigError
from domainclip.core.fileio import load_safetensors as load_file
from domainclip.methods.base import METHODS, Method

VPT_FILE = "visual_prompts.safetensors"


class VisualPrompts(nn.Module):
    """``n_tokens`` prompt vectors spliced into the patch-embedding output by a forward hook."""

    def __init__(self, embeddings: nn.Module, hidden: int, n_tokens: int):
        super().__init__()
        bound = math.sqrt(6.0 / (hidden + n_tokens))
        self.tokens = nn.Parameter(torch.empty(n_tokens, hidden).uniform_(-bound, bound))
        embeddings.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        prompts = self.tokens.to(output.dtype).expand(output.shape[0], -1, -1)
        return torch.cat([output[:, :1], prompts, output[:, 1:]], dim=1)


class PaddingPrompts(nn.Module):
    """A learnable border of ``pad`` pixels added to every input image by a forward pre-hook."""

    def __init__(self, encoder: nn.Module, size: int, pad: int, channels: int = 3):
        super().__init__()
        self.tokens = nn.Parameter(torch.zeros(channels, size, size))
        mask = torch.ones(1, size, size)
        mask[:, pad : size - pad, pad : size - pad] = 0
        self.register_buffer("mask", mask, persistent=False)
        encoder.register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        pixels = args[0]
        return (pixels + (self.tokens * self.mask).to(pixels.dtype),) + tuple(args[1:])


@METHODS.register("vpt")
class VPT(Method):
    """Visual prompt tuning: only the prompt tokens (and heads, for LiT towers) train; the
    classifier is the template prompt ensemble, trained with cross-entropy."""

    name = "vpt"
    objective = "classification"
    export_files = (VPT_FILE,)

    def __init__(self, n_tokens: int = 8, pad: int = 16, **kwargs):
        super().__init__(**kwargs)
        self.n_tokens, self.pad = int(n_tokens), int(pad)

    @property
    def image_backbone_frozen(self) -> bool:
        return False  # prompts change the backbone's output

    def prepare(self, model) -> dict[str, nn.Module]:
        super().prepare(model)
        tower = model.tower
        try:
            embeddings, hidden = tower.vision_embeddings()
            return {"visual_prompts": VisualPrompts(embeddings, hidden, self.n_tokens)}
        except ConfigError:  # not a ViT: pixel-space padding prompts instead
            return {"visual_prompts": PaddingPrompts(tower.image_encoder, tower.preprocess.size, self.pad)}

    def save(self, model, folder: Path) -> None:
        save_file({"tokens": model.adapters["visual_prompts"].tokens.detach().contiguous()},
                  str(Path(folder) / VPT_FILE), metadata={"format": "pt"})

    def restore(self, model, folder: Path) -> dict[str, nn.Module]:
        modules = self.prepare(model)
        modules["visual_prompts"].load_state_dict(load_file(str(Path(folder) / VPT_FILE)))
        return modules
