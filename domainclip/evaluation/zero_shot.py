"""Zero-shot classification with prompt ensembles built from the caption templates."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader


def class_embeddings(tower, input_ids, attention_mask, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean of the normalised prompt embeddings of each class, re-normalised: (K, D)."""
    emb = F.normalize(tower.encode_text(input_ids, attention_mask), dim=-1)
    out = torch.zeros(num_classes, emb.shape[-1], dtype=emb.dtype, device=emb.device)
    out.index_add_(0, labels.to(emb.device), emb)
    return F.normalize(out, dim=-1)


def image_embeddings(tower, batch: dict) -> torch.Tensor:
    """Normalised image embeddings from cached ``features`` or raw ``pixels``."""
    emb = tower.image_head(batch["features"]) if "features" in batch else tower.encode_image(batch["pixels"])
    return F.normalize(emb, dim=-1)


@torch.inference_mode()
def zero_shot_logits(tower, loader: DataLoader, class_emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled cosine logits (N, K) and targets for every sample of ``loader``."""
    was_training = tower.training
    tower.eval()
    logits, targets = [], []
    scale = tower.logit_scale
    for batch in loader:
        logits.append(scale * image_embeddings(tower, batch) @ class_emb.t())
        targets.append(batch["label"])
    tower.train(was_training)
    return torch.cat(logits).float(), torch.cat(targets)
