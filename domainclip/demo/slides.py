"""Synthetic whole slides labelled per slide (tumour present or not), as pyramidal TIFFs.

Each slide is a JPEG-tiled pyramidal TIFF (levels at 0.5, 1.0 and 2.0 µm/px) that tiffslide
reads like a scanner's file: an irregular tissue section on white glass made of stroma, adipose
tissue and lymphocyte aggregates (the tile demo's textures, drawn at 1.0 µm/px), with the
slide's own staining (haematoxylin and eosin amounts vary by up to 30%). Every slide, whatever its
label, also holds sinus histiocytosis over 0-30% of its tissue: lymphocytes with scattered large
pale nuclei, the classic benign mimic of metastatic carcinoma in a lymph node. A positive slide
carries one or two tumour regions covering 2-10% of its tissue, so most of a positive slide's
tiles are normal tissue (as in CAMELYON). Each patient has two slides; a patient's slides share
the label half of the time.

Beside the slides, ``masks/<slide>.png`` holds the ground truth at 1.0 µm/px (``MASK_MPP``):
1 where tumour was drawn, 0 on other tissue, 255 on glass.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from domainclip.demo.common import NO_FINDING, write_class_map, write_manifest, write_readme
from domainclip.demo.pathology import DRAW, EOSIN, HEMATOXYLIN, TILE, WHITE

SIDE = 1024  # pixels at MASK_MPP; level 0 is twice as large
BASE_MPP = 0.5
MASK_MPP = 1.0
LEVEL_DOWNSAMPLES = (1, 2, 4)
TUMOUR_SHARE = (0.02, 0.10)  # of the tissue, on positive slides
MIMIC_SHARE = (0.0, 0.30)  # sinus histiocytosis, of the tissue, on every slide
NORMAL = ("stroma", "adipose", "lymphocytes", "histiocytes")
SITES = {  # patients, stain gain, blur, noise
    "A": {"patients": 48, "stain": (1.0, 1.0, 1.0), "blur": 0.0, "noise": 5.0},
    "B": {"patients": 8, "stain": (0.72, 0.82, 1.10), "blur": 1.2, "noise": 10.0},
}


def _smooth_field(rng, sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.normal(0, 1, (SIDE // 4, SIDE // 4)), sigma / 4)
    return ndimage.zoom(field, 4, order=1)


def tissue_section(rng) -> np.ndarray:
    """A boolean tissue mask: an irregular blob covering about half of the glass."""
    yy, xx = (np.mgrid[:SIDE, :SIDE] - SIDE / 2) / (SIDE / 2)
    radius = np.sqrt((yy / rng.uniform(0.7, 0.9)) ** 2 + (xx / rng.uniform(0.7, 0.9)) ** 2)
    field = -radius + 0.9 * _smooth_field(rng, 60) / 0.05
    return field > np.quantile(field, rng.uniform(0.40, 0.55))


def tumour_regions(rng, tissue: np.ndarray, share: float) -> np.ndarray:
    """One or two irregular tumour regions inside ``tissue`` covering about ``share`` of it."""
    inner = ndimage.binary_erosion(tissue, iterations=40)
    candidates = np.argwhere(inner if inner.any() else tissue)
    n = int(rng.integers(1, 3))
    centres = candidates[rng.choice(len(candidates), n, replace=False)]
    yy, xx = np.mgrid[:SIDE, :SIDE].astype(np.float32)
    dist = np.min([np.hypot(yy - cy, xx - cx) for cy, cx in centres], axis=0)
    dist = dist * (1 + 0.35 * _smooth_field(rng, 20) / 0.05)
    target = share * tissue.sum()
    lo, hi = 1.0, float(SIDE)
    for _ in range(30):  # the radius whose region covers the target share of the tissue
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if ((dist < mid) & tissue).sum() < target else (lo, mid)
    return (dist < hi) & tissue


def normal_classes(rng) -> np.ndarray:
    """Which normal tissue (index into ``NORMAL``) fills each pixel. The share of lymphocyte
    aggregates (dense dark nuclei, the tumour's look-alike) varies from none to most of the
    section, whatever the label."""
    shift = (0.02, 0.0, rng.uniform(-0.06, 0.04))
    fields = np.stack([_smooth_field(rng, 50) + w for w in shift])
    return fields.argmax(0)


def mimic_regions(rng, tissue: np.ndarray, share: float) -> np.ndarray:
    """Patches of sinus histiocytosis covering about ``share`` of ``tissue``."""
    field = _smooth_field(rng, 25)
    if share <= 0:
        return np.zeros_like(tissue)
    return (field > np.quantile(field[tissue], 1 - share)) & tissue


def restain(img: np.ndarray, h_gain: float, e_gain: float) -> np.ndarray:
    """The slide's own staining: optical densities split on the demo's haematoxylin and eosin
    colours (least squares, as colour deconvolution does), each scaled, recombined."""
    od = -np.log((img.reshape(-1, 3) + 1.0) / 256.0)
    stains = -np.log((np.stack([HEMATOXYLIN, EOSIN]) + 1.0) / 256.0)  # (2, 3)
    amounts, *_ = np.linalg.lstsq(stains.T, od.T, rcond=None)  # (2, P)
    residual = od - amounts.T @ stains
    od = (amounts.T * (h_gain, e_gain)) @ stains + residual
    return (256.0 * np.exp(-od) - 1.0).reshape(img.shape)


def render_slide(rng, site: dict, positive: bool) -> tuple[np.ndarray, np.ndarray]:
    """The slide's RGB image at ``MASK_MPP`` and its ground truth (1 tumour, 0 tissue, 255 glass)."""
    tissue = tissue_section(rng)
    tumour = tumour_regions(rng, tissue, rng.uniform(*TUMOUR_SHARE)) if positive else np.zeros_like(tissue)
    mimic = mimic_regions(rng, tissue, rng.uniform(*MIMIC_SHARE))
    kind = np.where(tumour, len(NORMAL), np.where(mimic, NORMAL.index("histiocytes"), normal_classes(rng)))
    names = (*NORMAL, "tumour")
    img = np.broadcast_to(WHITE, (SIDE, SIDE, 3)).copy()
    for by in range(0, SIDE, TILE):
        for bx in range(0, SIDE, TILE):
            block = (slice(by, by + TILE), slice(bx, bx + TILE))
            soft = ndimage.gaussian_filter(tissue[block].astype(np.float32), 2.0)
            if not soft.any():
                continue
            for k in np.unique(kind[block][tissue[block]]):
                where = (kind[block] == k) & tissue[block]
                img[block][where] = DRAW[names[k]](rng)[where]
    stained = restain(img, rng.uniform(0.75, 1.3), rng.uniform(0.75, 1.3)) * np.asarray(site["stain"])
    img = np.where(tissue[..., None], stained, img)
    if site["blur"]:
        img = ndimage.gaussian_filter(img, (site["blur"], site["blur"], 0))
    img = np.clip(img + rng.normal(0, site["noise"], img.shape), 0, 255).astype(np.uint8)
    truth = np.where(tissue, tumour.astype(np.uint8), NO_FINDING).astype(np.uint8)
    return img, truth


def write_pyramid(path: Path, image: np.ndarray) -> None:
    """A JPEG-tiled pyramidal TIFF with the image at ``MASK_MPP`` upsampled to level 0 at
    ``BASE_MPP`` and the levels of ``LEVEL_DOWNSAMPLES`` (resolution tags in pixels per cm)."""
    import tifffile
    from PIL import Image

    base = np.asarray(Image.fromarray(image).resize((SIDE * 2, SIDE * 2), Image.BICUBIC))
    opts = dict(tile=(256, 256), photometric="rgb", compression="jpeg", compressionargs={"level": 90},
                resolutionunit="CENTIMETER")
    with tifffile.TiffWriter(path) as tif:
        tif.write(base, subifds=len(LEVEL_DOWNSAMPLES) - 1, resolution=(1e4 / BASE_MPP, 1e4 / BASE_MPP), **opts)
        for d in LEVEL_DOWNSAMPLES[1:]:
            level = np.asarray(Image.fromarray(base).resize((SIDE * 2 // d,) * 2, Image.BOX))
            mpp = BASE_MPP * d
            tif.write(level, subfiletype=1, resolution=(1e4 / mpp, 1e4 / mpp), **opts)


def generate(root: Path, seed: int, site: str = "A", patients: int | None = None) -> None:
    """Write ``slides/*.tif``, ``masks/*.png`` and ``manifest.csv`` (path, label, patient_id,
    scanner): two slides per patient, labelled tumour or normal per slide; ``patients`` overrides
    the site's count (a smaller collection for quick checks)."""
    spec = SITES[site]
    rng = np.random.default_rng(seed + (50 if site == "A" else 1050))
    (root / "slides").mkdir(parents=True)
    rows = []
    patients = spec["patients"] if patients is None else int(patients)
    for p in range(patients):
        patient = f"DEMO-{site}-PATIENT-{p:02d}"
        patient_positive = bool(p % 2)
        for s in range(2):
            positive = patient_positive if s == 0 else bool(rng.random() < 0.5)
            name = f"{patient}-SLIDE-{s}"
            image, truth = render_slide(rng, spec, positive)
            write_pyramid(root / "slides" / f"{name}.tif", image)
            write_class_map(root / "masks" / f"{name}.png", truth)
            rows.append({"path": f"slides/{name}.tif", "label": "tumour" if positive else "normal",
                         "patient_id": patient, "scanner": f"{site}-SCANNER-{p % 2 + 1}"})
    write_manifest(root, rows)
    write_readme(root, f"Demo whole slides, site {site}", f"{len(rows)} pyramidal TIFF slides of "
                 f"{patients} patients, labelled per slide (tumour / normal); split at patient level. {__doc__}")


def generate_site_b(root: Path, seed: int) -> None:
    """Site B of the slide demo (another lab's stain and scanner)."""
    generate(root, seed, site="B")
