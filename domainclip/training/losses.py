"""Contrastive losses (open_clip conventions: L2-normalised features, exponentiated scale, mean
over the batch), registered by name: ``clip``, ``siglip``, ``label_aware``.

Under ``torch.distributed`` every loss gathers features (with gradients), labels and validity
masks from all ranks, so it is the loss of the global batch: with ``local_loss=False`` each rank
computes the full global matrix; with ``local_loss=True`` (open_clip's option) each rank computes
its own rows against all columns, and averaging over ranks (as DDP does with gradients) gives the
same value and gradients. ``chunks`` bounds SigLIP's logits memory by scoring one rank's texts at a
time. ``valid`` (bool per sample) drops padding samples, which the distributed sampler adds so that
every rank has equal batches while each real sample is seen once per epoch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from domainclip.core.distributed import gather_no_grad, gather_with_grad, world
from domainclip.core.registry import Registry

LOSSES: Registry = Registry("loss")


@dataclass
class Pairs:
    """This rank's query rows against every valid column of the global batch."""

    q_img: torch.Tensor
    q_txt: torch.Tensor
    all_img: torch.Tensor
    all_txt: torch.Tensor
    targets: torch.Tensor  # column index of each query row's own pair
    labels: torch.Tensor | None  # labels of the valid columns
    denominator: float  # divide the summed row losses by this to get the mean loss

    def query_labels(self) -> torch.Tensor:
        return self.labels[self.targets]


def global_pairs(img, txt, labels=None, valid=None, local_loss: bool = False) -> Pairs:
    """Gather the global batch and pick this rank's query rows (all rows unless ``local_loss``)."""
    rank, size = world()
    if valid is None:
        valid = torch.ones(img.shape[0], dtype=torch.bool, device=img.device)
    all_valid = gather_no_grad(valid)
    keep = all_valid.nonzero().squeeze(1)
    all_img, all_txt = gather_with_grad(img)[keep], gather_with_grad(txt)[keep]
    all_labels = gather_no_grad(labels)[keep] if labels is not None else None
    n_valid = max(int(keep.numel()), 1)
    if local_loss and size > 1:
        column = torch.cumsum(all_valid.long(), 0) - 1  # global position -> column among valid ones
        mine = torch.arange(rank * img.shape[0], (rank + 1) * img.shape[0], device=img.device)[valid]
        return Pairs(img[valid], txt[valid], all_img, all_txt, column[mine], all_labels, n_valid / size)
    targets = torch.arange(all_img.shape[0], device=img.device)
    return Pairs(all_img, all_txt, all_img, all_txt, targets, all_labels, float(n_valid))


@LOSSES.register("clip")
def clip_loss(img, txt, logit_scale, labels=None, logit_bias=None, valid=None, local_loss: bool = False) -> torch.Tensor:
    """Symmetric InfoNCE: cross-entropy over image->text and text->image logits."""
    p = global_pairs(img, txt, None, valid, local_loss)
    i2t = F.cross_entropy(logit_scale * p.q_img @ p.all_txt.t(), p.targets, reduction="sum")
    t2i = F.cross_entropy(logit_scale * p.q_txt @ p.all_img.t(), p.targets, reduction="sum")
    return (i2t + t2i) / (2 * p.denominator)


@LOSSES.register("label_aware")
def label_aware_loss(img, txt, logit_scale, labels=None, logit_bias=None, valid=None,
                     local_loss: bool = False) -> torch.Tensor:
    """Multi-positive InfoNCE: pairs with the same label are positives, never negatives.

    With all labels distinct this equals ``clip_loss``.
    """
    if labels is None:
        return clip_loss(img, txt, logit_scale, valid=valid, local_loss=local_loss)
    p = global_pairs(img, txt, labels, valid, local_loss)
    pos = (p.query_labels()[:, None] == p.labels[None, :]).to(img.dtype)
    pos = pos / pos.sum(1, keepdim=True)
    i2t = -(pos * F.log_softmax(logit_scale * p.q_img @ p.all_txt.t(), dim=1)).sum()
    t2i = -(pos * F.log_softmax(logit_scale * p.q_txt @ p.all_img.t(), dim=1)).sum()
    return (i2t + t2i) / (2 * p.denominator)


@LOSSES.register("siglip")
def siglip_loss(img, txt, logit_scale, labels=None, logit_bias=None, valid=None, local_loss: bool = False,
                chunks: bool = True) -> torch.Tensor:
    """Pairwise sigmoid loss (SigLIP): -(1/N) sum_i sum_j log sigmoid(z_ij (t x_i.y_j + b)),
    z_ij = 1 for matching pairs, -1 otherwise. With ``chunks`` the text columns are scored one
    rank's block at a time, so the logits never exceed (rows x local batch)."""
    p = global_pairs(img, txt, None, valid, local_loss)
    bias = logit_bias if logit_bias is not None else 0.0
    _, size = world()
    step = max(txt.shape[0], 1) if chunks and size > 1 else max(p.all_txt.shape[0], 1)
    total = p.q_img.new_zeros(())
    for start in range(0, p.all_txt.shape[0], step):
        block = p.all_txt[start : start + step]
        logits = logit_scale * p.q_img @ block.t() + bias
        cols = torch.arange(start, start + block.shape[0], device=img.device)
        signs = 2 * (p.targets[:, None] == cols[None, :]).to(logits.dtype) - 1
        total = total + F.logsigmoid(signs * logits).sum()
    return -total / p.denominator


def global_mean(per_sample: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Mean of the valid per-sample losses over the global batch, scaled so that DDP's gradient
    averaging over ranks yields exactly that mean even when ranks hold different valid counts."""
    if valid is None:
        valid = torch.ones(per_sample.shape[0], dtype=torch.bool, device=per_sample.device)
    _, size = world()
    n_valid = int(gather_no_grad(valid.sum().reshape(1)).sum())
    return (per_sample * valid.to(per_sample.dtype)).sum() / max(n_valid / size, 1e-12)
