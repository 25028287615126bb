"""Multi-band rasters (GeoTIFF and friends) through rasterio."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from domainclip.core.errors import ReadError
from domainclip.readers.base import register_reader
from domainclip.readers.limits import DEFAULT_MAX_PIXELS, check_declared


def _band_indexes(src, bands) -> list[int]:
    """1-based band indexes from names (band descriptions) or indexes."""
    if bands is None:
        return list(range(1, src.count + 1))
    names = {d: i + 1 for i, d in enumerate(src.descriptions) if d}
    out = []
    for b in bands:
        if isinstance(b, int):
            if not 1 <= b <= src.count:
                raise ValueError(f"band index {b} out of range 1..{src.count}")
            out.append(b)
        elif b in names:
            out.append(names[b])
        else:
            raise ValueError(f"unknown band {b!r}; this file's bands are {list(names) or list(range(1, src.count + 1))}")
    return out


def _rasterio(path):
    try:
        import rasterio
    except ImportError as exc:
        raise ReadError(path, "import", "rasterio is not installed", "pip install 'domainclip[geo]'") from exc
    return rasterio


def chip_grid(path: str | Path, chip_size: int, stride: int | None = None, min_valid: float = 0.5,
              nodata: float | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS, **_ignored) -> list[dict]:
    """Top-left (col, row) of every full chip on a regular grid with enough valid (non-nodata) pixels;
    ``nodata`` declares a fill value the file does not tag (e.g. Landsat L1 zero borders). The
    valid mask covers the whole scene (every band with ``nodata``): its declared size is checked
    against ``max_pixels`` first."""
    rasterio = _rasterio(path)
    stride = stride or chip_size
    with rasterio.open(path) as src:
        check_declared(path, "grid", {"columns": src.width, "rows": src.height,
                                      "bands": src.count if nodata is not None else 1}, max_pixels)
        valid = src.dataset_mask() > 0
        if nodata is not None:
            valid &= (src.read() != nodata).any(axis=0)
        chips = []
        for row in range(0, src.height - chip_size + 1, stride):
            for col in range(0, src.width - chip_size + 1, stride):
                frac = float(valid[row : row + chip_size, col : col + chip_size].mean())
                if frac >= min_valid:
                    chips.append({"col": col, "row": row, "valid": round(frac, 4)})
    return chips


@register_reader("raster")
def read_raster(path: Path, bands: list | None = None, col: int | None = None, row: int | None = None,
                chip_size: int | None = None, stride: int | None = None, min_valid: float = 0.5,
                nodata: float | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, dict]:
    """Selected bands as (C, H, W) float32 in file units; ``meta['valid']`` marks non-nodata pixels.

    With ``chip_size`` and ``col``/``row`` it reads only that chip (a windowed read). ``nodata``
    declares an untagged fill value: a pixel whose bands all equal it is nodata. The declared
    size of the read (window or scene, times bands) is checked against ``max_pixels`` first.
    """
    rasterio = _rasterio(path)
    from rasterio.windows import Window

    with rasterio.open(path) as src:
        idx = _band_indexes(src, bands)
        window = Window(col, row, chip_size, chip_size) if chip_size and col is not None else None
        width, height = (chip_size, chip_size) if window else (src.width, src.height)
        check_declared(path, "size", {"columns": width, "rows": height, "bands": len(idx)}, max_pixels)
        arr = src.read(idx, window=window).astype(np.float32)
        if src.nodata is not None:
            valid = src.read_masks(idx, window=window).min(axis=0) > 0
        else:  # no nodata declared: every pixel is valid, zeros included
            valid = np.ones(arr.shape[1:], bool)
        if nodata is not None:
            valid &= ~(arr == nodata).all(axis=0)
        meta = {
            "modality": "satellite",
            "units": "reflectance",
            "bands": [src.descriptions[i - 1] or f"band{i}" for i in idx],
            "nodata": src.nodata if nodata is None else nodata,
            "crs": src.crs.to_string() if src.crs else None,
            "transform": list(src.window_transform(window) if window else src.transform)[:6],
            "valid": valid,
        }
    return arr, meta
