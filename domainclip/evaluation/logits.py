"""Class logits over a loader: zero-shot prompt ensembles, learned prompts or probes alike."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader


@torch.inference_mode()
def task_logits(task, loader: DataLoader, zero_shot: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The method's logits (N, K) (or the template zero-shot ones) and targets for ``loader``."""
    was_training = task.training
    task.eval()
    logits, targets = [], []
    classes = task.model.fixed_class_embeddings(zero_shot)  # text encoded once per loader, not per batch
    for batch in loader:
        logits.append(task.model.logits(batch, zero_shot=zero_shot, class_embeddings=classes))
        targets.append(batch["label"])
    task.train(was_training)
    return torch.cat(logits).float(), torch.cat(targets)
