"""Calibration: temperature scaling (fitted on validation only), ECE and Brier score."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from domainclip.evaluation.scores import brier, ece


def fit_temperature(val_logits: torch.Tensor, val_targets: torch.Tensor, max_iter: int = 200) -> float:
    """The temperature T > 0 minimising validation NLL of ``softmax(logits / T)`` (Guo et al. 2017)."""
    log_t = torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")
    logits, targets = val_logits.detach().float().clone(), val_targets.long().clone()  # may be inference tensors

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), targets)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp().clamp(0.01, 100.0))


def expected_calibration_error(probs: torch.Tensor, targets: torch.Tensor, n_bins: int = 15) -> float:
    """Top-label ECE with equal-width bins: the registry's ``ece`` on tensors."""
    return ece(probs.double().numpy(), targets.numpy(), n_bins)


def brier_score(probs: torch.Tensor, targets: torch.Tensor) -> float:
    """Multi-class Brier score: the registry's ``brier`` on tensors."""
    return brier(probs.double().numpy(), targets.numpy())


def reliability_bins(probs: torch.Tensor, targets: torch.Tensor, n_bins: int = 10) -> list[dict]:
    """Per confidence bin: mean confidence, accuracy and count (for the reliability diagram)."""
    conf, pred = probs.max(1)
    correct = (pred == targets).float()
    edges = torch.linspace(0, 1, n_bins + 1)
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            out.append({"lo": float(lo), "hi": float(hi), "confidence": float(conf[m].mean()),
                        "accuracy": float(correct[m].mean()), "n": int(m.sum())})
    return out
