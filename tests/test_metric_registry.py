"""The metric registry: each headline metric is written once for both tasks, and checked here
against scikit-learn and torchmetrics on single-label and multi-label data."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, brier_score_loss, roc_auc_score
from torchmetrics.functional.classification import binary_calibration_error, multiclass_calibration_error
from torchmetrics.functional.retrieval import retrieval_precision

from domainclip.evaluation.evaluators import EVALUATORS, evaluator_for, evaluator_of
from domainclip.evaluation.scores import METRICS

RNG = np.random.default_rng(7)
N, K = 300, 4
Y_MULTI = (RNG.random((N, K)) < np.array([0.2, 0.35, 0.5, 0.65])).astype(int)
Y_MULTI[Y_MULTI.sum(1) == 0, 0] = 1  # every image has at least one label (hit rate is defined)
P_MULTI = 1 / (1 + np.exp(-(1.5 * (2 * Y_MULTI - 1) + RNG.normal(0, 1.6, (N, K)))))
Y_SINGLE = RNG.integers(0, K, N)
LOGITS = 1.4 * np.eye(K)[Y_SINGLE] + RNG.normal(0, 1.2, (N, K))
P_SINGLE = np.exp(LOGITS) / np.exp(LOGITS).sum(1, keepdims=True)


def test_registry_lists_each_task_headline_metrics():
    assert set(METRICS["single_label"]) == {"top1", "balanced_accuracy", "macro_auroc", "brier", "ece"}
    assert set(METRICS["multi_label"]) == {"top1", "macro_auroc", "brier", "ece"}
    shared = set(METRICS["single_label"]) & set(METRICS["multi_label"])
    assert all(METRICS["single_label"][m] is METRICS["multi_label"][m] for m in shared)  # written once


def test_single_label_metrics_match_scikit_learn_and_torchmetrics():
    m = METRICS["single_label"]
    assert m["top1"](P_SINGLE, Y_SINGLE) == pytest.approx((P_SINGLE.argmax(1) == Y_SINGLE).mean(), abs=1e-12)
    assert m["balanced_accuracy"](P_SINGLE, Y_SINGLE) == pytest.approx(
        balanced_accuracy_score(Y_SINGLE, P_SINGLE.argmax(1)), abs=1e-12)
    assert m["macro_auroc"](P_SINGLE, Y_SINGLE) == pytest.approx(
        roc_auc_score(Y_SINGLE, P_SINGLE, multi_class="ovr", average="macro"), abs=1e-12)
    assert m["brier"](P_SINGLE, Y_SINGLE) == pytest.approx(
        sum(brier_score_loss(Y_SINGLE == k, P_SINGLE[:, k]) for k in range(K)), abs=1e-12)
    ref = multiclass_calibration_error(torch.tensor(P_SINGLE), torch.tensor(Y_SINGLE), num_classes=K, n_bins=15,
                                       norm="l1")
    assert m["ece"](P_SINGLE, Y_SINGLE) == pytest.approx(float(ref), abs=1e-6)


def test_multi_label_metrics_match_scikit_learn_and_torchmetrics():
    m = METRICS["multi_label"]
    hits = [float(retrieval_precision(torch.tensor(P_MULTI[i]), torch.tensor(Y_MULTI[i]).bool(), top_k=1))
            for i in range(N)]
    assert m["top1"](P_MULTI, Y_MULTI) == pytest.approx(np.mean(hits), abs=1e-12)
    assert m["macro_auroc"](P_MULTI, Y_MULTI) == pytest.approx(roc_auc_score(Y_MULTI, P_MULTI, average="macro"),
                                                               abs=1e-12)
    assert m["brier"](P_MULTI, Y_MULTI) == pytest.approx(
        np.mean([brier_score_loss(Y_MULTI[:, k], P_MULTI[:, k]) for k in range(K)]), abs=1e-12)
    ref = binary_calibration_error(torch.tensor(P_MULTI.ravel()), torch.tensor(Y_MULTI.ravel()), n_bins=15, norm="l1")
    assert m["ece"](P_MULTI, Y_MULTI) == pytest.approx(float(ref), abs=1e-6)


def test_multi_label_auroc_is_undefined_when_a_label_never_occurs():
    y = Y_MULTI.copy()
    y[:, 3] = 0
    assert np.isnan(METRICS["multi_label"]["macro_auroc"](P_MULTI, y))


def test_one_evaluator_per_task_behind_one_interface():
    assert set(EVALUATORS) == {"single_label", "multi_label"}
    single, multi = evaluator_for("single_label"), evaluator_for("multi_label")
    assert evaluator_of({"multi_label": True}) is multi and evaluator_of({"temperature": 1.0}) is single
    logits = torch.tensor(LOGITS)
    torch.testing.assert_close(single.probabilities(logits, {"temperature": 2.0}), (logits / 2).softmax(-1))
    bias = [0.1, -0.2, 0.3, 0.0]
    torch.testing.assert_close(multi.probabilities(logits, {"temperature": 2.0, "bias": bias}),
                               torch.sigmoid((logits - torch.tensor(bias, dtype=logits.dtype)) / 2))
    assert (single.indicators(torch.tensor(Y_SINGLE), K) == np.eye(K, dtype=int)[Y_SINGLE]).all()
    assert (multi.indicators(torch.tensor(Y_MULTI), K) == Y_MULTI).all()


@pytest.mark.parametrize("n", [1, 2, 7, 80, 500])
def test_ranks_and_aurocs_equal_scipy_and_scikit_learn_with_ties(n):
    """The bootstrap's rank kernel against scipy's ``rankdata``, and the AUROC on it against
    scikit-learn, on scores with many ties (rounded) and without, and a column of one class."""
    from scipy.stats import rankdata

    from domainclip.evaluation.scores import average_ranks, column_aurocs

    rng = np.random.default_rng(n)
    for scores in (rng.normal(size=(n, 3)), np.round(rng.random((n, 3)) * 4) / 4):
        np.testing.assert_array_equal(average_ranks(scores), rankdata(scores, axis=0))
        truth = (rng.random((n, 3)) < 0.4).astype(int)
        truth[:, 2] = 1  # no negatives: undefined
        got = column_aurocs(scores, truth)
        assert np.isnan(got[2])
        for k in range(2):
            if 0 < truth[:, k].sum() < n:
                assert got[k] == pytest.approx(roc_auc_score(truth[:, k], scores[:, k]), abs=1e-12)
            else:
                assert np.isnan(got[k])
