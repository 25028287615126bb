"""Fast numpy versions of headline metrics, for thousands of bootstrap resamples. Point estimates
in reports come from torchmetrics / scikit-learn; tests check these agree with them."""
from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def top1(p: np.ndarray, y: np.ndarray) -> float:
    return float((p.argmax(1) == y).mean())


def balanced_accuracy(p: np.ndarray, y: np.ndarray) -> float:
    pred = p.argmax(1)
    recalls = [(pred[y == k] == k).mean() for k in np.unique(y)]
    return float(np.mean(recalls))


def binary_auroc(scores: np.ndarray, positives: np.ndarray) -> float:
    """Mann-Whitney AUROC with ties counted half; NaN when one class is absent."""
    n_pos = int(positives.sum())
    n_neg = len(positives) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positives == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def macro_auroc(p: np.ndarray, y: np.ndarray) -> float:
    """Mean one-vs-rest AUROC over classes (NaN unless every class is present)."""
    return float(np.mean([binary_auroc(p[:, k], (y == k).astype(int)) for k in range(p.shape[1])]))


def brier(p: np.ndarray, y: np.ndarray) -> float:
    onehot = np.eye(p.shape[1])[y]
    return float(((p - onehot) ** 2).sum(1).mean())


def ece(p: np.ndarray, y: np.ndarray, n_bins: int = 15) -> float:
    conf, pred = p.max(1), p.argmax(1)
    bins = np.minimum((conf * n_bins).astype(int) - (conf * n_bins == np.floor(conf * n_bins)) * (conf > 0), n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            total += m.mean() * abs((pred[m] == y[m]).mean() - conf[m].mean())
    return float(total)


HEADLINE = {"top1": top1, "balanced_accuracy": balanced_accuracy, "macro_auroc": macro_auroc, "brier": brier,
            "ece": ece}
