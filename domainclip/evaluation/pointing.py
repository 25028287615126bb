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
    targets = _targets(masks, maps.shape[-2:], tolerance)
    peak = maps.flatten(1).argmax(dim=1)
    return targets.flatten(1).gather(1, peak[:, None])[:, 0]


def _targets(masks: torch.Tensor, size, tolerance: int) -> torch.Tensor:
    """(N, H, W) booleans: the masks at the maps' size, dilated by a disk of radius ``tolerance``."""
    masks = masks.float()
    if masks.shape[-2:] != tuple(size):
        masks = F.interpolate(masks[:, None], size=tuple(size), mode="nearest")[:, 0]
    if tolerance > 0:
        grid = torch.arange(-tolerance, tolerance + 1, dtype=torch.float32)
        disk = ((grid[:, None] ** 2 + grid[None] ** 2) <= tolerance**2).float()[None, None]
        masks = F.conv2d(masks[:, None], disk, padding=tolerance)[:, 0]
    return masks > 0


def grid_peak_pixels(grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """(H, W) booleans: every pixel where a map of ``grid`` cells, upsampled bilinearly to
    ``size`` (``align_corners=False``, as ``similarity_maps`` does), can have its maximum. Each
    upsampled pixel mixes at most the four nearest cells, so the maximum lies next to a cell's
    centre: the pixels on either side of it along each axis, and for a cell on the edge the
    pixels between it and the border (the edge value is held out to there)."""
    axes = []
    for cells, pixels in zip(grid, size):
        centre = (torch.arange(cells, dtype=torch.float64) + 0.5) * pixels / cells - 0.5
        keep = torch.zeros(pixels, dtype=torch.bool)
        keep[centre.floor().clamp(0, pixels - 1).long()] = True
        keep[centre.ceil().clamp(0, pixels - 1).long()] = True
        keep[: int(centre[0].ceil().clamp(min=0)) + 1] = True
        keep[int(centre[-1].floor().clamp(max=pixels - 1)):] = True
        axes.append(keep)
    return axes[0][:, None] & axes[1][None, :]


def pointing_upper_bound(grid: tuple[int, int], masks: torch.Tensor, size: tuple[int, int],
                         tolerance: int = 0) -> float:
    """The best pointing rate any map on a ``grid`` of cells can reach on these masks once
    upsampled to ``size``: the share of masks that hold at least one pixel where such a map can
    peak (``grid_peak_pixels``). A finding smaller than a cell, lying between cell centres,
    cannot be pointed at by any map of that resolution."""
    reachable = grid_peak_pixels(grid, size)
    return (_targets(masks, size, tolerance) & reachable).flatten(1).any(1).float().mean().item()


@torch.inference_mode()
def pointing_rate(model, pixels: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor,
                  zero_shot: bool = False, batch_size: int = 32, tolerance: int = 0,
                  score: str = "probability") -> float:
    """Share of images whose map for their labelled class (``labels``) peaks inside its mask (or
    within ``tolerance`` pixels): ``model`` is an ``AdaptedModel``; ``zero_shot`` maps with its
    template prompts; ``score``: ``"probability"`` (``AdaptedModel.maps``: softmax of the model's
    own logits, which is what ``explain`` shows up to the locked temperature) or
    ``"similarity"``."""
    hits = []
    for start in range(0, len(pixels), batch_size):
        stop = start + batch_size
        maps = model.maps(pixels[start:stop], score, zero_shot=zero_shot)
        own = maps[torch.arange(len(maps)), labels[start:stop]]
        hits.append(pointing_hits(own, masks[start:stop], tolerance))
    return torch.cat(hits).float().mean().item()
