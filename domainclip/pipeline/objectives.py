"""How the pipeline trains a method: one named objective per ``Method.training``.

- ``gradient``: Lightning ``Trainer.fit`` of the task (LoRA, prompts, VPT, full fine-tuning);
- ``closed_form``: features of the train and val splits, then the method's closed-form fit
  (linear probe);
- ``weight_sweep``: the inner method's objective, then WiSE-FT's interpolation towards zero-shot,
  with the reference card (a pipeline input) scored at every weight;
- ``none``: nothing to train (zero-shot).

A method never drives a trainer or reads a data module: these functions do.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from domainclip.core.registry import Registry
from domainclip.data.datamodule import SplitDataModule
from domainclip.evaluation import classification_metrics, task_logits
from domainclip.methods.base import Method
from domainclip.pipeline.reference import ReferenceZeroShot
from domainclip.training.task import ContrastiveTask

OBJECTIVES: Registry = Registry("objective")


@dataclass
class Adaptation:
    """What an objective works on: the task (wrapping the model), the data, how to build a
    trainer, the checkpoint to resume from, and WiSE-FT's reference card (if any)."""

    task: ContrastiveTask
    datamodule: SplitDataModule
    make_trainer: Callable
    resume_ckpt: str | None = None
    reference: ReferenceZeroShot | None = None


def adapt(ctx: Adaptation) -> dict:
    """Train the task's method with its objective; returns the report for metrics.json."""
    method = ctx.task.method
    return OBJECTIVES.get(method.training)(ctx, method)


@OBJECTIVES.register("none")
def no_training(ctx: Adaptation, method: Method) -> dict:
    """Zero-shot: nothing to train."""
    return {}


@OBJECTIVES.register("gradient")
def gradient_steps(ctx: Adaptation, method: Method) -> dict:
    """Lightning ``Trainer.fit``, resumed from ``ctx.resume_ckpt`` when set."""
    trainer = ctx.make_trainer()
    trainer.fit(ctx.task, datamodule=ctx.datamodule, ckpt_path=ctx.resume_ckpt)
    return {}


@torch.inference_mode()
def split_features(model, loader) -> tuple[np.ndarray, np.ndarray]:
    """Normalised backbone features and labels of every batch of ``loader``."""
    feats, labels = [], []
    for batch in loader:
        f = batch["features"] if "features" in batch else model.image_features(batch["pixels"])
        feats.append(F.normalize(f.float(), dim=-1))
        labels.append(batch["label"])
    return torch.cat(feats).numpy(), torch.cat(labels).numpy()


@OBJECTIVES.register("closed_form")
def closed_form(ctx: Adaptation, method: Method) -> dict:
    """Features of train and val with the frozen model, then the method's closed-form fit."""
    model = ctx.task.model.eval()
    train = split_features(model, ctx.datamodule.eval_loader("train"))
    val = split_features(model, ctx.datamodule.eval_loader("val"))
    return method.fit_probe(model, train, val)


def _interpolate(params: dict[str, torch.nn.Parameter], theta0: dict, theta1: dict, alpha: float) -> None:
    with torch.no_grad():
        for name, p in params.items():
            p.copy_((1 - alpha) * theta0[name] + alpha * theta1[name])


@OBJECTIVES.register("weight_sweep")
def weight_sweep(ctx: Adaptation, method: Method) -> dict:
    """WiSE-FT: train the inner method, then for each alpha set the trained tensors to
    ``(1 - a) * zero_shot + a * fine_tuned``; report val/test top-1 (and the reference card's
    zero-shot top-1) per alpha and keep the best alpha on val."""
    task = ctx.task
    params = {n: p for n, p in task.named_parameters() if p.requires_grad}
    theta0 = {n: p.detach().clone() for n, p in params.items()}
    inner_report = OBJECTIVES.get(method.inner.training)(ctx, method.inner)
    theta1 = {n: p.detach().clone() for n, p in params.items()}
    sweep = {}
    for alpha in method.alphas:
        _interpolate(params, theta0, theta1, alpha)
        row = {}
        for split in ("val", "test"):
            logits, targets = task_logits(task, ctx.datamodule.eval_loader(split))
            row[split] = classification_metrics(logits, targets, task.class_names)["top1"]
        if ctx.reference is not None:
            row["reference_zero_shot"] = ctx.reference.top1(task.tower)
        sweep[str(alpha)] = row
    best = max(method.alphas, key=lambda a: (sweep[str(a)]["val"], a))
    _interpolate(params, theta0, theta1, best)
    report = {"alpha": best, "sweep": sweep, "inner": inner_report}
    if ctx.reference is not None:
        zs = sweep[str(method.alphas[0])]["reference_zero_shot"] if method.alphas[0] == 0 else None
        report["retained_zero_shot"] = {a: (r["reference_zero_shot"] / zs if zs else None) for a, r in sweep.items()}
    return report
