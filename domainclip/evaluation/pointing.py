"""The pointing game (Zhang et al., "Top-down neural attention by excitation backprop", ECCV 2016):
a map points at a finding when its maximum falls inside the finding's ground-truth mask."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def pointing_hits(maps: torch.Tensor, masks: torch.Tensor, tolerance: int = 0) -> torch.Tensor:
    """(N,) booleans: whether the maximum of each (H, W) map in ``maps`` (N, H, W) lies inside
    its mask ``masks`` (N, h, w), which is resized to the map's size (nearest) when it differs,
    or within ``tolerance`` pixels of it (the original game allows 15 pixels). Ties go to the
    first maximum in row-major order, so the answer is deterministic."""
    masks = masks.float()
    if masks.shape[-2:] != maps.shape[-2:]:
        masks = F.interpolate(masks[:, None], size=maps.shape[-2:], mode="nearest")[:, 0]
    if tolerance > 0:  # dilate by a disk of radius ``tolerance``
        grid = torch.arange(-tolerance, tolerance + 1, dtype=torch.float32)
        disk = ((grid[:, None] ** 2 + grid[None] ** 2) <= tolerance**2).float()[None, None]
        masks = F.conv2d(masks[:, None], disk, padding=tolerance)[:, 0]
    peak = maps.flatten(1).argmax(dim=1)
    return (masks.flatten(1) > 0).gather(1, peak[:, None])[:, 0]


@torch.inference_mode()
def pointing_rate(model, pixels: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor,
                  zero_shot: bool = False, batch_size: int = 32, tolerance: int = 0) -> float:
    """Share of images whose similarity map for their labelled class (``labels``) peaks inside its
    mask (or within ``tolerance`` pixels): ``model`` is an ``AdaptedModel``; ``zero_shot`` maps
    with its template prompts."""
    hits = []
    for start in range(0, len(pixels), batch_size):
        stop = start + batch_size
        maps = model.similarity_maps(pixels[start:stop], zero_shot=zero_shot)
        own = maps[torch.arange(len(maps)), labels[start:stop]]
        hits.append(pointing_hits(own, masks[start:stop], tolerance))
    return torch.cat(hits).float().mean().item()
