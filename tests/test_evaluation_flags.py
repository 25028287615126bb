"""Evaluation on small, real-world-sized splits says what it could not do instead of passing
silently: defaulted thresholds, a temperature stuck at its bound, calibration that hurt."""
from __future__ import annotations

import torch

from domainclip.evaluation.clinical import EvalSettings, Predictions, evaluate_model

NAMES = ["a", "b", "c"]
SETTINGS = EvalSettings(bootstrap=0)


def preds(logits, targets):
    return Predictions(torch.tensor(logits, dtype=torch.float32), torch.tensor(targets), [str(i) for i in range(len(targets))])


def test_class_absent_from_validation_flags_its_default_threshold():
    val = preds([[2, 0, 0], [0, 2, 0], [1.5, 0.2, 0], [0.1, 1.8, 0]], [0, 1, 0, 1])  # no 'c' in validation
    test = preds([[2, 0, 0], [0, 2, 0], [0, 0, 2]], [0, 1, 2])
    report = evaluate_model(val, test, NAMES, SETTINGS)
    assert report["thresholds"]["c"] == 0.5
    assert any("threshold for 'c' defaulted to 0.5" in f for f in report["flags"])


def test_confidently_wrong_validation_flags_the_temperature_bound_and_worse_ece():
    val = preds([[0, 50, 0], [0, 0, 50], [50, 0, 0]], [0, 1, 2])  # every answer wrong: NLL falls as T grows
    test = preds([[4, 0, 0], [0, 4, 0], [0, 0, 4], [4, 0, 0]], [0, 1, 2, 0])  # confident and right
    report = evaluate_model(val, test, NAMES, SETTINGS)
    assert report["temperature"] == 100.0
    assert any("hit its bound" in f for f in report["flags"])
    assert report["calibration"]["ece_after"] > report["calibration"]["ece_before"]
    assert any("made test ECE worse" in f for f in report["flags"])


def test_ordinary_evaluation_has_no_flags():
    g = torch.Generator().manual_seed(0)
    targets = torch.arange(60) % 3
    logits = torch.nn.functional.one_hot(targets, 3).float() * 1.5 + torch.randn(60, 3, generator=g)
    val = Predictions(logits[:30], targets[:30], [str(i) for i in range(30)])
    test = Predictions(logits[30:], targets[30:], [str(i) for i in range(30)])
    report = evaluate_model(val, test, NAMES, SETTINGS)
    assert not [f for f in report["flags"] if "threshold" in f or "bound" in f]
