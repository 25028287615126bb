"""Clinical utility and calibration for TRIPOD+AI: decision curves and logistic recalibration.

Decision curves (Vickers and Elkin 2006): at threshold probability ``t`` a class is called when
its probability is at least ``t``; net benefit is ``TP/n - FP/n * t / (1 - t)``, against treating
everyone (``prevalence - (1 - prevalence) * t / (1 - t)``) and no one (0). Checked against the
``dcurves`` package in the tests.

Calibration slope and intercept (Cox 1958; Van Calster et al. 2016): logistic regression of the
outcome on the logit of the predicted probability. The slope is the coefficient of that fit; the
intercept (calibration-in-the-large) is the intercept of the fit with the logit as an offset
(slope fixed at 1). Ideal values are 1 and 0. Both are maximum-likelihood fits by Newton's
method with Wald 95% CIs; the tests check them against ``statsmodels``' GLM.
"""
from __future__ import annotations

import numpy as np

THRESHOLDS = np.round(np.arange(1, 100) / 100, 2)  # 0.01 .. 0.99, as dcurves' default grid without 0
EPS = 1e-6
Z95 = 1.959963984540054


def net_benefit(probs: np.ndarray, positives: np.ndarray, thresholds: np.ndarray = THRESHOLDS) -> np.ndarray:
    """Net benefit of calling positive when ``probs >= t``, for each threshold ``t``."""
    n = len(positives)
    called = probs[None, :] >= thresholds[:, None]
    tp = (called & (positives[None, :] == 1)).sum(1) / n
    fp = (called & (positives[None, :] == 0)).sum(1) / n
    return tp - fp * thresholds / (1 - thresholds)


def treat_all(positives: np.ndarray, thresholds: np.ndarray = THRESHOLDS) -> np.ndarray:
    """Net benefit of treating everyone."""
    prevalence = float(np.mean(positives))
    return prevalence - (1 - prevalence) * thresholds / (1 - thresholds)


def one_vs_rest(targets: np.ndarray, n_classes: int) -> np.ndarray:
    """(N, K) 0/1 outcomes: class indices one-hot, or a multi-label target matrix as is."""
    return targets.astype(int) if targets.ndim == 2 else np.eye(n_classes, dtype=int)[targets]


def useful_range(better: np.ndarray) -> list[float] | None:
    """The first contiguous run of thresholds where the model beats both reference strategies."""
    hits = np.flatnonzero(better)
    if not len(hits):
        return None
    end = hits[0]
    while end + 1 < len(better) and better[end + 1]:
        end += 1
    return [float(THRESHOLDS[hits[0]]), float(THRESHOLDS[end])]


def decision_curves(probs: np.ndarray, targets: np.ndarray, class_names: list[str]) -> dict:
    """Per class (one-vs-rest): thresholds, model, treat-all and treat-none net benefit."""
    out = {"thresholds": THRESHOLDS.tolist(), "classes": {}}
    outcomes = one_vs_rest(targets, len(class_names))
    for k, c in enumerate(class_names):
        positives = outcomes[:, k]
        model, everyone = net_benefit(probs[:, k], positives), treat_all(positives)
        out["classes"][c] = {"model": model.tolist(), "treat_all": everyone.tolist(),
                             "useful_range": useful_range(model > np.maximum(everyone, 0.0) + 1e-12)}
    return out


def _logistic_fit(x: np.ndarray | None, offset: np.ndarray, y: np.ndarray, iters: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-likelihood logistic regression of ``y`` on ``[1, x]`` with ``offset``; (coef, standard errors)."""
    design = np.ones((len(y), 1)) if x is None else np.column_stack([np.ones(len(y)), x])
    beta = np.zeros(design.shape[1])
    for _ in range(iters):
        mu = 1 / (1 + np.exp(-(design @ beta + offset)))
        weight = np.clip(mu * (1 - mu), 1e-12, None)
        info = design.T @ (design * weight[:, None])
        step = np.linalg.solve(info, design.T @ (y - mu))
        beta += step
        if np.abs(step).max() < 1e-12:
            break
    mu = 1 / (1 + np.exp(-(design @ beta + offset)))
    info = design.T @ (design * (mu * (1 - mu))[:, None])
    return beta, np.sqrt(np.diag(np.linalg.inv(info)))


def calibration_slope_intercept(probs: np.ndarray, positives: np.ndarray) -> dict:
    """Calibration slope and intercept (calibration-in-the-large) with Wald 95% CIs.

    Undefined (``None``) when the outcome is constant or the predictions separate it perfectly."""
    y = positives.astype(np.float64)
    if y.min() == y.max():
        return {"slope": None, "intercept": None, "note": "one outcome only"}
    lp = np.log(np.clip(probs, EPS, 1 - EPS) / (1 - np.clip(probs, EPS, 1 - EPS)))
    try:
        with np.errstate(over="ignore"):
            (a, b), (sa, sb) = _logistic_fit(lp, np.zeros_like(lp), y)
            (c,), (sc,) = _logistic_fit(None, lp, y)
    except np.linalg.LinAlgError:
        return {"slope": None, "intercept": None, "note": "the fit did not converge (perfect separation)"}
    if not np.isfinite([b, sb, c, sc]).all() or sb > 1e3:
        return {"slope": None, "intercept": None, "note": "the fit did not converge (perfect separation)"}
    return {"slope": float(b), "slope_ci": [float(b - Z95 * sb), float(b + Z95 * sb)],
            "intercept": float(c), "intercept_ci": [float(c - Z95 * sc), float(c + Z95 * sc)]}


def recalibration(probs: np.ndarray, targets: np.ndarray, class_names: list[str]) -> dict:
    """Per class (one-vs-rest) calibration slope and intercept."""
    outcomes = one_vs_rest(targets, len(class_names))
    return {c: calibration_slope_intercept(probs[:, k], outcomes[:, k]) for k, c in enumerate(class_names)}
