"""Plain PNG/JPEG/TIFF images (and pathology tiles) through Pillow."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from domainclip.readers.base import register_reader
from domainclip.readers.limits import DEFAULT_MAX_PIXELS as MAX_PIXELS
from domainclip.readers.limits import check_declared
from domainclip.transforms.intensity import apply_window
from domainclip.transforms.spatial import box_reduce, reduction_factor

HIGH_DEPTH_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}  # Pillow's 16-bit, 32-bit int and float grey


def _load_rgb(path: Path, mode: str = "RGB", min_side: int | None = None,
              max_pixels: int | None = MAX_PIXELS, window=None) -> tuple[np.ndarray, dict]:
    """Decode as 8-bit, reduce by an integer factor while still 8-bit (``min_side``), then float32:
    a large image never exists as a full-size float array. A 16-bit, 32-bit or float grey image
    (the usual CT / X-ray PNG or TIFF export) keeps its full depth: values in file units
    (``units: raw``, scaled later by the card's ``transforms``), or 0..1 through ``window``
    ([level, width] in file units)."""
    with Image.open(path) as img:
        size = img.size
        check_declared(path, "size", {"columns": size[0], "rows": size[1]}, max_pixels)
        if img.mode in HIGH_DEPTH_MODES:
            return _high_depth(img, min_side, window)
        k = reduction_factor((size[1], size[0]), min_side)
        if k > 1 and img.format == "JPEG":
            img.draft(mode, (size[0] // k, size[1] // k))  # DCT-domain scaling: decodes less
            k = reduction_factor((img.size[1], img.size[0]), min_side)
        arr = np.asarray(img.convert(mode))
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    meta = {"units": "rgb255", "size": size}
    if k > 1:
        meta["reduced_by"] = k
        return box_reduce(arr, k), meta
    return np.ascontiguousarray(arr, dtype=np.float32), meta


def _high_depth(img, min_side: int | None, window) -> tuple[np.ndarray, dict]:
    """A grey image deeper than 8 bits as (1, H, W) float32 at full depth (never through Pillow's
    8-bit conversion, which clips 0..4095 to 0..255)."""
    arr = np.asarray(img).astype(np.float32)
    meta = {"units": "raw", "size": img.size, "bit_depth": {"F": 32, "I": 32}.get(img.mode, 16)}
    if window is not None:
        level, width = (float(v) for v in window)
        arr, meta["units"], meta["window"] = apply_window(arr, level, width, inplace=True), "unit", [level, width]
    k = reduction_factor(arr.shape, min_side)
    if k > 1:
        meta["reduced_by"] = k
        return box_reduce(arr[None], k), meta
    return arr[None], meta


@register_reader("image")
def read_image(path: Path, mode: str = "RGB", modality: str = "photo", min_side: int | None = None,
               max_pixels: int | None = MAX_PIXELS, window: list | None = None) -> tuple[np.ndarray, dict]:
    """RGB (or ``mode``) image as (C, H, W) float32 in 0..255; with ``min_side``, box-reduced by
    the largest integer factor keeping both sides >= ``min_side``. Images over ``max_pixels`` are
    refused before decoding. Grey images deeper than 8 bits come out at full depth (see
    ``_load_rgb``; ``window`` maps them to 0..1)."""
    arr, meta = _load_rgb(path, mode, min_side, max_pixels, window)
    meta["modality"] = modality
    return arr, meta


@register_reader("tiles")
def read_tile(path: Path, mpp: float | None = None, mode: str = "RGB", min_side: int | None = None,
              max_pixels: int | None = MAX_PIXELS) -> tuple[np.ndarray, dict]:
    """A pathology tile as RGB 0..255, with its µm/px when the card states it."""
    arr, meta = _load_rgb(path, mode, min_side, max_pixels)
    meta.update(modality="pathology", mpp=mpp * meta.get("reduced_by", 1) if mpp else mpp)
    return arr, meta
