"""Clinical-grade evaluation of one model on val (for locking) and test (for reporting).

Temperature and operating points are fitted on validation only and applied unchanged to test;
the test split is never used to choose anything. Headline metrics carry group-bootstrap CIs.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torchmetrics.functional.classification import (
    multiclass_auroc,
    multiclass_average_precision,
    multiclass_cohen_kappa,
    multiclass_confusion_matrix,
)

from domainclip.evaluation.aggregate import aggregate_groups, group_positive
from domainclip.evaluation.bootstrap import metrics_with_cis, paired_bootstrap
from domainclip.evaluation.calibration import (
    brier_score,
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
)
from domainclip.evaluation.conformal import conformal_evaluation, locked_conformal
from domainclip.evaluation.decision import decision_curves, recalibration
from domainclip.evaluation.metrics import classification_metrics
from domainclip.evaluation.operating import lock_thresholds, operating_metrics
from domainclip.evaluation.scores import evaluated_classes, headline_for


@dataclass
class Predictions:
    """Logits, targets and group ids (plus per-sample extra columns) of one split."""

    logits: torch.Tensor
    targets: torch.Tensor
    groups: list[str]
    extra: list[dict] = field(default_factory=list)


@dataclass
class EvalSettings:
    """``eval`` config: bootstrap, calibration, operating points, aggregation, subgroups."""

    bootstrap: int = 1000
    seed: int = 0
    calibrate: bool = True
    operating_point: str = "youden"
    target_sensitivity: float = 0.95
    aggregate: str = "mean"
    topk: int = 5
    group_label: str = "unanimous"
    subgroups: list[str] = field(default_factory=list)
    conformal_alpha: float = 0.1


def lock_on_validation(val: Predictions, class_names: list[str], s: EvalSettings) -> tuple[float, dict]:
    """Temperature and per-class thresholds from the validation split alone."""
    temperature = fit_temperature(val.logits, val.targets) if s.calibrate else 1.0
    probs = (val.logits / temperature).softmax(-1)
    return temperature, lock_thresholds(probs, val.targets, class_names, s.operating_point, s.target_sensitivity)


def with_cis(probs: torch.Tensor, targets: torch.Tensor, groups: list[str], s: EvalSettings) -> dict:
    """Headline metrics with group-bootstrap 95% CIs (macro metrics over the classes the split
    evaluates, named in ``macro_over`` when a class is absent)."""
    p, y = probs.numpy().astype(np.float64), targets.numpy()
    out = metrics_with_cis(headline_for(y, p.shape[1]), p, y, groups, s.bootstrap, s.seed)
    classes = evaluated_classes(y, p.shape[1])
    if 0 < len(classes) < p.shape[1]:
        out["macro_over"] = classes
    return out


def detailed(probs: torch.Tensor, targets: torch.Tensor, class_names: list[str]) -> dict:
    """Per-class AUROC/AUPRC, kappa, confusion matrix and the torchmetrics summary."""
    k = len(class_names)
    out = classification_metrics(probs.log(), targets, class_names)
    out["cohen_kappa"] = float(multiclass_cohen_kappa(probs, targets, num_classes=k))
    out["confusion_matrix"] = multiclass_confusion_matrix(probs, targets, num_classes=k).tolist()
    present = evaluated_classes(targets.numpy(), k)
    if present:
        auroc = multiclass_auroc(probs, targets, num_classes=k, average="none")
        auprc = multiclass_average_precision(probs, targets, num_classes=k, average="none")
        out["per_class"] = {c: {"auroc": float(a), "auprc": float(b)} if i in present else
                            {"auroc": float("nan"), "auprc": float("nan"), "not_evaluated": "no sample in this split"}
                            for i, (c, a, b) in enumerate(zip(class_names, auroc, auprc))}
        out["macro_auprc"] = float(auprc[present].mean())
    return out


def subgroup_metrics(probs, test: Predictions, s: EvalSettings) -> dict:
    """Per value of each subgroup column: n, top-1 and macro AUROC with CIs."""
    out = {}
    for column in s.subgroups:
        values = [str(e.get(column, "")) for e in test.extra]
        for value in sorted(set(values)):
            idx = [i for i, v in enumerate(values) if v == value]
            sub = with_cis(probs[idx], test.targets[idx], [test.groups[i] for i in idx], s)
            out.setdefault(column, {})[value] = {"n": len(idx), **sub}
    return out


def evaluate_model(val: Predictions, test: Predictions, class_names: list[str], s: EvalSettings,
                   locked: tuple[float, dict] | None = None, locked_sets: dict | None = None) -> dict:
    """Full report for one model. ``locked`` (temperature, thresholds) and ``locked_sets`` (the
    conformal thresholds) skip refitting, as when the model is evaluated on another site's data."""
    temperature, thresholds = locked or lock_on_validation(val, class_names, s)
    raw = test.logits.softmax(-1)
    probs = (test.logits / temperature).softmax(-1)
    p64, y = probs.numpy().astype(float), test.targets.numpy()
    report = {
        "n": len(test.targets), "temperature": temperature, "thresholds": thresholds,
        "image_level": {**detailed(probs, test.targets, class_names), **with_cis(probs, test.targets, test.groups, s)},
        "calibration": {"ece_before": expected_calibration_error(raw, test.targets),
                        "ece_after": expected_calibration_error(probs, test.targets),
                        "brier_before": brier_score(raw, test.targets), "brier_after": brier_score(probs, test.targets),
                        "reliability_before": reliability_bins(raw, test.targets),
                        "reliability_after": reliability_bins(probs, test.targets)},
        "operating_points": operating_metrics(probs, test.targets, thresholds),
        "subgroups": subgroup_metrics(probs, test, s),
        "decision_curves": decision_curves(p64, y, class_names),
        "recalibration": recalibration(p64, y, class_names),
        "conformal": conformal_sets(val, test, raw, class_names, s, locked_sets),
    }
    report["flags"] = evaluation_flags(val, temperature, report["calibration"], class_names, locked is not None)
    unfitted = [] if locked or val is None else [c for k, c in enumerate(class_names)
                                                 if not bool((val.targets == k).any())]
    if unfitted:
        report["thresholds_not_fitted"] = {c: "no validation sample: the threshold is the 0.5 default" for c in unfitted}
    grouped = aggregate_groups(probs, test.targets, test.groups, s.aggregate, s.topk,
                               group_positive(s.group_label, class_names))
    if grouped is None:
        report["group_level"] = {"note": "labels vary within groups: no single group label to score "
                                         "(eval.group_label=any:CLASS labels a group by any of its samples)"}
    else:
        gp, gy, ids = grouped
        report["group_level"] = {"n": len(ids), "aggregate": s.aggregate, "group_label": s.group_label,
                                 **with_cis(gp, gy, ids, s)}
    return report


