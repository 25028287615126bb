"""The pointing game (Zhang et al., "Top-down neural attention by excitation backprop", ECCV 2016):
a map points at a finding when its maximum falls inside the finding's ground-truth mask."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def pointing_hits(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """(N,) booleans: whether the maximum of each (H, W) map in ``maps`` (N, H, W) lies inside
    its mask ``masks`` (N, h, w), which is resized to the map's size (nearest) when it differs.
    Ties go to the first maximum in row-major order, so the answer is deterministic."""
    if masks.shape[-2:] != maps.shape[-2:]:
        masks = F.interpolate(masks[:, None].float(), size=maps.shape[-2:], mode="nearest")[:, 0]
    peak = maps.flatten(1).argmax(dim=1)
    return masks.flatten(1).bool().gather(1, peak[:, None])[:, 0]
