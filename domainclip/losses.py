"""Contrastive losses (open_clip conventions: L2-normalised features, exponentiated scale, mean
over the batch), registered by name: ``clip``, ``siglip``, ``label_aware``.

Under ``torch.distributed`` every loss gathers features (with gradients) and labels from all
ranks, so it is the loss of the global batch: with ``local_loss=False`` each rank computes the full
global matrix; with ``local_loss=True`` (open_clip's option) each rank computes its own rows
against all columns, and averaging over ranks (as DDP does with gradients) gives the same value
and gradients. ``chunks`` bounds SigLIP's logits memory by scoring one rank's texts at a time.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from domainclip.distributed import gather_no_grad, gather_with_grad, world
from domainclip.registry import Registry

LOSSES: Registry = Registry("loss")


def _rows(img, txt, labels, local_loss: bool):
    """Query rows and all columns for this rank, with the global index of each query row."""
    rank, size = world()
    all_img, all_txt = gather_with_grad(img), gather_with_grad(txt)
    all_labels = gather_no_grad(labels) if labels is not None else None
    if local_loss and size > 1:
        offset = rank * img.shape[0]
        return img, txt, all_img, all_txt, torch.arange(offset, offset + img.shape[0], device=img.device), all_labels
    return all_img, all_txt, all_img, all_txt, torch.arange(all_img.shape[0], device=img.device), all_labels


@LOSSES.register("clip")
def clip_loss(img, txt, logit_scale, labels=None, logit_bias=None, local_loss: bool = False) -> torch.Tensor:
    """Symmetric InfoNCE: cross-entropy over image->text and text->image logits."""
    q_img, q_txt, all_img, all_txt, target, _ = _rows(img, txt, None, local_loss)
    i2t = logit_scale * q_img @ all_txt.t()
    t2i = logit_scale * q_txt @ all_img.t()
    return (F.cross_entropy(i2t, target) + F.cross_entropy(t2i, target)) / 2


@LOSSES.register("label_aware")
def label_aware_loss(img, txt, logit_scale, labels=None, logit_bias=None, local_loss: bool = False) -> torch.Tensor:
    """Multi-positive InfoNCE: pairs with the same label are positives, never negatives.

    With all labels distinct this equals ``clip_loss``.
    """
    if labels is None:
        return clip_loss(img, txt, logit_scale, local_loss=local_loss)
    q_img, q_txt, all_img, all_txt, rows, all_labels = _rows(img, txt, labels, local_loss)
    pos = (all_labels[rows][:, None] == all_labels[None, :]).to(img.dtype)
    pos = pos / pos.sum(1, keepdim=True)
    i2t = -(pos * F.log_softmax(logit_scale * q_img @ all_txt.t(), dim=1)).sum(1).mean()
    t2i = -(pos * F.log_softmax(logit_scale * q_txt @ all_img.t(), dim=1)).sum(1).mean()
    return (i2t + t2i) / 2


@LOSSES.register("siglip")
def siglip_loss(img, txt, logit_scale, labels=None, logit_bias=None, local_loss: bool = False,
                chunks: bool = True) -> torch.Tensor:
    """Pairwise sigmoid loss (SigLIP): -(1/N) sum_i sum_j log sigmoid(z_ij (t x_i.y_j + b)),
    z_ij = 1 for matching pairs, -1 otherwise. With ``chunks`` the text columns are scored one
    rank's block at a time, so the logits never exceed (rows x local batch)."""
    q_img, _, _, all_txt, rows, _ = _rows(img, txt, None, local_loss)
    bias = logit_bias if logit_bias is not None else 0.0
    _, size = world()
    step = txt.shape[0] if chunks and size > 1 else all_txt.shape[0]
    total = q_img.new_zeros(())
    for start in range(0, all_txt.shape[0], step):
        block = all_txt[start : start + step]
        logits = logit_scale * q_img @ block.t() + bias
        cols = torch.arange(start, start + block.shape[0], device=img.device)
        signs = 2 * (rows[:, None] == cols[None, :]).to(logits.dtype) - 1
        total = total + F.logsigmoid(signs * logits).sum()
    return -total / q_img.shape[0]
