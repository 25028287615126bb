"""Operating points locked on the validation split, then applied unchanged to test."""
from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_curve


def lock_threshold(scores: np.ndarray, positives: np.ndarray, rule: str = "youden",
                   target_sensitivity: float = 0.95) -> float:
    """Threshold on ``scores`` chosen from validation data only.

    ``youden`` maximises sensitivity + specificity - 1; ``sensitivity`` takes the highest
    threshold whose sensitivity reaches ``target_sensitivity``.
    """
    if positives.min() == positives.max():
        return 0.5
    fpr, tpr, thr = roc_curve(positives, scores)
    thr = np.clip(thr, 0.0, 1.0)
    if rule == "youden":
        return float(thr[int(np.argmax(tpr - fpr))])
    if rule == "sensitivity":
        ok = np.nonzero(tpr >= target_sensitivity)[0]
        return float(thr[ok[0]]) if len(ok) else float(thr[-1])
    raise ValueError(f"unknown operating-point rule {rule!r}; allowed: youden, sensitivity")


def lock_thresholds(val_probs: torch.Tensor, val_targets: torch.Tensor, class_names: list[str], rule: str = "youden",
                    target_sensitivity: float = 0.95) -> dict[str, float]:
    """One-vs-rest threshold per class, from validation probabilities and labels only."""
    p, y = val_probs.numpy(), val_targets.numpy()
    return {c: lock_threshold(p[:, k], (y == k).astype(int), rule, target_sensitivity) for k, c in enumerate(class_names)}


def at_threshold(scores: np.ndarray, positives: np.ndarray, threshold: float) -> dict:
    """Sensitivity, specificity, PPV and NPV of ``scores >= threshold`` (with counts)."""
    pred = scores >= threshold
    tp, fp = int((pred & (positives == 1)).sum()), int((pred & (positives == 0)).sum())
    fn, tn = int((~pred & (positives == 1)).sum()), int((~pred & (positives == 0)).sum())
    div = lambda a, b: a / b if b else float("nan")  # noqa: E731
    return {"threshold": threshold, "sensitivity": div(tp, tp + fn), "specificity": div(tn, tn + fp),
            "ppv": div(tp, tp + fp), "npv": div(tn, tn + fn), "tp": tp, "fp": fp, "fn": fn, "tn": tn}


def operating_metrics(probs: torch.Tensor, targets: torch.Tensor, thresholds: dict[str, float]) -> dict:
    """Per class, the confusion counts and rates at the locked thresholds."""
    p, y = probs.numpy(), targets.numpy()
    return {c: at_threshold(p[:, k], (y == k).astype(int), t) for k, (c, t) in enumerate(thresholds.items())}
