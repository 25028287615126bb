"""Aggregation to the clinical unit (patient, study, slide): mean probability or top-k (MI-Zero)."""
from __future__ import annotations

import torch

from domainclip.core.errors import ConfigError

GROUP_LABEL_RULES = "unanimous, or any:CLASS (a group is CLASS when any of its samples is)"


def any_rule_class(rule) -> str | None:
    """CLASS of an ``eval.group_label`` rule ``any:CLASS``; None for anything else."""
    return rule[len("any:"):] or None if isinstance(rule, str) and rule.startswith("any:") else None


def group_positive(rule: str | None, class_names: list[str]) -> int | None:
    """The class index named by an ``eval.group_label`` rule ``any:CLASS``; None for ``unanimous``."""
    if rule in (None, "unanimous"):
        return None
    name = any_rule_class(rule)
    if name not in class_names:
        raise ConfigError(f"eval.group_label={rule!r} is not allowed: expected {GROUP_LABEL_RULES}, with CLASS one of "
                          f"{', '.join(class_names)}")
    return class_names.index(name)


def aggregate_groups(probs: torch.Tensor, targets: torch.Tensor, groups: list[str], how: str = "mean",
                     topk: int = 5, positive: int | None = None) -> tuple[torch.Tensor, torch.Tensor, list[str]] | None:
    """Per group: aggregated class probabilities, the group's label and its id.

    ``mean`` averages image probabilities; ``topk`` averages, per class, the k highest image
    probabilities (MI-Zero style for slides), then renormalises. With ``positive`` (a class index,
    ``eval.group_label: any:CLASS``) a group is that class when any of its samples is, as a patient
    with one tumour slide has tumour, and it is scored by ``any_positive``. Returns ``None`` when a
    group has no single label to score against (labels vary and no rule decides).
    """
    order: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        order.setdefault(g, []).append(i)
    out_p, out_y = [], []
    for g, idx in order.items():
        labels, pooled = targets[idx], pool(probs[idx], how, topk)
        if positive is not None and bool((labels == positive).any()):
            label = torch.tensor(positive, dtype=labels.dtype)
        elif bool((labels == labels[0]).all()):
            label = labels[0]
        else:
            return None
        out_p.append(pooled if positive is None else any_positive(probs[idx], pooled, positive))
        out_y.append(label)
    return torch.stack(out_p), torch.stack(out_y), list(order)


def any_positive(probs: torch.Tensor, pooled: torch.Tensor, positive: int) -> torch.Tensor:
    """A group's probabilities under the any-sample rule: ``positive`` gets its samples' highest
    probability of it; the other classes share the rest in their pooled proportions."""
    top = probs[:, positive].max()
    rest = pooled.clone()
    rest[positive] = 0
    rest = rest / rest.sum().clamp_min(torch.finfo(rest.dtype).tiny) * (1 - top)
    rest[positive] = top
    return rest


def pool(probs: torch.Tensor, how: str = "mean", topk: int = 5) -> torch.Tensor:
    """One probability row for a set of images of one unit (tiles of a slide, chips of a scene)."""
    if how == "topk":
        p = probs.topk(min(topk, len(probs)), dim=0).values.mean(0)
        return p / p.sum()
    if how == "mean":
        return probs.mean(0)
    raise ValueError(f"unknown aggregation {how!r}; allowed: mean, topk")
