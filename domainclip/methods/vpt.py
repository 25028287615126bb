"""VPT (shallow): learnable visual prompt tokens inserted after the CLS token of a ViT tower."""
from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from domainclip.methods.base import METHODS, Method, freeze

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


@METHODS.register("vpt")
class VPT(Method):
    """Visual prompt tuning: only the prompt tokens (and heads, for LiT towers) train; the
    classifier is the template prompt ensemble, trained with cross-entropy."""

    name = "vpt"
    objective = "classification"
    export_files = (VPT_FILE,)

    def __init__(self, n_tokens: int = 8, **kwargs):
        super().__init__(**kwargs)
        self.n_tokens = int(n_tokens)

    @property
    def image_backbone_frozen(self) -> bool:
        return False  # prompts change the backbone's output

    def prepare(self, tower, class_names) -> None:
        super().prepare(tower, class_names)
        embeddings, hidden = tower.vision_embeddings()
        tower.visual_prompts = VisualPrompts(embeddings, hidden, self.n_tokens)

    def export(self, tower, out_dir: Path) -> None:
        save_file({"tokens": tower.visual_prompts.tokens.detach().contiguous()}, str(Path(out_dir) / VPT_FILE),
                  metadata={"format": "pt"})

    def load(self, tower, bundle_dir: Path, class_names) -> None:
        self.prepare(tower, class_names)
        tower.visual_prompts.load_state_dict(load_file(str(Path(bundle_dir) / VPT_FILE)))
        freeze(tower)
