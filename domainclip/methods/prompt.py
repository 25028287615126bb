"""Prompt learning on the text tower: CoOp (unified or class-specific context) and CoCoOp
(context shifted by a meta-network of the image embedding).

Prompts are ``"X X ... X <class name>."``; a forward hook on the text tower's token-embedding
layer replaces the placeholder embeddings with learnable context vectors, so any transformers
text encoder works unchanged.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from domainclip.core.fileio import load_safetensors as load_file
from domainclip.methods.base import METHODS, Method, PromptSet

PLACEHOLDER = "X"
PROMPT_FILE = "prompt_learner.safetensors"


class PromptLearner(nn.Module):
    """Context vectors (1 or K, n_ctx, D) and, for CoCoOp, a meta-network image -> context shift."""

    def __init__(self, tower, class_names: list[str], n_ctx: int, class_specific: bool, meta_dim: int | None):
        super().__init__()
        emb = tower.token_embedding()
        dim = emb.embedding_dim
        texts = [" ".join([PLACEHOLDER] * n_ctx) + f" {name.replace('_', ' ')}." for name in class_names]
        tok = tower.tokenize(texts)
        ph = tower.tokenizer.convert_tokens_to_ids(tower.tokenizer.tokenize(PLACEHOLDER)[0])
        positions = [torch.nonzero(row == ph)[:n_ctx, 0] for row in tok["input_ids"]]
        if any(len(p) != n_ctx for p in positions):
            raise ValueError("the tokenizer split the context placeholders; cannot place the context vectors")
        self.register_buffer("input_ids", tok["input_ids"], persistent=False)
        self.register_buffer("attention_mask", tok["attention_mask"], persistent=False)
        self.register_buffer("positions", torch.stack(positions), persistent=False)
        self.ctx = nn.Parameter(torch.randn(len(class_names) if class_specific else 1, n_ctx, dim) * 0.02)
        self.meta_net = nn.Sequential(nn.Linear(meta_dim, max(meta_dim // 16, 4)), nn.ReLU(),
                                      nn.Linear(max(meta_dim // 16, 4), dim)) if meta_dim else None
        self._splice = None
        emb.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        if self._splice is None:
            return output
        positions, vectors = self._splice
        out = output.clone()
        out[torch.arange(out.shape[0], device=out.device)[:, None], positions] = vectors.to(out.dtype)
        return out

    def encode(self, tower, image_emb: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised class embeddings: (K, D), or (B, K, D) with an image-conditioned shift."""
        k = self.input_ids.shape[0]
        ctx = self.ctx.expand(k, -1, -1)
        ids, mask, pos = self.input_ids, self.attention_mask, self.positions
        batch = None
        if self.meta_net is not None and image_emb is not None:
            batch = image_emb.shape[0]
            shift = self.meta_net(image_emb)[:, None, None, :]  # (B, 1, 1, D)
            ctx = (ctx[None] + shift).reshape(batch * k, *ctx.shape[1:])
            ids, mask, pos = ids.repeat(batch, 1), mask.repeat(batch, 1), pos.repeat(batch, 1)
        self._splice = (pos, ctx)
        try:
            emb = F.normalize(tower.encode_text(ids, mask), dim=-1)
        finally:
            self._splice = None
        return emb if batch is None else emb.reshape(batch, k, -1)


@METHODS.register("coop")
class CoOp(Method):
    """CoOp: learn ``n_ctx`` context vectors (shared or per class); everything else frozen."""

    name = "coop"
    objective = "classification"
    export_files = (PROMPT_FILE,)
    conditional = False

    def __init__(self, n_ctx: int = 4, class_specific: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.n_ctx, self.class_specific = int(n_ctx), bool(class_specific)

    @property
    def static_classes(self) -> bool:
        return not self.conditional

    def prepare(self, model) -> dict[str, nn.Module]:
        super().prepare(model)
        meta_dim = model.tower.embed_dim if self.conditional else None
        return {"prompt_learner": PromptLearner(model.tower, model.class_names, self.n_ctx, self.class_specific,
                                                meta_dim)}

    def class_embeddings(self, model, prompts: PromptSet, image_emb=None):
        return model.adapters["prompt_learner"].encode(model.tower, image_emb if self.conditional else None)

    def save(self, model, folder: Path) -> None:
        state = {k: v.detach().contiguous() for k, v in model.adapters["prompt_learner"].state_dict().items()}
        save_file(state, str(Path(folder) / PROMPT_FILE), metadata={"format": "pt"})

    def restore(self, model, folder: Path) -> dict[str, nn.Module]:
        modules = self.prepare(model)
        modules["prompt_learner"].load_state_dict(load_file(str(Path(folder) / PROMPT_FILE)))
        return modules


@METHODS.register("cocoop")
class CoCoOp(CoOp):
    """CoCoOp: CoOp whose context is shifted per image by a small meta-network."""

    name = "cocoop"
    conditional = True
