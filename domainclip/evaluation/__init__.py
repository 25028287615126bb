"""Evaluation: class logits over splits and classification metrics."""
from domainclip.evaluation.logits import task_logits
from domainclip.evaluation.metrics import classification_metrics

__all__ = ["classification_metrics", "task_logits"]
