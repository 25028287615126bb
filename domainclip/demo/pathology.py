"""Synthetic H&E-like tiles in four classes with different morphology (PNG)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from domainclip.demo.common import disks, write_manifest, write_readme

CLASSES = ("tumour", "stroma", "adipose", "lymphocytes")
TILE = 128
SLIDES = 16
TILES_PER_CLASS_PER_SLIDE = 5
EOSIN = np.array([236, 170, 205], np.float32)
HEMATOXYLIN = np.array([70, 40, 130], np.float32)
WHITE = np.array([248, 244, 246], np.float32)


def _blend(base: np.ndarray, colour: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return base * (1 - mask[..., None]) + colour * mask[..., None]


def _nuclei(rng, n: int, rmin: float, rmax: float) -> np.ndarray:
    centres = rng.uniform(0, TILE, size=(n, 2))
    return disks((TILE, TILE), centres, rng.uniform(rmin, rmax, n))


def _tumour(rng) -> np.ndarray:
    img = np.broadcast_to(EOSIN * 0.85 + HEMATOXYLIN * 0.15, (TILE, TILE, 3)).copy()
    mask = _nuclei(rng, 70, 4.0, 8.5)
    mask = ndimage.gaussian_filter(mask * rng.uniform(0.7, 1.0, mask.shape), 0.8)
    return _blend(img, HEMATOXYLIN * rng.uniform(0.8, 1.1), np.clip(mask, 0, 1))


def _stroma(rng) -> np.ndarray:
    theta = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[:TILE, :TILE].astype(np.float32)
    warp = ndimage.gaussian_filter(rng.normal(0, 6, (TILE, TILE)), 6)
    fibres = 0.5 + 0.5 * np.sin((xx * np.cos(theta) + yy * np.sin(theta) + warp) * rng.uniform(0.5, 0.8))
    img = _blend(np.broadcast_to(WHITE, (TILE, TILE, 3)).copy(), EOSIN * 0.9, 0.55 + 0.45 * fibres)
    centres = rng.uniform(0, TILE, size=(8, 2))
    return _blend(img, HEMATOXYLIN, disks((TILE, TILE), centres, rng.uniform(1.5, 2.5, 8)))


def _adipose(rng) -> np.ndarray:
    seeds = rng.uniform(-10, TILE + 10, size=(rng.integers(6, 11), 2))
    yy, xx = np.mgrid[:TILE, :TILE].astype(np.float32)
    d = np.sqrt((yy[None] - seeds[:, 0, None, None]) ** 2 + (xx[None] - seeds[:, 1, None, None]) ** 2)
    d.sort(axis=0)
    membrane = np.clip(2.5 - (d[1] - d[0]), 0, 1)
    img = _blend(np.broadcast_to(WHITE, (TILE, TILE, 3)).copy(), EOSIN * 0.95, membrane)
    return _blend(img, HEMATOXYLIN, _nuclei(rng, 2, 2.0, 3.0) * membrane.clip(0.3, 1))


def _lymphocytes(rng) -> np.ndarray:
    img = np.broadcast_to(EOSIN * 0.95 + WHITE * 0.05, (TILE, TILE, 3)).copy()
    return _blend(img, HEMATOXYLIN * 0.8, _nuclei(rng, 260, 2.0, 3.2))


DRAW = {"tumour": _tumour, "stroma": _stroma, "adipose": _adipose, "lymphocytes": _lymphocytes}


def render_tile(label: str, rng: np.random.Generator) -> np.ndarray:
    """One uint8 RGB tile of class ``label`` with stain variation and noise."""
    img = DRAW[label](rng)
    img = img * rng.uniform(0.92, 1.06, size=3) + rng.normal(0, 5, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def generate(root: Path, seed: int) -> None:
    """Write tiles under ``root/tiles/`` plus ``manifest.csv`` (path, label, slide_id)."""
    rng = np.random.default_rng(seed)
    (root / "tiles").mkdir(parents=True)
    rows = []
    for s in range(SLIDES):
        slide = f"DEMO-SLIDE-{s:02d}"
        for label in CLASSES:
            for t in range(TILES_PER_CLASS_PER_SLIDE):
                rel = f"tiles/{slide}_{label}_{t}.png"
                Image.fromarray(render_tile(label, rng)).save(root / rel)
                rows.append({"path": rel, "label": label, "slide_id": slide, "site": f"SITE-{'AB'[s % 2]}"})
    write_manifest(root, rows)
    write_readme(root, "Demo H&E tiles", f"{len(rows)} PNG tiles ({TILE} px) in classes {', '.join(CLASSES)}, "
                 f"{SLIDES} synthetic slides; split at slide level.")
