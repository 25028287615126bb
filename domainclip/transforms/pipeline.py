"""From a reader's natural units to the tower's normalised input tensor."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

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
from domainclip.transforms.spatial import box_reduce, min_side_for, reduction_factor

RESIZE_MODES = ("squash", "shortest", "longest")
INTERPOLATIONS = ("bilinear", "bicubic")


@dataclass(frozen=True)
class Preprocess:
    """What a tower expects: square size, per-channel mean and std on 0..1 input, and how a
    non-square image becomes square: ``squash`` (resize both sides), ``shortest`` (shorter side to
    ``size``, then a centre crop: open_clip's default) or ``longest`` (longer side to ``size``, then
    zero padding), with ``bilinear`` or ``bicubic`` interpolation."""

    size: int = 224
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    resize_mode: str = "squash"
    interpolation: str = "bilinear"

    def __post_init__(self):
        if self.resize_mode not in RESIZE_MODES or self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"preprocessing resize_mode={self.resize_mode!r}, interpolation={self.interpolation!r}: "
                             f"allowed {RESIZE_MODES} and {INTERPOLATIONS}")


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


def resize(arr01: np.ndarray, size: int, mode: str = "squash", interpolation: str = "bilinear") -> torch.Tensor:
    """(1, C, size, size) float tensor: box reduction while the image stays >= 2x ``size`` (see
    ``transforms.spatial``), then an antialiased resize (``Preprocess.resize_mode``: both sides,
    or keeping the aspect ratio and centre-cropping or zero-padding to a square).

    An image that grows in both directions is interpolated without the antialias kernel: for
    upsampling it gives the same values (to 1e-5) at half the cost."""
    arr01 = box_reduce(arr01, reduction_factor(arr01.shape, min_side_for(size)))
    x = torch.from_numpy(np.ascontiguousarray(arr01))[None]
    h, w = x.shape[-2:]
    if mode == "squash" or h == w:
        target = (size, size)
    else:  # torchvision's rule: the other side is int(size * ratio)
        side = min(h, w) if mode == "shortest" else max(h, w)
        target = (size, int(size * w / h)) if h == side else (int(size * h / w), size)
    if x.shape[-2:] != target:
        shrinks = min(x.shape[-2:]) > min(target)
        if interpolation == "bicubic":  # the antialiased kernel is PIL's, which open_clip resizes with
            x = F.interpolate(x, size=target, mode="bicubic", antialias=True, align_corners=False).clamp_(0.0, 1.0)
        else:
            x = F.interpolate(x, size=target, mode="bilinear", antialias=shrinks, align_corners=False)
    return centre_square(x, size)


def centre_square(x: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size`` x ``size`` window of (1, C, H, W), zero-padded where the image is smaller
    (torchvision's ``CenterCrop`` offsets)."""
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    out = x.new_zeros(x.shape[:-2] + (size, size))
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    src_t, src_l, dst_t, dst_l = max(top, 0), max(left, 0), max(-top, 0), max(-left, 0)
    rows, cols = min(h - src_t, size - dst_t), min(w - src_l, size - dst_l)
    out[..., dst_t:dst_t + rows, dst_l:dst_l + cols] = x[..., src_t:src_t + rows, src_l:src_l + cols]
    return out


@lru_cache(maxsize=8)
def _affine(mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) with (x - mean) / std == x * scale + shift, shaped (1, C, 1, 1); a single
    mean/std value is used for three channels."""
    if len(mean) == 1 and len(std) == 1:
        mean, std = mean * 3, std * 3
    scale = 1.0 / torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return scale, -torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * scale


def to_tensor(arr01: np.ndarray, pre: Preprocess, normalize: bool = True) -> torch.Tensor:
    """Resize (antialiased bilinear) to the tower's size and normalise; returns (C, S, S).

    ``normalize=False`` leaves 0..1 values (a band projection normalises after mapping to RGB).
    """
    x = resize(arr01, pre.size, pre.resize_mode, pre.interpolation)
    if not normalize:
        return x[0]
    scale, shift = _affine(tuple(pre.mean), tuple(pre.std))
    return (x * scale).add_(shift)[0]  # a grey (1-channel) image broadcasts to the tower's channels
