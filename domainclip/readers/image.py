"""Plain PNG/JPEG/TIFF images (and pathology tiles) through Pillow."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from domainclip.readers.base import register_reader


def _load_rgb(path: Path, mode: str = "RGB") -> tuple[np.ndarray, dict]:
    with Image.open(path) as img:
        size = img.size
        arr = np.asarray(img.convert(mode), dtype=np.float32)
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return np.ascontiguousarray(arr), {"units": "rgb255", "size": size}


@register_reader("image")
def read_image(path: Path, mode: str = "RGB", modality: str = "photo") -> tuple[np.ndarray, dict]:
    """RGB (or ``mode``) image as (C, H, W) float32 in 0..255."""
    arr, meta = _load_rgb(path, mode)
    meta["modality"] = modality
    return arr, meta


@register_reader("tiles")
def read_tile(path: Path, mpp: float | None = None, mode: str = "RGB") -> tuple[np.ndarray, dict]:
    """A pathology tile as RGB 0..255, with its µm/px when the card states it."""
    arr, meta = _load_rgb(path, mode)
    meta.update(modality="pathology", mpp=mpp)
    return arr, meta
