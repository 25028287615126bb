"""Periodic evaluation during training, as a Lightning callback."""
from __future__ import annotations

import pytorch_lightning as pl

from domainclip.evaluation.logits import task_logits
from domainclip.evaluation.metrics import classification_metrics


class PeriodicEvaluation(pl.Callback):
    """Every ``every_n_epochs`` epochs, log validation top-1, balanced accuracy and macro AUROC of
    the template zero-shot classifier (``periodic/zero_shot_*``) and of the method (``periodic/method_*``)."""

    def __init__(self, every_n_epochs: int = 1):
        self.every_n_epochs = max(1, int(every_n_epochs))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs or trainer.datamodule is None:
            return
        if trainer.global_rank != 0:  # every rank would score the same full val set: rank 0 only
            return
        loader = trainer.datamodule.val_dataloader()
        for prefix, zero_shot in (("zero_shot", True), ("method", False)):
            logits, targets = task_logits(pl_module, loader, zero_shot=zero_shot)
            m = classification_metrics(logits, targets, pl_module.class_names)
            values = {f"periodic/{prefix}_{k}": m[k] for k in ("top1", "balanced_accuracy", "macro_auroc") if k in m}
            pl_module.log_dict(values, on_epoch=True, rank_zero_only=True)
