"""Split-conformal prediction sets (LAC and APS) calibrated on validation, at the group level.

Scores (Sadinle et al. 2019; Romano et al. 2020):

- ``lac``: ``1 - p_y``; sets hold every class whose probability is at least ``1 - q``.
- ``aps``: the probability mass of every class at least as likely as ``y`` (non-randomised APS);
  sets grow from the most likely class until the mass reaches ``q``, that class included.

``q`` is the ``ceil((n + 1)(1 - alpha))``-th smallest of ``n`` calibration scores, so a new
exchangeable sample is covered with probability at least ``1 - alpha`` (Vovk et al. 2005). When
a group (patient, slide) holds several images, those images are not exchangeable with images of
new groups: calibration then uses **one image per group, drawn with a seeded generator**, so the
``n`` scores are exchangeable with one image of a new group and the guarantee holds for a test
image drawn from a new group (Dunn, Wasserman and Ramdas 2022, "Distribution-free prediction
sets for two-layer hierarchical models", subsampling variant). The sets are checked against
``crepes`` in the tests; coverage against the binomial bounds of the guarantee.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.stats import beta

from domainclip.evaluation.bootstrap import group_bootstrap_ci

SCORES = ("lac", "aps")


def class_scores(probs: np.ndarray, method: str) -> np.ndarray:
    """Non-conformity score of every (sample, class) pair: (N, K)."""
    if method == "lac":
        return 1.0 - probs
    if method == "aps":
        order = np.argsort(-probs, axis=1, kind="stable")
        cumulative = np.take_along_axis(probs, order, 1).cumsum(1)
        out = np.empty_like(probs)
        np.put_along_axis(out, order, cumulative, 1)
        return out
    raise ValueError(f"unknown conformal score '{method}'; use one of {SCORES}")


def one_per_group(groups: list[str], seed: int) -> np.ndarray:
    """Indices of one image per group, drawn with a seeded generator (all images when groups are singletons)."""
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    rng = np.random.default_rng(seed)
    return np.asarray(sorted(int(rng.choice(idx)) for idx in members.values()))


def calibration_scores(probs: np.ndarray, labels: np.ndarray, groups: list[str], method: str, seed: int = 0) -> np.ndarray:
    """Sorted true-class scores of the calibration images (one per group)."""
    idx = one_per_group(groups, seed)
    return np.sort(class_scores(probs[idx], method)[np.arange(len(idx)), labels[idx]])


def quantile(scores: np.ndarray, alpha: float) -> float:
    """The conformal threshold: the ``ceil((n+1)(1-alpha))``-th smallest score (inf when n is too small)."""
    n = len(scores)
    rank = math.ceil((n + 1) * (1 - alpha))
    return float(np.sort(scores)[rank - 1]) if rank <= n else float("inf")


def prediction_sets(probs: np.ndarray, threshold: float, method: str, include_last: bool = True) -> np.ndarray:
    """Boolean (N, K) membership: class k is in the set when its score is at most the threshold.

    For ``aps`` with ``include_last`` (the default, as MAPIE's ``include_last_label``), the class
    whose cumulative mass first passes the threshold joins too: sets are never empty and only grow,
    so coverage stays at least ``1 - alpha``."""
    scores = class_scores(probs, method)
    members = scores <= threshold
    if method == "aps" and include_last:
        order = np.argsort(-probs, axis=1, kind="stable")
        keep = np.minimum(members.sum(1) + 1, probs.shape[1])
        np.put_along_axis(members, order, np.arange(probs.shape[1])[None, :] < keep[:, None], 1)
    return members


def coverage_report(sets: np.ndarray, labels: np.ndarray, groups: list[str], class_names: list[str],
                    bootstrap: int, seed: int) -> dict:
    """Test coverage with a group-bootstrap CI, mean set size, and coverage per class."""
    covered = sets[np.arange(len(labels)), labels].astype(float)
    out = {"coverage": float(covered.mean()), "mean_set_size": float(sets.sum(1).mean()),
           "empty_sets": int((sets.sum(1) == 0).sum()),
           "per_class": {c: float(covered[labels == k].mean()) if (labels == k).any() else float("nan")
                         for k, c in enumerate(class_names)}}
    if bootstrap:
        out["coverage_ci"] = list(group_bootstrap_ci(lambda i: float(covered[i].mean()), groups, bootstrap, seed))
    return out


def conformal_evaluation(val_probs: np.ndarray, val_labels: np.ndarray, val_groups: list[str],
                         test_probs: np.ndarray, test_labels: np.ndarray, test_groups: list[str],
                         class_names: list[str], alpha: float, bootstrap: int, seed: int) -> dict:
    """Calibrate LAC and APS on validation (one image per group) and report them on test."""
    grouped = len(set(val_groups)) < len(val_groups)
    out = {"alpha": alpha, "calibration": {
        "split": "val", "n_images": len(val_labels), "n_used": len(set(val_groups)),
        "unit": "one image per group (seeded draw)" if grouped else "image (groups hold one image each)"}}
    for method in SCORES:
        scores = calibration_scores(val_probs, val_labels, val_groups, method, seed)
        q = quantile(scores, alpha)
        sets = prediction_sets(test_probs, q, method)
        out[method] = {"threshold": q, "scores": scores.tolist(),
                       **coverage_report(sets, test_labels, test_groups, class_names, bootstrap, seed)}
    n = out["calibration"]["n_used"]
    out["calibration"]["coverage_given_calibration_90"] = conditional_coverage_range(n, alpha)
    if out["lac"]["threshold"] == float("inf"):
        out["note"] = (f"only {n} calibration units: at alpha={alpha} the threshold is infinite and every set holds "
                       f"every class (at least {math.ceil(1 / alpha) - 1} are needed); use a larger validation split "
                       "or a larger alpha")
    return out


def conditional_coverage_range(n: int, alpha: float, level: float = 0.9) -> list[float] | None:
    """Central ``level`` range of the coverage given one calibration draw of ``n`` units: it is
    Beta(l, n + 1 - l) with ``l = ceil((n + 1)(1 - alpha))`` (Vovk 2012). Small ``n`` makes it wide."""
    rank = math.ceil((n + 1) * (1 - alpha))
    if rank > n:
        return None
    tail = (1 - level) / 2
    return [float(beta.ppf(tail, rank, n + 1 - rank)), float(beta.ppf(1 - tail, rank, n + 1 - rank))]


def locked_conformal(probs: np.ndarray, labels: np.ndarray, groups: list[str], class_names: list[str],
                     locked: dict, bootstrap: int, seed: int) -> dict:
    """Coverage on new data (another site) with thresholds calibrated elsewhere, never refitted."""
    out = {"alpha": locked["alpha"], "calibration": {"split": "locked (calibrated on the development site's val)"}}
    for method in SCORES:
        if method in locked:
            sets = prediction_sets(probs, locked[method]["threshold"], method)
            out[method] = {"threshold": locked[method]["threshold"],
                           **coverage_report(sets, labels, groups, class_names, bootstrap, seed)}
    return out


def threshold_for(scores: list[float], alpha: float) -> float:
    """Threshold at another ``alpha`` from stored calibration scores (the bundle keeps them)."""
    return quantile(np.asarray(scores, dtype=np.float64), alpha)
