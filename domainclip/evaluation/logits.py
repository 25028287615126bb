"""Class logits over a loader: zero-shot prompt ensembles, learned prompts or probes alike."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from domainclip.core.devices import to_device


@torch.inference_mode()
def task_logits(task, loader: DataLoader, zero_shot: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The method's logits (N, K) (or the template zero-shot ones) and targets for ``loader``, on
    the CPU. Each batch goes to the model's device first: during ``fit`` (the periodic evaluation
    callback) the model is on the accelerator while a plain loader's batches are on the host."""
    was_training = task.training
    task.eval()
    logits, targets = [], []
    device = task.device
    classes = task.model.fixed_class_embeddings(zero_shot)  # text encoded once per loader, not per batch
    for batch in loader:
        out = task.model.logits(to_device(batch, device), zero_shot=zero_shot, class_embeddings=classes)
        logits.append(out.float().cpu())
        targets.append(batch["label"])
    task.train(was_training)
    return torch.cat(logits), torch.cat(targets)
