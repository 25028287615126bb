"""Synthetic H&E-like tiles in four classes (PNG), at two sites.

Like real tile collections, a tile is labelled by its dominant tissue but often contains a second
one (the labelled tissue covers 50-100% of it), stain intensity varies per slide, and about 6% of
labels disagree with the pixels (inter-observer disagreement). Site B is another lab and scanner:
bluer haematoxylin, paler eosin, a softer optical blur and more sensor noise.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from domainclip.demo.common import disks, write_class_map, write_manifest, write_readme

CLASSES = ("tumour", "stroma", "adipose", "lymphocytes")
TILE = 128
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


def _histiocytes(rng) -> np.ndarray:
    """Sinus histiocytosis (the slide demo's mimic of tumour): lymphocytes among large, pale,
    vesicular nuclei."""
    pale = HEMATOXYLIN * 0.55 + EOSIN * 0.45
    return _blend(_lymphocytes(rng), pale * rng.uniform(0.9, 1.1), _nuclei(rng, int(rng.integers(20, 32)), 3.5, 6.5))


DRAW = {"tumour": _tumour, "stroma": _stroma, "adipose": _adipose, "lymphocytes": _lymphocytes,
        "histiocytes": _histiocytes}  # the tile demo draws CLASSES; the slide demo also histiocytes


def render_tile(label: str, rng: np.random.Generator) -> np.ndarray:
    """One uint8 RGB tile of class ``label`` with stain variation and noise."""
    img = DRAW[label](rng)
    img = img * rng.uniform(0.92, 1.06, size=3) + rng.normal(0, 5, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


SITES = {  # per site: slides, tiles per class per slide, stain (RGB gain), blur sigma, noise sd
    "A": {"slides": 40, "tiles": 2, "stain": (1.0, 1.0, 1.0), "blur": 0.0, "noise": 5.0},
    "B": {"slides": 16, "tiles": 2, "stain": (0.70, 0.80, 1.12), "blur": 1.8, "noise": 14.0},
}
DOMINANT = (0.5, 1.0)  # share of the tile covered by the labelled tissue
DISAGREEMENT = 0.06  # share of tiles whose label names another tissue


def region(rng, share: float) -> np.ndarray:
    """A smooth random region covering ``share`` of the tile (float mask with soft edges)."""
    field = ndimage.gaussian_filter(rng.normal(0, 1, (TILE, TILE)), 12)
    cut = np.quantile(field, 1 - share)
    return np.clip((field - cut) / (field.std() * 0.15 + 1e-6) + 0.5, 0.0, 1.0)


def mixed_tile(label: str, rng, site: dict, slide_gain: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A tile dominated by ``label`` with another tissue in the rest, stained and scanned at
    ``site``, and its tissue map: the class index of the tissue drawn at each pixel."""
    other = CLASSES[(CLASSES.index(label) + rng.integers(1, len(CLASSES))) % len(CLASSES)]
    share = rng.uniform(*DOMINANT)
    mask = region(rng, share)[..., None]
    img = DRAW[label](rng) * mask + DRAW[other](rng) * (1 - mask)
    img = img * slide_gain * np.asarray(site["stain"]) * rng.uniform(0.95, 1.05, size=3)
    if site["blur"]:
        img = ndimage.gaussian_filter(img, (site["blur"], site["blur"], 0))
    tissue = np.where(mask[..., 0] >= 0.5, CLASSES.index(label), CLASSES.index(other)).astype(np.uint8)
    return np.clip(img + rng.normal(0, site["noise"], img.shape), 0, 255).astype(np.uint8), tissue


def generate(root: Path, seed: int, site: str = "A") -> None:
    """Write tiles under ``root/tiles/`` plus ``manifest.csv`` (path, label, slide_id, scanner), and
    beside each tile its tissue map under ``root/masks/`` (same name; pixel = class index)."""
    spec = SITES[site]
    rng = np.random.default_rng(seed + (0 if site == "A" else 1000))
    (root / "tiles").mkdir(parents=True)
    rows = []
    for s in range(spec["slides"]):
        slide = f"DEMO-{site}-SLIDE-{s:02d}"
        slide_gain = rng.uniform(0.88, 1.08, size=3)
        for truth in CLASSES:
            for t in range(spec["tiles"]):
                rel = f"tiles/{slide}_{truth}_{t}.png"
                tile, tissue = mixed_tile(truth, rng, spec, slide_gain)
                Image.fromarray(tile).save(root / rel)
                write_class_map(root / rel.replace("tiles/", "masks/"), tissue)
                label = truth if rng.random() >= DISAGREEMENT else CLASSES[(CLASSES.index(truth) + rng.integers(1, 4)) % 4]
                rows.append({"path": rel, "label": label, "slide_id": slide, "scanner": f"{site}-SCANNER-{s % 2 + 1}"})
    write_manifest(root, rows)
    write_readme(root, f"Demo H&E tiles, site {site}", f"{len(rows)} PNG tiles ({TILE} px) in classes "
                 f"{', '.join(CLASSES)}, {spec['slides']} synthetic slides; split at slide level. {__doc__}")


def generate_site_b(root: Path, seed: int) -> None:
    """Site B of the pathology demo (another lab's stain and scanner)."""
    generate(root, seed, site="B")
