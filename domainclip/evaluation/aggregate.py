"""Aggregation to the clinical unit (patient, study, slide): mean probability or top-k (MI-Zero)."""
from __future__ import annotations

import torch


def aggregate_groups(probs: torch.Tensor, targets: torch.Tensor, groups: list[str], how: str = "mean",
                     topk: int = 5) -> tuple[torch.Tensor, torch.Tensor, list[str]] | None:
    """Per group: aggregated class probabilities, the group's label and its id.

    ``mean`` averages image probabilities; ``topk`` averages, per class, the k highest image
    probabilities (MI-Zero style for slides), then renormalises. Returns ``None`` when labels vary
    within a group (the group has no single label to score against).
    """
    order: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        order.setdefault(g, []).append(i)
    out_p, out_y = [], []
    for g, idx in order.items():
        labels = targets[idx]
        if not bool((labels == labels[0]).all()):
            return None
        out_p.append(pool(probs[idx], how, topk))
        out_y.append(labels[0])
    return torch.stack(out_p), torch.stack(out_y), list(order)


def pool(probs: torch.Tensor, how: str = "mean", topk: int = 5) -> torch.Tensor:
    """One probability row for a set of images of one unit (tiles of a slide, chips of a scene)."""
    if how == "topk":
        p = probs.topk(min(topk, len(probs)), dim=0).values.mean(0)
        return p / p.sum()
    if how == "mean":
        return probs.mean(0)
    raise ValueError(f"unknown aggregation {how!r}; allowed: mean, topk")
