"""Plain PNG/JPEG/TIFF images (and pathology tiles) through Pillow."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from domainclip.core.errors import ReadError
from domainclip.readers.base import register_reader
from domainclip.transforms.spatial import box_reduce, reduction_factor

MAX_PIXELS = 64_000_000  # 8000 x 8000; bigger images are slides or scenes (use the wsi or raster reader)


def _load_rgb(path: Path, mode: str = "RGB", min_side: int | None = None,
              max_pixels: int | None = MAX_PIXELS) -> tuple[np.ndarray, dict]:
    """Decode as 8-bit, reduce by an integer factor while still 8-bit (``min_side``), then float32:
    a large image never exists as a full-size float array."""
    with Image.open(path) as img:
        size = img.size
        if max_pixels and size[0] * size[1] > max_pixels:
            raise ReadError(path, "size", f"{size[0]}x{size[1]} = {size[0] * size[1]} pixels is over the limit "
                            f"of {max_pixels}", "raise reader.options.max_pixels if this is intended, or use "
                            "the wsi reader for slides")
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


@register_reader("image")
def read_image(path: Path, mode: str = "RGB", modality: str = "photo", min_side: int | None = None,
               max_pixels: int | None = MAX_PIXELS) -> tuple[np.ndarray, dict]:
    """RGB (or ``mode``) image as (C, H, W) float32 in 0..255; with ``min_side``, box-reduced by
    the largest integer factor keeping both sides >= ``min_side``. Images over ``max_pixels`` are
    refused before decoding."""
    arr, meta = _load_rgb(path, mode, min_side, max_pixels)
    meta["modality"] = modality
    return arr, meta


@register_reader("tiles")
def read_tile(path: Path, mpp: float | None = None, mode: str = "RGB", min_side: int | None = None,
              max_pixels: int | None = MAX_PIXELS) -> tuple[np.ndarray, dict]:
    """A pathology tile as RGB 0..255, with its µm/px when the card states it."""
    arr, meta = _load_rgb(path, mode, min_side, max_pixels)
    meta.update(modality="pathology", mpp=mpp * meta.get("reduced_by", 1) if mpp else mpp)
    return arr, meta
