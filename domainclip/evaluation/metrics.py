"""Classification metrics from logits (torchmetrics, not hand-written)."""
from __future__ import annotations

import torch
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_auroc,
    multiclass_f1_score,
)


def classification_metrics(logits: torch.Tensor, targets: torch.Tensor, class_names: list[str]) -> dict:
    """Top-1, balanced accuracy, macro-F1, macro AUROC and per-class recall for one split."""
    k = len(class_names)
    probs = logits.softmax(-1)
    per_class = multiclass_accuracy(probs, targets, num_classes=k, average="none")
    out = {
        "n": int(targets.numel()),
        "top1": float(multiclass_accuracy(probs, targets, num_classes=k, average="micro")),
        "balanced_accuracy": float(multiclass_accuracy(probs, targets, num_classes=k, average="macro")),
        "macro_f1": float(multiclass_f1_score(probs, targets, num_classes=k, average="macro")),
        "chance": 1.0 / k,
        "recall_per_class": {c: float(v) for c, v in zip(class_names, per_class)},
    }
    if len(torch.unique(targets)) == k:
        out["macro_auroc"] = float(multiclass_auroc(probs, targets, num_classes=k, average="macro"))
    return out
