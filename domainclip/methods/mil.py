"""Multiple-instance learning for slide-level labels: a slide is a bag of tile embeddings, pooled
by a named aggregator (``method=mil mil.pool=NAME``):

- ``mean`` / ``topk``: zero-shot slide scores from the class prompts with no training (MI-Zero,
  Lu et al., "Visual language pretrained multiple instance zero-shot transfer for histopathology
  images", CVPR 2023): each tile's prompt logits, averaged over all tiles or over the ``topk``
  best tiles per class;
- ``abmil``: gated attention (Ilse, Tomczak & Welling, "Attention-based deep multiple instance
  learning", ICML 2018) over the tile embeddings, whose classifier starts as the class text
  embeddings and whose attention starts uniform, so that before any step it scores exactly as
  ``mean`` zero-shot does; training improves on that;
- ``tile_label``: the baseline where every tile inherits its slide's label (a tile classifier,
  also started from the text embeddings), slides scored by the mean of their tiles' logits.

Training draws at most ``max_tiles`` tiles per slide and step (a seeded random subset).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from domainclip.core.errors import ConfigError
from domainclip.core.fileio import load_safetensors
from domainclip.data.bags import TILE_MASK
from domainclip.methods.base import METHODS, Method, PromptSet, scaled_similarity, uniform_weights, weighted_sum

MIL_FILE = "mil.safetensors"
POOLS = ("mean", "topk", "abmil", "tile_label")
TRAINED_POOLS = ("abmil", "tile_label")


class GatedAttention(nn.Module):
    """Ilse et al.'s gated attention: ``a_i = softmax_i(w^T (tanh(V h_i) * sigmoid(U h_i)))``.
    ``w`` starts at zero, so the first attention is uniform."""

    def __init__(self, dim: int, hidden: int = 128, dropout: float = 0.0):
        super().__init__()
        self.V, self.U = nn.Linear(dim, hidden), nn.Linear(dim, hidden)
        self.w = nn.Linear(hidden, 1)
        self.dropout = nn.Dropout(dropout)
        nn.init.zeros_(self.w.weight)
        nn.init.zeros_(self.w.bias)

    def forward(self, tiles: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, N, D) tile embeddings, (B, N) valid tiles -> (B, N) attention summing to 1 per bag."""
        gate = torch.tanh(self.V(tiles)) * torch.sigmoid(self.U(tiles))
        scores = self.w(self.dropout(gate)).squeeze(-1).float()
        return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=1).nan_to_num(0.0)


