"""Whole slides and scenes as one picture: each tile or chip the run read, and its similarity
maps, placed where it lies in the file (gaps where no tile passed the tissue or valid-pixel
filter), at a fixed number of pixels per tile."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def stitch(origins: list[tuple[int, int]], side: int, images: np.ndarray, maps: torch.Tensor,
           cell_px: int = 64) -> tuple[np.ndarray, torch.Tensor]:
    """``images`` (N, S, S, 3) and ``maps`` (N, K, S, S) of N cells whose top-left corners are
    ``origins`` (full-resolution pixels, each covering ``side`` pixels) -> the mosaic (H, W, 3),
    white where no cell lies, and the maps (K, H, W), NaN there; overlapping chips average."""
    scale = cell_px / float(side)
    x0, y0 = min(o[0] for o in origins), min(o[1] for o in origins)
    spots = [(int(round((y - y0) * scale)), int(round((x - x0) * scale))) for x, y in origins]
    height, width = max(r for r, _ in spots) + cell_px, max(c for _, c in spots) + cell_px
    mosaic = np.ones((height, width, 3), dtype=np.float32)
    total = torch.zeros(maps.shape[1], height, width)
    weight = torch.zeros(height, width)
    small_maps = F.interpolate(maps.float(), size=(cell_px, cell_px), mode="bilinear", align_corners=False)
    small_images = F.interpolate(torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float(),
                                 size=(cell_px, cell_px), mode="bilinear", antialias=True, align_corners=False)
    for (r, c), tile, heat in zip(spots, small_images.permute(0, 2, 3, 1).numpy(), small_maps):
        mosaic[r : r + cell_px, c : c + cell_px] = tile
        total[:, r : r + cell_px, c : c + cell_px] += heat
        weight[r : r + cell_px, c : c + cell_px] += 1
    stitched = torch.where(weight > 0, total / weight.clamp_min(1), torch.full_like(total, float("nan")))
    return np.clip(mosaic, 0, 1), stitched
