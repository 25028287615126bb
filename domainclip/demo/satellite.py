"""Synthetic 4-band (R, G, B, NIR) GeoTIFF chips with a CRS and a nodata value, at two sites.

Like real land-cover chips, a chip is labelled by its dominant cover (50-100% of it) and holds a
second cover in the rest, illumination varies per chip, and about 6% of labels disagree with the
pixels. Site B is another season and sensor: senescent vegetation (lower NIR, higher red), drier
brighter soil, and a sensor with other band gains and more noise.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from domainclip.demo.common import NO_FINDING, write_class_map, write_manifest, write_readme

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
GRID = 18  # site A: chips on a GRID x GRID map, in spatial blocks of 2 x 2 chips
NODATA = 0
PIXEL_M = 10.0


def _texture(rng, label: str) -> np.ndarray:
    if label == "urban":
        blocks = rng.uniform(0.6, 1.5, (CHIP // 8, CHIP // 8))
        return np.kron(blocks, np.ones((8, 8)))
    smooth = ndimage.gaussian_filter(rng.normal(0, 1, (CHIP, CHIP)), 4)
    return 1.0 + smooth * (0.8 if label == "bare_soil" else 0.5)


SITES = {  # per site: grid side, spectral change per class, band gains, noise sd (reflectance)
    "A": {"grid": GRID, "block": 2, "season": {}, "gains": (1.0, 1.0, 1.0, 1.0), "noise": 0.006},
    "B": {"grid": 12, "block": 2, "season": {"vegetation": (1.8, 1.3, 1.4, 0.45), "bare_soil": (1.2, 1.2, 1.2, 1.0)},
          "gains": (1.25, 1.0, 0.85, 0.75), "noise": 0.02},
}
DOMINANT = (0.5, 1.0)
DISAGREEMENT = 0.06


def _cover(label: str, rng, site: dict) -> np.ndarray:
    spectrum = np.array(SPECTRA[label]) * np.array(site["season"].get(label, (1, 1, 1, 1))) * rng.uniform(0.8, 1.2)
    return spectrum[:, None, None] * _texture(rng, label)[None]


def render_chip(label: str, rng, site: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """uint16 (4, CHIP, CHIP) reflectance x 10000 dominated by ``label`` (some chips get a nodata
    border), and its cover map: the class index of the cover at each pixel, ``NO_FINDING`` on nodata."""
    site = site or SITES["A"]
    other = CLASSES[(CLASSES.index(label) + rng.integers(1, len(CLASSES))) % len(CLASSES)]
    field = ndimage.gaussian_filter(rng.normal(0, 1, (CHIP, CHIP)), 8)
    mask = (field >= np.quantile(field, 1 - rng.uniform(*DOMINANT))).astype(np.float64)[None]
    refl = _cover(label, rng, site) * mask + _cover(other, rng, site) * (1 - mask)
    refl = refl * np.asarray(site["gains"])[:, None, None] + rng.normal(0, site["noise"], (4, CHIP, CHIP))
    dn = np.clip(np.round(refl * 10000), 1, 65535).astype(np.uint16)
    cover = np.where(mask[0] > 0, CLASSES.index(label), CLASSES.index(other)).astype(np.uint8)
    if rng.random() < 0.25:
        border = rng.integers(4, 16)
        dn[:, :, :border], cover[:, :border] = NODATA, NO_FINDING
    return dn, cover


def generate(root: Path, seed: int, site: str = "A") -> None:
    """Write ``chips/*.tif`` plus ``manifest.csv`` (path, label, block_id), and each chip's cover map
    as ``masks/<chip>.png`` (class index per pixel, 255 on nodata)."""
    import rasterio
    from rasterio.transform import from_origin

    spec = SITES[site]
    grid = spec["grid"]
    rng = np.random.default_rng(seed + (0 if site == "A" else 1000))
    (root / "chips").mkdir(parents=True)
    rows = []
    for gy in range(grid):
        for gx in range(grid):
            truth = CLASSES[rng.integers(len(CLASSES))]
            rel = f"chips/chip_{gy:02d}_{gx:02d}.tif"
            transform = from_origin(500000 + gx * CHIP * PIXEL_M, 5000000 - gy * CHIP * PIXEL_M, PIXEL_M, PIXEL_M)
            with rasterio.open(root / rel, "w", driver="GTiff", width=CHIP, height=CHIP, count=4, dtype="uint16",
                               crs="EPSG:32633", transform=transform, nodata=NODATA) as dst:
                chip, cover = render_chip(truth, rng, spec)
                dst.write(chip)
                dst.descriptions = BANDS
            write_class_map(root / "masks" / f"chip_{gy:02d}_{gx:02d}.png", cover)
            label = truth if rng.random() >= DISAGREEMENT else CLASSES[(CLASSES.index(truth) + rng.integers(1, 4)) % 4]
            rows.append({"path": rel, "label": label, "block_id": f"{site}{gy // spec['block']}{gx // spec['block']}",
                         "region": "north" if gy < grid // 2 else "south"})
    write_manifest(root, rows)
    write_readme(root, f"Demo multispectral chips, site {site}", f"{len(rows)} 4-band GeoTIFF chips (R, G, B, NIR; "
                 f"EPSG:32633, nodata={NODATA}) in classes {', '.join(CLASSES)}; split by spatial block. {__doc__}")


def generate_site_b(root: Path, seed: int) -> None:
    """Site B of the satellite demo (another season and sensor)."""
    generate(root, seed, site="B")
