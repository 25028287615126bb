"""Multi-band rasters (GeoTIFF and friends) through rasterio."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from domainclip.errors import ReadError
from domainclip.readers.base import register_reader


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


@register_reader("raster")
def read_raster(path: Path, bands: list | None = None) -> tuple[np.ndarray, dict]:
    """Selected bands as (C, H, W) float32 in file units; ``meta['valid']`` marks non-nodata pixels."""
    try:
        import rasterio
    except ImportError as exc:
        raise ReadError(path, "import", "rasterio is not installed", "pip install 'domainclip[geo]'") from exc
    with rasterio.open(path) as src:
        idx = _band_indexes(src, bands)
        arr = src.read(idx).astype(np.float32)
        valid = src.read_masks(idx).min(axis=0) > 0 if src.nodata is not None else np.ones(arr.shape[1:], bool)
        meta = {
            "modality": "satellite",
            "units": "reflectance",
            "bands": [src.descriptions[i - 1] or f"band{i}" for i in idx],
            "nodata": src.nodata,
            "crs": src.crs.to_string() if src.crs else None,
            "transform": list(src.transform)[:6],
            "valid": valid,
        }
    return arr, meta
