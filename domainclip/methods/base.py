"""The Method contract: which parameters train, the modules it adds, how it scores classes, how
the pipeline trains it, and what gets exported."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from domainclip.core.registry import Registry
from domainclip.data.bags import TILE_MASK
from domainclip.towers.base import Tower

METHODS: Registry = Registry("method")


def freeze(module: nn.Module) -> None:
    """Turn off gradients for every parameter of ``module``."""
    for p in module.parameters():
        p.requires_grad_(False)


@dataclass
class PromptSet:
    """Tokenised template prompts (the zero-shot ensemble) with their class of each row."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def ensemble(emb: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean of normalised prompt embeddings per class, re-normalised: (K, D)."""
    emb = F.normalize(emb, dim=-1)
    out = torch.zeros(num_classes, emb.shape[-1], dtype=emb.dtype, device=emb.device)
    return F.normalize(out.index_add_(0, labels.to(emb.device), emb), dim=-1)


def scaled_similarity(tower: Tower, image_emb: torch.Tensor, class_emb: torch.Tensor) -> torch.Tensor:
    """The one scoring formula: ``logit_scale * cos(image, class) + logit_bias``; ``class_emb`` is
    (K, D), or (B, K, D) when the classes are conditioned on each image."""
    sims = image_emb @ class_emb.t() if class_emb.ndim == 2 else torch.einsum("bd,bkd->bk", image_emb, class_emb)
    return scaled(tower, sims)


def scaled(tower: Tower, sims: torch.Tensor) -> torch.Tensor:
    """Cosine similarities as logits: ``logit_scale * sims + logit_bias`` (a scalar bias, SigLIP's)."""
    return tower.logit_scale * sims + (tower.logit_bias if tower.logit_bias is not None else 0.0)


def uniform_weights(mask: torch.Tensor) -> torch.Tensor:
    """(B, N) weights of a mean over each bag's valid tiles (``mask`` (B, N))."""
    return mask.float() / mask.sum(1, keepdim=True).clamp(min=1)


def weighted_sum(weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Per bag, the tiles' values (B, N, ...) summed with ``weights`` (B, N) -> (B, ...)."""
    return torch.einsum("bn,bn...->b...", weights.to(values.dtype), values)


class Method:
    """A pure adapter: which parameters train, the modules it adds, how it scores classes and the
    files it exports. It never drives a trainer, reads data or sets attributes on the tower.

    ``training`` names how the pipeline trains it: ``gradient`` (Lightning steps with the
    ``objective`` loss: ``contrastive`` image-caption pairs or ``classification`` cross-entropy
    over the class logits), ``closed_form``, ``weight_sweep`` or ``none``.
    """

    name = "base"
    training = "gradient"
    objective = "contrastive"
    export_files: tuple[str, ...] = ()

    def __init__(self, lr: float = 1e-3, weight_decay: float = 0.0, train_heads: bool | None = None,
                 head_lr: float | None = None):
        self.lr, self.weight_decay, self.train_heads = float(lr), float(weight_decay), train_heads
        self.head_lr = None if head_lr is None else float(head_lr)

    @property
    def trains(self) -> bool:
        return self.training != "none"

    def heads_train(self, tower: Tower) -> bool:
        """Heads train when asked, or by default when the tower's heads are not pretrained (LiT)."""
        return (not tower.heads_pretrained) if self.train_heads is None else bool(self.train_heads)

    def prepare(self, model) -> dict[str, nn.Module]:
        """Freeze the tower, open up the heads and the input adapter; returns the method's own
        modules (none here), which the ``AdaptedModel`` holds."""
        freeze(model.tower)
        if self.heads_train(model.tower):
            for t in model.tower.head_state_dict().values():
                t.requires_grad_(True)
        if model.input_adapter is not None:
            model.input_adapter.requires_grad_(True)
        return {}

    def restore(self, model, folder: Path) -> dict[str, nn.Module]:
        """The method's modules rebuilt on a fresh model and loaded from ``folder`` (what ``save`` wrote)."""
        return self.prepare(model)

    def save(self, model, folder: Path) -> None:
        """Write this method's weights (``export_files``) into ``folder``, safetensors only."""

    def tower_tensors(self, model) -> list[str]:
        """Names of the tower's own tensors this method changes in place (LoRA layers, full
        fine-tuning); heads are counted by the model."""
        return []

    @property
    def image_backbone_frozen(self) -> bool:
        """True when image features can be computed once and cached."""
        return True

    @property
    def static_classes(self) -> bool:
        """True when the class embeddings do not depend on the image (they can be encoded once)."""
        return True

    def class_embeddings(self, model, prompts: PromptSet, image_emb: torch.Tensor | None = None) -> torch.Tensor:
        """(K, D) class embeddings (or (B, K, D) when conditioned on the images)."""
        emb = model.tower.encode_text(prompts.input_ids, prompts.attention_mask)
        return ensemble(emb, prompts.labels, prompts.num_classes)

    def location_scores(self, model, features: torch.Tensor, prompts: PromptSet,
                        class_emb: torch.Tensor | None = None) -> torch.Tensor:
        """(B, K, h, w) cosine similarity of each location's embedding to each class, from
        per-location backbone features (B, h, w, F); conditioned classes use the image's global
        embedding (the mean of its locations)."""
        emb = F.normalize(model.tower.image_head(features), dim=-1)
        if class_emb is None:
            pooled = F.normalize(emb.mean(dim=(1, 2)), dim=-1)
            class_emb = self.class_embeddings(model, prompts, pooled)
        if class_emb.ndim == 2:
            return torch.einsum("bhwd,kd->bkhw", emb, class_emb)
        return torch.einsum("bhwd,bkd->bkhw", emb, class_emb)

    def location_logits(self, model, features: torch.Tensor, prompts: PromptSet,
                        class_emb: torch.Tensor | None = None) -> torch.Tensor:
        """(B, K, h, w) the logit ``logits`` would give an image whose features were those of one
        location: ``location_scores`` put through the same scale and bias."""
        return scaled(model.tower, self.location_scores(model, features, prompts, class_emb))

    def logits(self, model, batch: dict, prompts: PromptSet, class_emb: torch.Tensor | None = None) -> torch.Tensor:
        """(B, K) scaled cosine logits of the batch's images against the classes; a batch of
        slides (bags of tile features) is scored by the mean of its tiles' logits (MI-Zero)."""
        if TILE_MASK in batch:
            return self.bag_outputs(model, batch, prompts, class_emb)[0]
        img = model.embed_images(batch)
        cls = class_emb if class_emb is not None else self.class_embeddings(model, prompts, img)
        return scaled_similarity(model.tower, img, cls)

    def bag_outputs(self, model, batch: dict, prompts: PromptSet,
                    class_emb: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Slide logits (B, K) of a batch of bags and each tile's weight in them (B, N): the mean
        of the tiles' zero-shot logits, every valid tile weighing the same."""
        cls = class_emb if class_emb is not None else self.class_embeddings(model, prompts)
        weights = uniform_weights(batch[TILE_MASK])
        return weighted_sum(weights, scaled_similarity(model.tower, model.embed_images(batch), cls)), weights

    def classification_inputs(self, model, batch: dict, prompts: PromptSet) -> tuple:
        """(logits, targets, valid) that the classification objective's loss compares."""
        return self.logits(model, batch, prompts), batch["label"], batch.get("valid")


def build_method(cfg: dict) -> Method:
    """Build the method named by ``cfg['name']`` (importing this module imports the
    ``domainclip.methods`` package first, which registers the built-in methods)."""
    cfg = dict(cfg)
    return METHODS.get(cfg.pop("name"))(**cfg)
