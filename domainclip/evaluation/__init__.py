"""Evaluation: class logits over splits and classification metrics.

``task_logits`` and ``classification_metrics`` load on first use (PEP 562), so importing one
light submodule (``domainclip.evaluation.aggregate`` for the start-up config checks) does not
import torchmetrics and scikit-learn before a bad value can be refused."""
from __future__ import annotations

import importlib

_LAZY = {"task_logits": "domainclip.evaluation.logits", "classification_metrics": "domainclip.evaluation.metrics"}

__all__ = ["classification_metrics", "task_logits"]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
