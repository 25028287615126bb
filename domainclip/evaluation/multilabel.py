"""Clinical evaluation for multi-label cards: per-class probabilities from a sigmoid calibrated
on validation (shared temperature, per-class bias), per-class operating points, group CIs."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import multilabel_auroc, multilabel_average_precision

from domainclip.evaluation.bootstrap import metrics_with_cis, paired_bootstrap
from domainclip.evaluation.calibration import reliability_bins
from domainclip.evaluation.decision import decision_curves, recalibration
from domainclip.evaluation.operating import at_threshold, lock_threshold
from domainclip.evaluation.scores import METRICS, brier, ece, macro_auroc, top1


def fit_sigmoid(val_logits: torch.Tensor, val_targets: torch.Tensor, max_iter: int = 200) -> tuple[float, list[float]]:
    """Temperature T and per-class bias b minimising validation BCE of ``sigmoid((logits - b) / T)``."""
    logits, targets = val_logits.detach().float().clone(), val_targets.float().clone()
    log_t = torch.zeros((), requires_grad=True)
    bias = logits.mean(0).clone().requires_grad_(True)
    opt = torch.optim.LBFGS([log_t, bias], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits((logits - bias) / log_t.exp(), targets)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp().clamp(0.01, 100.0)), [float(b) for b in bias.detach()]


def probabilities(logits: torch.Tensor, temperature: float, bias: list[float]) -> torch.Tensor:
    return torch.sigmoid((logits - torch.tensor(bias)) / temperature)


def with_cis(p: np.ndarray, y: np.ndarray, groups: list[str], s) -> dict:
    """The multi-label headline metrics with group-bootstrap CIs (balanced accuracy is undefined)."""
    return {"balanced_accuracy": float("nan"), **metrics_with_cis(METRICS["multi_label"], p, y, groups, s.bootstrap,
                                                                   s.seed)}


def _bins(p: np.ndarray, y: np.ndarray) -> list[dict]:
    """Reliability bins of the binary (sample, class) probabilities."""
    conf = torch.tensor(p.ravel())
    two = torch.stack([1 - conf, conf], 1)
    return reliability_bins(two, torch.tensor(y.ravel()).long())


def evaluate_multilabel(val, test, class_names: list[str], s, locked: tuple | None = None) -> dict:
    """The clinical report of a multi-label model (same layout as the single-label one)."""
    if locked is None:
        temperature, bias = fit_sigmoid(val.logits, val.targets)
        vp, vy = probabilities(val.logits, temperature, bias).numpy(), val.targets.numpy().astype(int)
        thresholds = {c: lock_threshold(vp[:, k], vy[:, k], s.operating_point, s.target_sensitivity)
                      for k, c in enumerate(class_names)}
    else:
        temperature, thresholds, bias = locked[0], locked[1], locked[2]
    raw = torch.sigmoid(test.logits - test.logits.mean(1, keepdim=True)).numpy()
    p = probabilities(test.logits, temperature, bias).numpy()
    y = test.targets.numpy().astype(int)
    k = len(class_names)
    tp, ty = torch.tensor(p), torch.tensor(y)
    per_class = {c: {"auroc": float(a), "auprc": float(b)} for c, a, b in zip(
        class_names, multilabel_auroc(tp, ty, num_labels=k, average="none"),
        multilabel_average_precision(tp, ty, num_labels=k, average="none"))}
    return {
        "n": len(y), "multi_label": True, "temperature": temperature, "bias": bias, "thresholds": thresholds,
        "image_level": {"per_class": per_class, **with_cis(p, y, test.groups, s)},
        "calibration": {"ece_before": ece(raw, y), "ece_after": ece(p, y), "brier_before": brier(raw, y),
                        "brier_after": brier(p, y), "reliability_before": _bins(raw, y), "reliability_after": _bins(p, y)},
        "operating_points": {c: at_threshold(p[:, i], y[:, i], thresholds[c]) for i, c in enumerate(class_names)},
        "subgroups": {},
        "group_level": {"note": "group aggregation is reported for single-label cards"},
        "decision_curves": decision_curves(p, y, class_names),
        "recalibration": recalibration(p, y, class_names),
        "conformal": None,  # split-conformal sets are reported for single-label cards
    }


def compare_multilabel(before, after, s) -> dict:
    """Paired group bootstrap of after - before for hit rate and macro AUROC."""
    pb, pa, y = torch.sigmoid(before.logits).numpy(), torch.sigmoid(after.logits).numpy(), after.targets.numpy()
    return {name: paired_bootstrap(lambda idx: fn(pb[idx], y[idx]), lambda idx: fn(pa[idx], y[idx]),
                                   after.groups, max(s.bootstrap, 1), s.seed)
            for name, fn in (("top1", top1), ("macro_auroc", macro_auroc))}
