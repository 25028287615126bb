"""Classification metrics from logits (torchmetrics, not hand-written)."""
from __future__ import annotations

import torch
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_auroc,
    multiclass_f1_score,
    multilabel_auroc,
)

from domainclip.evaluation.scores import evaluated_classes


def multilabel_metrics(logits: torch.Tensor, targets: torch.Tensor, class_names: list[str]) -> dict:
    """Multi-label: top-1 is the share of images whose best class is one of their labels."""
    targets = targets.long()
    top = logits.argmax(-1)
    out = {"n": int(targets.shape[0]), "top1": float(targets.gather(1, top[:, None]).float().mean()),
           "balanced_accuracy": float("nan"), "chance": float(targets.float().mean()), "multi_label": True}
    present = targets.sum(0)
    if bool(((present > 0) & (present < targets.shape[0])).all()):
        out["macro_auroc"] = float(multilabel_auroc(logits.sigmoid(), targets, num_labels=len(class_names)))
    else:
        degenerate = [c for c, n in zip(class_names, present.tolist()) if n in (0, targets.shape[0])]
        out["undefined"] = {"macro_auroc": f"class(es) {degenerate} have no positive (or no negative) sample here"}
    return out


def classification_metrics(logits: torch.Tensor, targets: torch.Tensor, class_names: list[str]) -> dict:
    """Top-1, balanced accuracy, macro-F1, macro AUROC and per-class recall for one split."""
    if targets.ndim == 2:
        return multilabel_metrics(logits, targets, class_names)
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
    else:
        absent = [c for i, c in enumerate(class_names) if not bool((targets == i).any())]
        present = evaluated_classes(targets.numpy(), k)
        out["undefined"] = {"recall_per_class": f"recall of {absent} is 0 by convention: no sample"}
        if present:  # a small collection left a class out of this split: macro over the rest
            per_class_auroc = multiclass_auroc(probs, targets, num_classes=k, average="none")
            out["macro_auroc"] = float(per_class_auroc[present].mean())
            out["macro_over"] = [class_names[i] for i in present]
        else:
            out["undefined"]["macro_auroc"] = f"class(es) {absent} absent from this split"
    return out