class TextInitClassifier(nn.Module):
    """A linear classifier over normalised embeddings whose weights start as the class text
    embeddings: ``logit_scale * emb @ W^T + logit_bias`` equals zero-shot scoring at the start."""

    def __init__(self, class_emb: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(class_emb.detach().clone().float())

    def forward(self, tower, emb: torch.Tensor) -> torch.Tensor:
        return scaled_similarity(tower, emb, self.weight.to(emb.dtype))


@METHODS.register("mil")
class MIL(Method):
    """Slide-level scoring of bags of tile features; see the module docstring for the pools."""

    name = "mil"
    objective = "classification"
    export_files = (MIL_FILE,)

    def __init__(self, pool: str = "abmil", topk: int = 5, max_tiles: int = 512, hidden: int = 128,
                 dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if pool not in POOLS:
            raise ConfigError(f"method.pool={pool!r} is not allowed: expected one of {', '.join(POOLS)}")
        self.pool, self.topk, self.max_tiles = pool, int(topk), int(max_tiles)
        self.hidden, self.dropout = int(hidden), float(dropout)
        self.training = "gradient" if pool in TRAINED_POOLS else "none"

    def prepare(self, model) -> dict[str, nn.Module]:
        modules = super().prepare(model)
        if self.pool not in TRAINED_POOLS:
            return modules
        with torch.no_grad():
            class_emb = super().class_embeddings(model, model.prompt_set())
        modules["classifier"] = TextInitClassifier(class_emb)
        if self.pool == "abmil":
            modules["attention"] = GatedAttention(class_emb.shape[-1], self.hidden, self.dropout)
        return modules

    def class_embeddings(self, model, prompts: PromptSet, image_emb=None) -> torch.Tensor:
        if "classifier" in model.adapters:
            return F.normalize(model.adapters["classifier"].weight, dim=-1)
        return super().class_embeddings(model, prompts, image_emb)

    def _tile_logits(self, model, tiles: torch.Tensor, prompts: PromptSet, class_emb) -> torch.Tensor:
        """(B, N, K) logits of each tile embedding: the trained classifier, else the prompts."""
        if "classifier" in model.adapters:
            return model.adapters["classifier"](model.tower, tiles)
        cls = class_emb if class_emb is not None else super().class_embeddings(model, prompts)
        return scaled_similarity(model.tower, tiles, cls)

    def bag_outputs(self, model, batch: dict, prompts: PromptSet, class_emb=None):
        """Slide logits (B, K) and each tile's weight (B, N): the attention for ``abmil``, the
        uniform mean for ``mean`` and ``tile_label``, and for ``topk`` the share of the top tiles
        of the predicted class."""
        if TILE_MASK not in batch:
            raise ConfigError("method=mil scores whole slides: set label_level: slide in the data card")
        batch = self.sample_tiles(batch, model.training)
        mask, tiles = batch[TILE_MASK], model.embed_images(batch)
        if self.pool == "abmil":
            attention = model.adapters["attention"](tiles, mask)
            return model.adapters["classifier"](model.tower, weighted_sum(attention, tiles)), attention
        tile_logits = self._tile_logits(model, tiles, prompts, class_emb)
        if self.pool == "topk":
            return topk_pool(tile_logits, mask, self.topk)
        weights = uniform_weights(mask)
        return weighted_sum(weights, tile_logits), weights

    def logits(self, model, batch, prompts, class_emb=None):
        return self.bag_outputs(model, batch, prompts, class_emb)[0]

    def location_logits(self, model, features, prompts, class_emb=None):
        """Each location scored as a slide of that one tile: the trained classifier (a one-tile
        bag's attention or mean is the tile itself), else the prompts."""
        if "classifier" not in model.adapters:
            return super().location_logits(model, features, prompts, class_emb)
        emb = F.normalize(model.tower.image_head(features), dim=-1)
        return model.adapters["classifier"](model.tower, emb).permute(0, 3, 1, 2)

    def classification_inputs(self, model, batch: dict, prompts: PromptSet) -> tuple:
        """``tile_label`` trains each tile on its slide's label; the others train the slide logits."""
        if self.pool != "tile_label":
            return super().classification_inputs(model, batch, prompts)
        batch = self.sample_tiles(batch, model.training)
        mask = batch[TILE_MASK]
        if "valid" in batch:
            mask = mask & batch["valid"][:, None]
        tile_logits = self._tile_logits(model, model.embed_images(batch), prompts, None)
        labels = batch["label"][:, None].expand(*mask.shape[:2], *batch["label"].shape[1:])
        return tile_logits.flatten(0, 1), labels.flatten(0, 1), mask.flatten()

    def sample_tiles(self, batch: dict, training: bool) -> dict:
        """In training, at most ``max_tiles`` valid tiles per slide (a random subset drawn from
        the seeded global generator); otherwise the batch as it is."""
        mask = batch[TILE_MASK]
        if not training or mask.shape[1] <= self.max_tiles:
            return batch
        keys = torch.rand(mask.shape, device=mask.device).masked_fill(~mask, 2.0)
        keep = keys.argsort(dim=1)[:, : self.max_tiles]
        out = dict(batch)
        out["features"] = batch["features"].gather(1, keep[..., None].expand(-1, -1, batch["features"].shape[-1]))
        out[TILE_MASK] = mask.gather(1, keep)
        if "coords" in batch:
            out["coords"] = batch["coords"].gather(1, keep[..., None].expand(-1, -1, 2))
        return out

    def save(self, model, folder: Path) -> None:
        state = {f"{name}.{k}": v.detach().cpu().contiguous() for name in ("classifier", "attention")
                 if name in model.adapters for k, v in model.adapters[name].state_dict().items()}
        save_file(state or {"empty": torch.zeros(0)}, str(Path(folder) / MIL_FILE), metadata={"format": "pt"})

    def restore(self, model, folder: Path) -> dict[str, nn.Module]:
        modules = self.prepare(model)
        state = load_safetensors(Path(folder) / MIL_FILE)
        for name, module in modules.items():
            module.load_state_dict({k.split(".", 1)[1]: v for k, v in state.items() if k.startswith(name + ".")})
        return modules


def topk_pool(tile_logits: torch.Tensor, mask: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """MI-Zero's top-k pooling: per class, the mean of the ``k`` highest tile logits among the
    valid tiles (fewer when the slide has fewer); tile weights are each tile's share of the top
    tiles of the predicted class."""
    masked = tile_logits.float().masked_fill(~mask[..., None], float("-inf"))
    k = max(1, min(k, masked.shape[1]))
    top, idx = masked.topk(k, dim=1)  # (B, k, K)
    counts = mask.sum(1).clamp(min=1, max=k)  # (B,)
    keep = torch.arange(k, device=mask.device)[None, :] < counts[:, None]  # (B, k)
    logits = (top.nan_to_num(0.0, neginf=0.0) * keep[..., None]).sum(1) / counts[:, None]
    pred = logits.argmax(-1)
    picked = idx.gather(2, pred[:, None, None].expand(-1, k, 1)).squeeze(-1)  # (B, k) tile index
    weights = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    weights.scatter_add_(1, picked, keep.float() / counts[:, None].float())
    return logits.to(tile_logits.dtype), weights
