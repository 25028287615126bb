"""The metric registry: every headline metric written once, in numpy, for both tasks.

A metric takes probabilities ``p`` (N, K) and targets ``y``: class indices (N,) for single-label
cards, a multi-hot matrix (N, K) for multi-label ones, and returns a float. Numpy keeps thousands
of bootstrap resamples fast; tests check each metric against scikit-learn and torchmetrics for
both tasks. ``METRICS[task]`` lists the headline metrics a report gives with CIs.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

Metric = Callable[[np.ndarray, np.ndarray], float]
METRICS: dict[str, dict[str, Metric]] = {"single_label": {}, "multi_label": {}}


def metric(name: str, *tasks: str) -> Callable[[Metric], Metric]:
    """Register ``fn`` as the headline metric ``name`` for ``tasks`` (both when none are named)."""

    def register(fn: Metric) -> Metric:
        for task in tasks or tuple(METRICS):
            METRICS[task][name] = fn
        return fn

    return register


def indicators(y: np.ndarray, n_classes: int) -> np.ndarray:
    """(N, K) 0/1 matrix: one-hot of class indices, or the multi-hot targets as they are."""
    return y.astype(int) if y.ndim == 2 else np.eye(n_classes, dtype=int)[y]


def binary_auroc(scores: np.ndarray, positives: np.ndarray) -> float:
    """Mann-Whitney AUROC with ties counted half; NaN when one class is absent."""
    return float(column_aurocs(scores[:, None], positives[:, None])[0])


def column_aurocs(scores: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """(K,) Mann-Whitney AUROC of each column of ``scores`` (N, K) against the 0/1 column of
    ``positives``, ties counted half; NaN for a column without positives or negatives."""
    n_pos = positives.sum(0).astype(np.float64)
    n_neg = len(positives) - n_pos
    rank_sum = (average_ranks(scores) * positives).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks within each column of ``values`` (N, K) with ties given their mean rank
    (``scipy.stats.rankdata(axis=0)``'s "average" method) in a few numpy calls for all columns:
    the bootstrap ranks thousands of small resamples, where per-call overhead dominated."""
    n = len(values)
    order = np.argsort(values, axis=0, kind="stable")
    ordered = np.take_along_axis(values, order, axis=0)
    new_value = np.ones(values.shape, dtype=bool)
    new_value[1:] = ordered[1:] != ordered[:-1]
    last_of_tie = np.ones(values.shape, dtype=bool)
    last_of_tie[:-1] = new_value[1:]
    position = np.arange(n)[:, None]
    first = np.maximum.accumulate(np.where(new_value, position, 0), axis=0)
    last = np.minimum.accumulate(np.where(last_of_tie, position, n)[::-1], axis=0)[::-1]
    ranks = np.empty(values.shape, dtype=np.float64)
    np.put_along_axis(ranks, order, (first + last) / 2.0 + 1.0, axis=0)
    return ranks


def calibration_gap(confidence: np.ndarray, outcome: np.ndarray, n_bins: int = 15) -> float:
    """Expected calibration error over equal-width bins ``(lo, hi]`` (torchmetrics' binning):
    the count-weighted mean of |mean outcome - mean confidence| per bin."""
    scaled = confidence * n_bins
    bins = np.minimum(scaled.astype(int) - ((scaled == np.floor(scaled)) & (confidence > 0)), n_bins - 1)
    total = 0.0
    for b in np.unique(bins):
        m = bins == b
        total += m.mean() * abs(outcome[m].mean() - confidence[m].mean())
    return float(total)


@metric("top1")
def top1(p: np.ndarray, y: np.ndarray) -> float:
    """Share of samples whose best class is their class (multi-label: one of their labels)."""
    best = p.argmax(1)
    hits = y[np.arange(len(y)), best] > 0 if y.ndim == 2 else best == y
    return float(hits.mean())


@metric("balanced_accuracy", "single_label")
def balanced_accuracy(p: np.ndarray, y: np.ndarray) -> float:
    """Mean per-class recall over the classes present."""
    pred = p.argmax(1)
    return float(np.mean([(pred[y == k] == k).mean() for k in np.unique(y)]))


@metric("macro_auroc")
def macro_auroc(p: np.ndarray, y: np.ndarray) -> float:
    """Mean one-vs-rest AUROC over classes (NaN unless every class has positives and negatives)."""
    return float(np.mean(column_aurocs(p, indicators(y, p.shape[1]))))


@metric("brier")
def brier(p: np.ndarray, y: np.ndarray) -> float:
    """Brier score. Single-label: the multi-class score, squared error summed over classes and
    averaged over samples. Multi-label: the mean of the per-class binary Brier scores."""
    squared = (p - indicators(y, p.shape[1])) ** 2
    return float(squared.sum(1).mean() if y.ndim == 1 else squared.mean())


@metric("ece")
def ece(p: np.ndarray, y: np.ndarray, n_bins: int = 15) -> float:
    """Expected calibration error. Single-label: top-label ECE (confidence of the predicted class
    against its correctness). Multi-label: binary ECE over every (sample, class) probability."""
    if y.ndim == 2:
        return calibration_gap(p.ravel(), y.ravel().astype(float), n_bins)
    return calibration_gap(p.max(1), (p.argmax(1) == y).astype(float), n_bins)


HEADLINE = METRICS["single_label"]  # the single-label headline metrics, by their former name


def evaluated_classes(y: np.ndarray, n_classes: int) -> list[int]:
    """Single-label classes that have samples and non-samples in ``y``: those a one-vs-rest metric
    can evaluate (a small collection may leave a class out of a split)."""
    present = set(np.unique(y).tolist())
    return [k for k in range(n_classes) if k in present] if len(present) > 1 else []


def macro_auroc_over(classes: list[int]) -> Metric:
    """Macro AUROC over ``classes`` only (the classes a split evaluates)."""
    def macro_auroc_evaluated(p: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean(column_aurocs(p, indicators(y, p.shape[1]))[classes]))

    return macro_auroc_evaluated


def headline_for(y: np.ndarray, n_classes: int) -> dict[str, Metric]:
    """The single-label headline metrics for a split: as registered when every class is there,
    else with the macro AUROC over the classes the split evaluates (bootstrap resamples of that
    split keep the same classes, so a resample that loses one is NaN, as before)."""
    classes = evaluated_classes(y, n_classes)
    if len(classes) in (0, n_classes):
        return HEADLINE
    return {**HEADLINE, "macro_auroc": macro_auroc_over(classes)}
