"""Integer box reduction: shrink a large image cheaply before the antialiased resize.

Pillow's ``reducing_gap`` idea: while an image is at least ``REDUCING_GAP`` times the target size,
averaging k x k blocks loses nothing the final antialiased resize would keep, and it makes that
resize (and every per-pixel step after the reduction) work on k² fewer pixels. Readers that can
reduce at decode time (``dicom``) take a ``min_side`` option computed by :func:`min_side_for`.
"""
from __future__ import annotations

import numpy as np

REDUCING_GAP = 2  # reduce while the image stays >= 2x the target size


def min_side_for(size: int) -> int:
    """The smallest side a reduced image may have for a target of ``size`` pixels."""
    return REDUCING_GAP * size


def reduction_factor(shape: tuple[int, ...], min_side: int | None) -> int:
    """The largest integer k with both of the last two sides // k >= ``min_side`` (1: none)."""
    if not min_side:
        return 1
    k = min(shape[-2], shape[-1]) // min_side
    return k if k >= 2 else 1


def box_sum(arr: np.ndarray, k: int) -> np.ndarray:
    """Sums of k x k blocks over the last two axes, as float32 (trailing rows and columns that do
    not fill a block are dropped, like ``avg_pool2d``). Integer input is summed straight into
    float32, so no float copy of the full image is made; sums of up to 256 16-bit values are exact.
    """
    h, w = arr.shape[-2] // k * k, arr.shape[-1] // k * k
    lead = arr.shape[:-2]
    rows = np.add.reduce(arr[..., :h, :w].reshape(*lead, h // k, k, w), axis=-2, dtype=np.float32)
    out = rows[..., 0::k].copy()
    for i in range(1, k):  # k strided adds over the already row-reduced image
        out += rows[..., i::k]
    return out


def box_reduce(arr: np.ndarray, k: int) -> np.ndarray:
    """Means of k x k blocks over the last two axes (float32); ``arr`` itself when k < 2."""
    if k < 2:
        return arr
    out = box_sum(arr, k)
    out *= 1.0 / (k * k)
    return out
