"""The Method contract: which parameters train, the forward pass that scores classes, the
training objective, and what gets exported."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from domainclip.registry import Registry
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


def image_embeddings(tower: Tower, batch: dict) -> torch.Tensor:
    """Normalised image embeddings from cached ``features`` or raw ``pixels``."""
    emb = tower.image_head(batch["features"]) if "features" in batch else tower.encode_image(batch["pixels"])
    return F.normalize(emb, dim=-1)


class Method:
    """Base class: zero-shot scoring with the template prompt ensemble.

    ``objective`` is ``contrastive`` (image-caption pairs), ``classification`` (cross-entropy over
    class prompts) or ``none`` (no gradient training; ``fit`` may still fit something in closed form).
    """

    name = "base"
    objective = "contrastive"
    export_files: tuple[str, ...] = ()

    def __init__(self, lr: float = 1e-3, weight_decay: float = 0.0, train_heads: bool | None = None,
                 head_lr: float | None = None):
        self.lr, self.weight_decay, self.train_heads = float(lr), float(weight_decay), train_heads
        self.head_lr = None if head_lr is None else float(head_lr)

    @property
    def trains(self) -> bool:
        return self.objective != "none"

    def heads_train(self, tower: Tower) -> bool:
        """Heads train when asked, or by default when the tower's heads are not pretrained (LiT)."""
        return (not tower.heads_pretrained) if self.train_heads is None else bool(self.train_heads)

    def prepare(self, tower: Tower, class_names: list[str]) -> None:
        """Freeze everything, then open up the heads (and the input adapter)."""
        freeze(tower)
        if self.heads_train(tower):
            for t in tower.head_state_dict().values():
                t.requires_grad_(True)
        if tower.input_adapter is not None:
            tower.input_adapter.requires_grad_(True)

    @property
    def image_backbone_frozen(self) -> bool:
        """True when image features can be computed once and cached."""
        return True

    def class_embeddings(self, tower: Tower, prompts: PromptSet, image_emb: torch.Tensor | None = None) -> torch.Tensor:
        """(K, D) class embeddings (or (B, K, D) when conditioned on the images)."""
        emb = tower.encode_text(prompts.input_ids, prompts.attention_mask)
        return ensemble(emb, prompts.labels, prompts.num_classes)

    def logits(self, tower: Tower, batch: dict, prompts: PromptSet) -> torch.Tensor:
        """(B, K) scaled cosine logits of the batch's images against the classes."""
        img = image_embeddings(tower, batch)
        cls = self.class_embeddings(tower, prompts, img)
        sims = img @ cls.t() if cls.ndim == 2 else torch.einsum("bd,bkd->bk", img, cls)
        return tower.logit_scale * sims + (tower.logit_bias if tower.logit_bias is not None else 0.0)

    def fit(self, task, datamodule, make_trainer) -> dict:
        """Train; returns a report for metrics.json. Default: Lightning ``Trainer.fit``."""
        if self.trains:
            trainer = make_trainer()
            trainer.fit(task, datamodule=datamodule, ckpt_path=getattr(trainer, "resume_ckpt", None))
        return {}

    def export(self, tower: Tower, out_dir: Path) -> None:
        """Write this method's weights (``export_files``) into ``out_dir``, safetensors only."""

    def load(self, tower: Tower, bundle_dir: Path, class_names: list[str]) -> None:
        """Rebuild this method's modules on a fresh tower and load the exported weights (frozen)."""
        self.prepare(tower, class_names)
        freeze(tower)


def build_method(cfg: dict) -> Method:
    """Build the method named by ``cfg['name']``."""
    from domainclip import methods  # noqa: F401 - registers the built-in methods

    cfg = dict(cfg)
    return METHODS.get(cfg.pop("name"))(**cfg)
