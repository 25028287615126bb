"""Pure array functions for intensities: windows, percentile scaling, band mapping."""
from __future__ import annotations

import numpy as np


def apply_window(arr: np.ndarray, level: float, width: float, inplace: bool = False) -> np.ndarray:
    """Linear window to 0..1 (DICOM PS3.3 C.11.2.1.2, linear VOI function); ``inplace`` reuses a
    float32 ``arr`` as the output."""
    low = level - 0.5 - (width - 1) / 2
    out = np.subtract(arr, low, out=arr if inplace and arr.dtype == np.float32 else None, dtype=np.float32)
    out *= 1.0 / max(width - 1, 1e-6)
    return np.clip(out, 0.0, 1.0, out=out)


def percentile_scale(
    arr: np.ndarray, valid: np.ndarray | None = None, low: float = 2.0, high: float = 98.0
) -> np.ndarray:
    """Per-channel percentile stretch to 0..1, computed on valid pixels only; invalid -> 0."""
    out = np.zeros_like(arr, dtype=np.float32)
    mask = np.ones(arr.shape[1:], bool) if valid is None else valid.astype(bool)
    if not mask.any():
        return out
    for c in range(arr.shape[0]):
        values = arr[c][mask]
        lo, hi = np.percentile(values, [low, high])
        out[c] = np.clip((arr[c] - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    out[:, ~mask] = 0.0
    return out


def fixed_scale(arr: np.ndarray, low: float, high: float, valid: np.ndarray | None = None) -> np.ndarray:
    """Map a fixed value range (e.g. reflectance 0..3000) to 0..1; invalid pixels -> 0."""
    out = np.clip((arr - low) / max(high - low, 1e-6), 0.0, 1.0).astype(np.float32)
    if valid is not None:
        out[:, ~valid.astype(bool)] = 0.0
    return out


def bands_to_rgb(arr: np.ndarray, bands: list[str], mapping: list[str | int] | None) -> np.ndarray:
    """Pick three channels by band name or 0-based index (e.g. ['NIR', 'R', 'G'] false colour)."""
    if mapping is None:
        return arr
    idx = [m if isinstance(m, int) else bands.index(m) for m in mapping]
    return arr[idx]


def to_three_channels(arr: np.ndarray) -> np.ndarray:
    """Repeat a single channel to RGB; leave 3-channel arrays as they are."""
    if arr.shape[0] == 1:
        return np.repeat(arr, 3, axis=0)
    if arr.shape[0] != 3:
        raise ValueError(f"expected 1 or 3 channels after band mapping, got {arr.shape[0]}; set bands_to_rgb")
    return arr
