"""Bootstrap confidence intervals that resample groups (patients, slides), seeded."""
from __future__ import annotations

from typing import Callable

import numpy as np


def _group_index(groups: list[str]) -> list[np.ndarray]:
    index: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        index.setdefault(g, []).append(i)
    return [np.asarray(v) for v in index.values()]


def _resamples(groups: list[str], n_resamples: int, seed: int):
    members = _group_index(groups)
    rng = np.random.default_rng(seed)
    for _ in range(n_resamples):
        picks = rng.integers(0, len(members), len(members))
        yield np.concatenate([members[j] for j in picks])


def group_bootstrap_ci(metric: Callable[[np.ndarray], float], groups: list[str], n_resamples: int = 1000,
                       seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of ``metric(indices)`` over resamples of whole groups with replacement.

    Resamples where the metric is undefined (NaN, e.g. one class only) are skipped.
    """
    return _percentile_ci([metric(idx) for idx in _resamples(groups, n_resamples, seed)], level)


def _percentile_ci(values: list[float], level: float) -> tuple[float, float]:
    values = np.asarray([v for v in values if v == v])
    if not len(values):
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))


def paired_bootstrap(metric_a: Callable[[np.ndarray], float], metric_b: Callable[[np.ndarray], float],
                     groups: list[str], n_resamples: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """CI of the difference ``b - a`` on the same resampled groups (e.g. after - before)."""
    diffs = []
    for idx in _resamples(groups, n_resamples, seed):
        a, b = metric_a(idx), metric_b(idx)
        if a == a and b == b:
            diffs.append(b - a)
    diffs = np.asarray(diffs)
    alpha = (1 - level) / 2
    all_idx = np.arange(len(groups))
    difference = float(metric_b(all_idx) - metric_a(all_idx)) if len(groups) else float("nan")
    if not len(diffs):  # the metric is undefined on every resample (e.g. a class absent from the split)
        return {"difference": difference, "ci": [float("nan"), float("nan")], "p_value_two_sided": float("nan"),
                "note": "undefined on every resample (a class may be absent from this split)"}
    return {"difference": difference,
            "ci": [float(np.quantile(diffs, alpha)), float(np.quantile(diffs, 1 - alpha))],
            "p_value_two_sided": float(min(1.0, 2 * min((diffs <= 0).mean(), (diffs >= 0).mean())))}


def independent_bootstrap(metric_a: Callable[[np.ndarray], float], groups_a: list[str],
                          metric_b: Callable[[np.ndarray], float], groups_b: list[str], n_resamples: int = 1000,
                          seed: int = 0, level: float = 0.95) -> dict:
    """CI of ``b - a`` between two independent samples (two sites): each resample draws the groups
    of each site independently, with replacement."""
    diffs = []
    for ia, ib in zip(_resamples(groups_a, n_resamples, seed), _resamples(groups_b, n_resamples, seed + 1)):
        a, b = metric_a(ia), metric_b(ib)
        if a == a and b == b:
            diffs.append(b - a)
    difference = float(metric_b(np.arange(len(groups_b))) - metric_a(np.arange(len(groups_a))))
    if not diffs:
        return {"difference": difference, "ci": [float("nan"), float("nan")], "p_value_two_sided": float("nan")}
    diffs, alpha = np.asarray(diffs), (1 - level) / 2
    return {"difference": difference,
            "ci": [float(np.quantile(diffs, alpha)), float(np.quantile(diffs, 1 - alpha))],
            "p_value_two_sided": float(min(1.0, 2 * min((diffs <= 0).mean(), (diffs >= 0).mean())))}


def metrics_with_cis(metrics: dict[str, Callable[[np.ndarray, np.ndarray], float]], p: np.ndarray, y: np.ndarray,
                     groups: list[str], n_resamples: int, seed: int) -> dict:
    """Each metric of ``metrics`` on (p, y), with its group-bootstrap 95% CI (``NAME_ci``) when
    ``n_resamples`` > 0."""
    draws = list(_resamples(groups, n_resamples, seed)) if n_resamples else None  # shared by every metric
    out = {}
    for name, fn in metrics.items():
        out[name] = fn(p, y)
        if draws is not None:
            out[f"{name}_ci"] = list(_percentile_ci([fn(p[idx], y[idx]) for idx in draws], 0.95))
    return out
