"""Single-label and multi-label evaluation behind one interface.

A run, ``python -m domainclip.evaluate``, external sites, the report and a bundle's predictor ask
``evaluator_for(task)`` (or ``evaluator_of(clinical_report)``) instead of checking a multi-label
flag themselves. Each evaluator locks its calibration and operating points on validation, reports
test with the registry's metrics (``scores.METRICS[task]``), re-applies a locked report to another
site, and turns logits into the calibrated probabilities the report and bundle show.
"""
from __future__ import annotations

import numpy as np
import torch

from domainclip.evaluation.clinical import EvalSettings, Predictions, compare, evaluate_model
from domainclip.evaluation.metrics import classification_metrics, multilabel_metrics
from domainclip.evaluation.multilabel import compare_multilabel, evaluate_multilabel, probabilities


class Evaluator:
    """The interface: one instance per task kind (``single_label``, ``multi_label``)."""

    task = "base"

    def split_metrics(self, logits: torch.Tensor, targets: torch.Tensor, class_names: list[str]) -> dict:
        """Point metrics of one split (torchmetrics): top-1, AUROC, ..."""
        raise NotImplementedError

    def clinical(self, val: Predictions | None, test: Predictions, class_names: list[str], settings: EvalSettings,
                 locked_from: dict | None = None) -> dict:
        """The clinical report of test, with calibration and thresholds locked on ``val``, or
        taken unchanged from ``locked_from`` (another report: the development site's)."""
        raise NotImplementedError

    def compare(self, before: Predictions, after: Predictions, settings: EvalSettings) -> dict:
        """Paired group bootstrap of after minus before on the same images."""
        raise NotImplementedError

    def probabilities(self, logits: torch.Tensor, clinical: dict) -> torch.Tensor:
        """Calibrated probabilities with the report's locked calibration."""
        raise NotImplementedError

    def indicators(self, targets: torch.Tensor, n_classes: int) -> np.ndarray:
        """(N, K) 0/1 targets for per-class figures."""
        raise NotImplementedError


class SingleLabel(Evaluator):
    """Softmax at a temperature fitted on val; one-vs-rest thresholds; group aggregation; sets."""

    task = "single_label"

    def split_metrics(self, logits, targets, class_names):
        return classification_metrics(logits, targets, class_names)

    def clinical(self, val, test, class_names, settings, locked_from=None):
        if locked_from is None:
            return evaluate_model(val, test, class_names, settings)
        conformal = locked_from.get("conformal")
        sets = None if not conformal else {"alpha": conformal["alpha"], **{
            m: {"threshold": conformal[m]["threshold"]} for m in ("lac", "aps")}}
        return evaluate_model(val, test, class_names, settings, (locked_from["temperature"], locked_from["thresholds"]),
                              sets)

    def compare(self, before, after, settings):
        return compare(before, after, settings)

    def probabilities(self, logits, clinical):
        return (logits / float(clinical.get("temperature", 1.0))).softmax(-1)

    def indicators(self, targets, n_classes):
        return np.eye(n_classes, dtype=int)[targets.numpy()]


class MultiLabel(Evaluator):
    """Per-class sigmoids with a shared temperature and per-class biases fitted on val."""

    task = "multi_label"

    def split_metrics(self, logits, targets, class_names):
        return multilabel_metrics(logits, targets, class_names)

    def clinical(self, val, test, class_names, settings, locked_from=None):
        locked = None if locked_from is None else (
            locked_from["temperature"], locked_from["thresholds"], locked_from["bias"])
        return evaluate_multilabel(val, test, class_names, settings, locked)

    def compare(self, before, after, settings):
        return compare_multilabel(before, after, settings)

    def probabilities(self, logits, clinical):
        return probabilities(logits, clinical["temperature"], clinical["bias"])

    def indicators(self, targets, n_classes):
        return targets.numpy().astype(int)


EVALUATORS: dict[str, Evaluator] = {e.task: e for e in (SingleLabel(), MultiLabel())}


def evaluator_for(task: str) -> Evaluator:
    """The evaluator of a card's ``task``."""
    return EVALUATORS[task]


def evaluator_of(clinical: dict) -> Evaluator:
    """The evaluator that wrote a clinical report."""
    return EVALUATORS["multi_label" if clinical.get("multi_label") else "single_label"]
