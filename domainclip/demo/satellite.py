"""Synthetic 4-band (R, G, B, NIR) GeoTIFF chips with a CRS and a nodata value."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from domainclip.demo.common import write_manifest, write_readme

CLASSES = ("water", "vegetation", "urban", "bare_soil")
BANDS = ("R", "G", "B", "NIR")
# Mean surface reflectance per band (R, G, B, NIR).
SPECTRA = {
    "water": (0.03, 0.05, 0.06, 0.01),
    "vegetation": (0.05, 0.08, 0.04, 0.40),
    "urban": (0.14, 0.13, 0.12, 0.18),
    "bare_soil": (0.22, 0.15, 0.10, 0.27),
}
CHIP = 64
GRID = 18  # chips on a GRID x GRID map; spatial blocks of 6 x 6 chips
BLOCK = 6
NODATA = 0
PIXEL_M = 10.0


def _texture(rng, label: str) -> np.ndarray:
    if label == "urban":
        blocks = rng.uniform(0.6, 1.5, (CHIP // 8, CHIP // 8))
        return np.kron(blocks, np.ones((8, 8)))
    smooth = ndimage.gaussian_filter(rng.normal(0, 1, (CHIP, CHIP)), 4)
    return 1.0 + smooth * (0.8 if label == "bare_soil" else 0.5)


def render_chip(label: str, rng) -> np.ndarray:
    """uint16 (4, CHIP, CHIP) reflectance x 10000; some chips get a nodata border."""
    tex = _texture(rng, label)
    spectrum = np.array(SPECTRA[label]) * rng.uniform(0.85, 1.15)
    refl = spectrum[:, None, None] * tex[None] + rng.normal(0, 0.004, (4, CHIP, CHIP))
    dn = np.clip(np.round(refl * 10000), 1, 65535).astype(np.uint16)
    if rng.random() < 0.25:
        dn[:, :, : rng.integers(4, 16)] = NODATA
    return dn


def generate(root: Path, seed: int) -> None:
    """Write ``chips/*.tif`` plus ``manifest.csv`` (path, label, block_id)."""
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(seed)
    (root / "chips").mkdir(parents=True)
    rows = []
    for gy in range(GRID):
        for gx in range(GRID):
            label = CLASSES[rng.integers(len(CLASSES))]
            rel = f"chips/chip_{gy:02d}_{gx:02d}.tif"
            transform = from_origin(500000 + gx * CHIP * PIXEL_M, 5000000 - gy * CHIP * PIXEL_M, PIXEL_M, PIXEL_M)
            with rasterio.open(root / rel, "w", driver="GTiff", width=CHIP, height=CHIP, count=4, dtype="uint16",
                               crs="EPSG:32633", transform=transform, nodata=NODATA) as dst:
                dst.write(render_chip(label, rng))
                dst.descriptions = BANDS
            rows.append({"path": rel, "label": label, "block_id": f"B{gy // BLOCK}{gx // BLOCK}",
                         "region": "north" if gy < GRID // 2 else "south"})
    write_manifest(root, rows)
    write_readme(root, "Demo multispectral chips", f"{len(rows)} 4-band GeoTIFF chips (R, G, B, NIR; EPSG:32633, "
                 f"nodata={NODATA}) in classes {', '.join(CLASSES)}; split by spatial block.")
