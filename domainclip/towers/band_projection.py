"""Learnable band projection: C spectral bands -> the 3 channels an RGB tower expects."""
from __future__ import annotations

import torch
from torch import nn


class BandProjection(nn.Module):
    """A 1x1 convolution from ``in_channels`` bands (0..1) to RGB, then the tower's normalisation.

    Initialised to pick the bands ``init`` (e.g. NIR, R, G), so training starts from the
    fixed ``bands_to_rgb`` composite and learns from there.
    """

    def __init__(self, in_channels: int, init: list[int], mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, 3, kernel_size=1, bias=True)
        with torch.no_grad():
            self.proj.weight.zero_()
            self.proj.bias.zero_()
            for out_c, band in enumerate(init):
                self.proj.weight[out_c, band, 0, 0] = 1.0
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, bands: torch.Tensor) -> torch.Tensor:
        return (self.proj(bands) - self.mean) / self.std