def conformal_sets(val: Predictions | None, test: Predictions, raw_test: torch.Tensor, class_names: list[str],
                   s: EvalSettings, locked_sets: dict | None) -> dict | None:
    """Conformal prediction sets on test, calibrated on val (or with ``locked_sets``). Scores use
    the model's own softmax, before temperature scaling: the temperature is fitted on the same
    validation split, and a score function fitted on the calibration data would void the guarantee."""
    y = test.targets.numpy()
    if locked_sets is not None:
        return locked_conformal(raw_test.numpy().astype(float), y, test.groups, class_names, locked_sets,
                                s.bootstrap, s.seed)
    if val is None:
        return None
    return conformal_evaluation(val.logits.softmax(-1).numpy().astype(float), val.targets.numpy(), val.groups,
                                raw_test.numpy().astype(float), y, test.groups, class_names, s.conformal_alpha,
                                s.bootstrap, s.seed)


def compare(before: Predictions, after: Predictions, s: EvalSettings) -> dict:
    """Paired group bootstrap of after - before on the same test samples, for each headline metric."""
    pb, pa = before.logits.softmax(-1).numpy(), after.logits.softmax(-1).numpy()
    y = after.targets.numpy()
    out = {}
    headline = headline_for(y, pa.shape[1])
    for name in ("top1", "balanced_accuracy", "macro_auroc"):
        fn = headline[name]
        out[name] = paired_bootstrap(lambda idx: fn(pb[idx], y[idx]), lambda idx: fn(pa[idx], y[idx]),
                                     after.groups, max(s.bootstrap, 1), s.seed)
    return out


TEMPERATURE_BOUNDS = (0.01, 100.0)  # fit_temperature's clamp


def evaluation_flags(val: Predictions | None, temperature: float, calibration: dict, class_names: list[str],
                     locked: bool) -> list[str]:
    """What a reviewer must know that the numbers alone hide: thresholds that defaulted because a
    class was absent from validation, a temperature stuck at its bound, calibration that made the
    test ECE worse."""
    flags = []
    if val is not None and not locked:
        y = val.targets.numpy()
        for k, c in enumerate(class_names):
            if (y == k).all() or not (y == k).any():
                flags.append(f"threshold for '{c}' defaulted to 0.5: validation has no {c} sample (or only those)")
    if any(abs(temperature - b) / b < 1e-3 for b in TEMPERATURE_BOUNDS):
        flags.append(f"temperature {temperature:g} hit its bound {TEMPERATURE_BOUNDS}: calibration did not converge; "
                     "validation may be too small or separable")
    if calibration["ece_after"] > calibration["ece_before"] + 1e-9:
        flags.append(f"calibration made test ECE worse ({calibration['ece_before']:.3f} -> {calibration['ece_after']:.3f});"
                     " the validation split may be too small to fit a temperature")
    return flags
