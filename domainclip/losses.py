"""Contrastive losses (open_clip conventions: L2-normalised features, exponentiated scale,
mean over the batch). Registered by name: ``clip``, ``siglip``, ``label_aware``."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from domainclip.registry import Registry

LOSSES: Registry = Registry("loss")


@LOSSES.register("clip")
def clip_loss(img, txt, logit_scale, labels=None, logit_bias=None) -> torch.Tensor:
    """Symmetric InfoNCE: cross-entropy over image->text and text->image logits."""
    logits = logit_scale * img @ txt.t()
    target = torch.arange(img.shape[0], device=img.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


@LOSSES.register("siglip")
def siglip_loss(img, txt, logit_scale, labels=None, logit_bias=None) -> torch.Tensor:
    """Pairwise sigmoid loss (SigLIP): -mean over images of sum_j log sigmoid(z_ij * (t x.y + b))."""
    logits = logit_scale * img @ txt.t() + (logit_bias if logit_bias is not None else 0.0)
    signs = 2 * torch.eye(img.shape[0], device=img.device, dtype=logits.dtype) - 1
    return -F.logsigmoid(signs * logits).sum() / img.shape[0]


@LOSSES.register("label_aware")
def label_aware_loss(img, txt, logit_scale, labels=None, logit_bias=None) -> torch.Tensor:
    """Multi-positive InfoNCE: pairs with the same label are positives, never negatives.

    With all labels distinct this equals ``clip_loss``.
    """
    if labels is None:
        return clip_loss(img, txt, logit_scale)
    logits = logit_scale * img @ txt.t()
    pos = (labels[:, None] == labels[None, :]).to(logits.dtype)
    pos = pos / pos.sum(1, keepdim=True)
    i2t = -(pos * F.log_softmax(logits, dim=1)).sum(1).mean()
    t2i = -(pos * F.log_softmax(logits.t(), dim=1)).sum(1).mean()
    return (i2t + t2i) / 2
