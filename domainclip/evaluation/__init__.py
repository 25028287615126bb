"""Evaluation: zero-shot classification and metrics."""
from domainclip.evaluation.metrics import classification_metrics
from domainclip.evaluation.zero_shot import class_embeddings, zero_shot_logits

__all__ = ["class_embeddings", "classification_metrics", "zero_shot_logits"]
