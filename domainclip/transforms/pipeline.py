"""From a reader's natural units to the tower's normalised input tensor."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from domainclip.transforms.intensity import (
    apply_window,
    bands_to_rgb,
    fixed_scale,
    percentile_scale,
    to_three_channels,
)


@dataclass(frozen=True)
class Preprocess:
    """What a tower expects: square size, per-channel mean and std on 0..1 input."""

    size: int = 224
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    channels: int = 3


@dataclass(frozen=True)
class DomainOptions:
    """Card-level intensity options applied after reading (plain data from the card)."""

    default_window: tuple[float, float] = (40.0, 400.0)
    scale: str = "percentile"  # percentile | fixed
    scale_range: tuple[float, float] = (2.0, 98.0)
    bands_to_rgb: list | None = None
    band_projection: bool = False  # keep every band; a learnable 1x1 conv maps them to RGB
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict | None) -> "DomainOptions":
        d = dict(d or {})
        known = {k: d.pop(k) for k in list(d) if k in cls.__dataclass_fields__ and k != "extra"}
        if isinstance(known.get("bands_to_rgb"), tuple):
            known["bands_to_rgb"] = list(known["bands_to_rgb"])
        for key in ("default_window", "scale_range"):
            if key in known:
                known[key] = tuple(known[key])
        return cls(**known, extra=d)


def to_unit_range(arr: np.ndarray, meta: dict, opts: DomainOptions, three_channels: bool = True) -> np.ndarray:
    """Map reader output to 0..1 according to its units, then to three channels (unless
    ``three_channels=False``, which leaves a grey image with one)."""
    units = meta.get("units")
    if units == "unit":
        out = arr
    elif units == "rgb255":
        out = arr / 255.0
    elif units == "HU":
        out = apply_window(arr, *opts.default_window)
    else:  # reflectance, raw: stretch per channel on valid pixels
        valid = meta.get("valid")
        if opts.scale == "fixed":
            out = fixed_scale(arr, *opts.scale_range, valid=valid)
        else:
            out = percentile_scale(arr, valid, *opts.scale_range)
    if opts.band_projection:
        return out.astype(np.float32, copy=False)
    out = bands_to_rgb(out, meta.get("bands", []), opts.bands_to_rgb).astype(np.float32, copy=False)
    return to_three_channels(out) if three_channels or out.shape[0] != 1 else out


def model_input(arr: np.ndarray, meta: dict, domain: DomainOptions, pre: Preprocess) -> torch.Tensor:
    """Reader output -> the tower's input tensor (left at 0..1 when a band projection normalises)."""
    if domain.band_projection:
        return to_tensor(to_unit_range(arr, meta, domain), pre, normalize=False)
    # grey images are resized as one channel and only then repeated to RGB (a third of the work)
    return to_tensor(to_unit_range(arr, meta, domain, three_channels=False), pre)


def reduce_by_pooling(x: torch.Tensor, size: int) -> torch.Tensor:
    """Shrink by an integer factor with box averaging while the image stays >= 2x ``size`` (the
    ``reducing_gap`` idea of Pillow): the antialiased resize after it then works on a small image,
    and the result is as smooth as resizing the full image in one go."""
    factor = min(x.shape[-2], x.shape[-1]) // (2 * size)
    return F.avg_pool2d(x, factor, ceil_mode=False) if factor >= 2 else x


def resize(arr01: np.ndarray, size: int) -> torch.Tensor:
    """(1, C, size, size) float tensor: box pooling, then an antialiased bilinear resize."""
    x = torch.from_numpy(np.ascontiguousarray(arr01))[None]
    if x.shape[-2:] != (size, size):
        x = F.interpolate(reduce_by_pooling(x, size), size=(size, size), mode="bilinear", antialias=True,
                          align_corners=False)
    return x


def to_tensor(arr01: np.ndarray, pre: Preprocess, normalize: bool = True) -> torch.Tensor:
    """Resize (antialiased bilinear) to the tower's size and normalise; returns (C, S, S).

    ``normalize=False`` leaves 0..1 values (a band projection normalises after mapping to RGB).
    """
    x = resize(arr01, pre.size)
    if not normalize:
        return x[0]
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    mean = torch.tensor(pre.mean, dtype=x.dtype).view(1, -1, 1, 1)
    std = torch.tensor(pre.std, dtype=x.dtype).view(1, -1, 1, 1)
    return ((x - mean) / std)[0]
