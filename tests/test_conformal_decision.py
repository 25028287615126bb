"""Conformal sets against crepes and the finite-sample guarantee; decision curves against dcurves;
calibration slope and intercept against statsmodels."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import beta, binom

from domainclip.evaluation import conformal
from domainclip.evaluation.decision import (
    THRESHOLDS,
    calibration_slope_intercept,
    decision_curves,
    net_benefit,
    treat_all,
)


def _softmax(z):
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def _scores(rng, n, k=4, signal=1.5, group_effect=None):
    y = rng.integers(0, k, n)
    z = rng.normal(0, 1, (n, k))
    z[np.arange(n), y] += signal
    if group_effect is not None:
        z += group_effect
    return _softmax(z), y


@pytest.mark.parametrize("method", conformal.SCORES)
def test_sets_equal_crepes(method):
    crepes = pytest.importorskip("crepes")
    rng = np.random.default_rng(1)
    cal_p, cal_y = _scores(rng, 150)
    test_p, _ = _scores(rng, 300)
    alpha = 0.1
    cal_scores = conformal.class_scores(cal_p, method)[np.arange(len(cal_y)), cal_y]
    ours = conformal.prediction_sets(test_p, conformal.quantile(cal_scores, alpha), method, include_last=False)
    oracle = crepes.ConformalClassifier()
    oracle.fit(cal_scores)
    theirs = oracle.predict_set(conformal.class_scores(test_p, method), confidence=1 - alpha, smoothing=False)
    assert ours.sum() > len(test_p)  # sets are not all singletons: the check has teeth
    np.testing.assert_array_equal(ours, theirs.astype(bool))


def test_aps_sets_include_the_class_that_passes_the_threshold():
    p = np.array([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.98, 0.01, 0.01]])
    strict = conformal.prediction_sets(p, 0.7, "aps", include_last=False)
    sets = conformal.prediction_sets(p, 0.7, "aps")
    np.testing.assert_array_equal(strict, [[True, False, False], [False, True, False], [False, False, False]])
    np.testing.assert_array_equal(sets, [[True, True, False], [False, True, True], [True, False, False]])
    assert conformal.prediction_sets(p, float("inf"), "aps").all()


def test_aps_scores_are_cumulative_mass():
    p = np.array([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]])
    np.testing.assert_allclose(conformal.class_scores(p, "aps"), [[0.5, 0.8, 1.0], [1.0, 0.6, 0.9]])
    np.testing.assert_allclose(conformal.class_scores(p, "lac"), 1 - p)


@pytest.mark.parametrize("method", conformal.SCORES)
def test_marginal_coverage_over_random_splits(method):
    """Over 300 random calibration/test splits the mean coverage is >= 1 - alpha, and every split's
    coverage stays inside the binomial bounds of the finite-sample guarantee (Vovk; Angelopoulos
    and Bates 2021: coverage given the calibration set is Beta(n + 1 - l, l) distributed)."""
    alpha, n_cal, n_test, trials = 0.1, 200, 500, 300
    rng = np.random.default_rng(0)
    probs, labels = _scores(rng, n_cal + n_test, signal=1.0)
    coverages, default = [], []
    for _ in range(trials):
        perm = rng.permutation(len(labels))
        cal, test = perm[:n_cal], perm[n_cal:]
        scores = conformal.calibration_scores(probs[cal], labels[cal], [str(i) for i in cal], method)
        q = conformal.quantile(scores, alpha)
        exact = conformal.prediction_sets(probs[test], q, method, include_last=False)
        coverages.append(exact[np.arange(n_test), labels[test]].mean())
        default.append(conformal.prediction_sets(probs[test], q, method)[np.arange(n_test), labels[test]].mean())
    coverages, default = np.asarray(coverages), np.asarray(default)
    rank = int(np.ceil((n_cal + 1) * (1 - alpha)))
    assert coverages.mean() >= 1 - alpha - 3 * coverages.std() / np.sqrt(trials)
    assert coverages.mean() >= rank / (n_cal + 1) - 0.01
    # given the calibration set, coverage is Beta(rank, n + 1 - rank); the test count adds a binomial
    lo = binom.ppf(0.0005, n_test, beta.ppf(0.0005, rank, n_cal + 1 - rank)) / n_test
    hi = binom.ppf(0.9995, n_test, beta.ppf(0.9995, rank, n_cal + 1 - rank)) / n_test
    assert ((coverages >= lo) & (coverages <= hi)).mean() >= 0.99
    assert (default >= coverages).all()  # the default sets only add classes
    assert default.mean() >= 1 - alpha - 3 * default.std() / np.sqrt(trials)


def test_group_calibration_keeps_guarantee_with_correlated_groups():
    """Images within a group share a strong random effect (group sd 2.0 on the logits). Calibrating on
    one image per group keeps the mean coverage of a random image of a new group at >= 1 - alpha over
    200 random group splits (0.901 measured)."""
    alpha, rng = 0.1, np.random.default_rng(3)
    n_groups, per_group, k = 120, 10, 4
    coverages = []
    for _ in range(200):
        effect = np.repeat(rng.normal(0, 2.0, (n_groups, k)), per_group, axis=0)
        probs, labels = _scores(rng, n_groups * per_group, k, signal=2.0, group_effect=effect)
        groups = [f"g{i // per_group}" for i in range(len(labels))]
        order = rng.permutation(n_groups)
        cal_g, test_g = set(order[:60]), order[60:]
        cal = [i for i in range(len(labels)) if i // per_group in cal_g]
        scores = conformal.calibration_scores(probs[cal], labels[cal], [groups[i] for i in cal], "lac",
                                              seed=int(rng.integers(1 << 31)))
        assert len(scores) == 60  # one image per calibration group
        q = conformal.quantile(scores, alpha)
        picks = np.array([g * per_group + rng.integers(per_group) for g in test_g])  # one image of each new group
        coverages.append(conformal.prediction_sets(probs[picks], q, "lac")[np.arange(len(picks)), labels[picks]].mean())
    coverages = np.asarray(coverages)
    assert coverages.mean() >= 1 - alpha - 2.6 * coverages.std() / np.sqrt(len(coverages))


def test_conformal_evaluation_reports_coverage_and_sizes():
    rng = np.random.default_rng(4)
    val_p, val_y = _scores(rng, 200)
    test_p, test_y = _scores(rng, 200)
    groups = [f"p{i // 2}" for i in range(200)]
    out = conformal.conformal_evaluation(val_p, val_y, groups, test_p, test_y, groups, list("abcd"), 0.1, 200, 0)
    assert out["calibration"]["n_used"] == 100 and "one image per group" in out["calibration"]["unit"]
    for method in conformal.SCORES:
        r = out[method]
        assert r["coverage_ci"][0] <= r["coverage"] <= r["coverage_ci"][1]
        assert 1.0 <= r["mean_set_size"] <= 4.0 and len(r["scores"]) == 100
        assert conformal.threshold_for(r["scores"], 0.1) == r["threshold"]
    assert conformal.quantile(np.arange(5.0), 0.1) == float("inf")  # n=5 cannot promise 90%


def test_net_benefit_equals_dcurves():
    pd = pytest.importorskip("pandas")
    dcurves = pytest.importorskip("dcurves")
    rng = np.random.default_rng(5)
    n = 400
    y = (rng.random(n) < 0.3).astype(int)
    p = np.clip(0.3 + 0.35 * (y - 0.3) + rng.normal(0, 0.2, n), 0.001, 0.999)
    frame = pd.DataFrame({"outcome": y, "model": p})
    table = dcurves.dca(data=frame, outcome="outcome", modelnames=["model"], thresholds=THRESHOLDS.tolist())
    model = table[table.model == "model"].sort_values("threshold")
    everyone = table[table.model == "all"].sort_values("threshold")
    np.testing.assert_allclose(net_benefit(p, y), model.net_benefit.to_numpy(), atol=1e-6)
    np.testing.assert_allclose(treat_all(y), everyone.net_benefit.to_numpy(), atol=1e-6)
    curves = decision_curves(np.column_stack([1 - p, p]), y, ["negative", "positive"])
    np.testing.assert_allclose(curves["classes"]["positive"]["model"], model.net_benefit.to_numpy(), atol=1e-6)
    assert curves["classes"]["positive"]["useful_range"] is not None


def test_calibration_slope_and_intercept_equal_statsmodels():
    sm = pytest.importorskip("statsmodels.api")
    rng = np.random.default_rng(6)
    n = 600
    p = rng.uniform(0.02, 0.98, n)
    lp = np.log(p / (1 - p))
    y = (rng.random(n) < 1 / (1 + np.exp(-(0.3 + 0.6 * lp)))).astype(int)  # over-confident predictions
    ours = calibration_slope_intercept(p, y)
    slope_fit = sm.GLM(y, sm.add_constant(lp), family=sm.families.Binomial()).fit()
    citl_fit = sm.GLM(y, np.ones((n, 1)), family=sm.families.Binomial(), offset=lp).fit()
    assert ours["slope"] == pytest.approx(slope_fit.params[1], abs=1e-4)
    assert ours["intercept"] == pytest.approx(citl_fit.params[0], abs=1e-4)
    np.testing.assert_allclose(ours["slope_ci"], slope_fit.conf_int()[1], atol=1e-4)
    np.testing.assert_allclose(ours["intercept_ci"], citl_fit.conf_int()[0], atol=1e-4)
    assert ours["slope"] < 0.8  # over-confidence shows as a slope below 1


def test_calibration_slope_undefined_cases():
    assert calibration_slope_intercept(np.full(10, 0.3), np.zeros(10))["slope"] is None
    separated = calibration_slope_intercept(np.r_[np.full(10, 0.1), np.full(10, 0.9)], np.r_[np.zeros(10), np.ones(10)])
    assert separated["slope"] is None and "separation" in separated["note"]
