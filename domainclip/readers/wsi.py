"""Whole-slide images through tiffslide (openslide optional): tiles at a requested µm/px,
a median-filtered saturation/Otsu tissue mask, and streaming tile grids (memory flat in slide size)."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from domainclip.core.errors import ReadError
from domainclip.readers.base import register_reader
from domainclip.readers.limits import DEFAULT_MAX_PIXELS, check_declared, require_regular_file
from domainclip.transforms.stain import normalize_he

THUMB_MAX_SIDE = 1024


@lru_cache(maxsize=16)
def open_slide(path: str, backend: str = "tiffslide"):
    """An open slide handle (cached per process, so tiles of one slide reuse it)."""
    require_regular_file(Path(path))
    try:
        if backend == "openslide":
            import openslide

            return openslide.OpenSlide(path)
        import tiffslide

        return tiffslide.TiffSlide(path)
    except ImportError as exc:
        raise ReadError(path, "import", f"{backend} is not installed", "pip install 'domainclip[wsi]'") from exc


def base_mpp(slide, path: str, default: float | None = None) -> float:
    """Level-0 µm/px from the slide's properties (or ``default`` when it has none)."""
    props = slide.properties
    for key in ("tiffslide.mpp-x", "openslide.mpp-x"):
        if props.get(key):
            return float(props[key])
    if default:
        return float(default)
    raise ReadError(path, "metadata", "the slide has no µm/px", "set reader.options.base_mpp in the card")


@dataclass(frozen=True)
class TilePlan:
    """How to cut tiles of ``tile_size`` px at ``mpp`` from a slide."""

    level: int
    read_size: int  # pixels read at ``level`` per tile (then resized to tile_size)
    step0: float  # tile stride in level-0 pixels
    tile_size: int


def plan_tiles(slide, path: str, mpp: float | None, tile_size: int, default_mpp: float | None = None) -> TilePlan:
    """Pick the coarsest pyramid level that is still at least as fine as ``mpp``."""
    if mpp is None:
        return TilePlan(0, tile_size, float(tile_size), tile_size)
    mpp0 = base_mpp(slide, path, default_mpp)
    downs = list(slide.level_downsamples)
    ok = [i for i, d in enumerate(downs) if mpp0 * d <= mpp * 1.01] or [0]
    level = max(ok, key=lambda i: downs[i])
    read_size = int(round(tile_size * mpp / (mpp0 * downs[level])))
    return TilePlan(level, read_size, tile_size * mpp / mpp0, tile_size)


@lru_cache(maxsize=64)
def cached_plan(path: str, backend: str, mpp: float | None, tile_size: int, base_mpp: float | None) -> TilePlan:
    """``plan_tiles`` once per (slide, resolution, tile size): every tile of a slide shares it."""
    return plan_tiles(open_slide(path, backend), path, mpp, tile_size, base_mpp)


def thumbnail_scale(slide, path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> float:
    """The downsample of the tissue thumbnail. The pyramid level it is read from (the finest one
    coarser than nothing it needs: the whole of level 0 when the file has no pyramid) is checked
    against ``max_pixels`` before it is decoded."""
    w, h = slide.dimensions
    scale = max(w, h) / THUMB_MAX_SIDE if max(w, h) > THUMB_MAX_SIDE else 1.0
    lw, lh = slide.level_dimensions[slide.get_best_level_for_downsample(scale)]
    check_declared(path, "thumbnail", {"columns": lw, "rows": lh}, max_pixels)
    return scale


def tissue_mask(slide, path: str = "", max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, float]:
    """Boolean tissue mask on a thumbnail and its downsample factor: Otsu on the HSV saturation
    after a 7-pixel median filter (as CLAM's segmentation does), so that nuclei alone do not set
    the threshold when the section is pale."""
    from scipy.ndimage import median_filter
    from skimage.filters import threshold_otsu

    w, h = slide.dimensions
    scale = thumbnail_scale(slide, path, max_pixels)
    thumb = np.asarray(slide.get_thumbnail((int(w / scale), int(h / scale))).convert("RGB"))
    top, bottom = thumb.max(-1).astype(np.float64), thumb.min(-1)
    sat = median_filter(np.where(top > 0, (top - bottom) / np.maximum(top, 1), 0.0), size=7)  # HSV saturation
    thr = threshold_otsu(sat) if sat.max() > sat.min() else 1.0
    return sat > thr, w / thumb.shape[1]


@lru_cache(maxsize=64)
def cached_tissue_mask(path: str, backend: str, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, float]:
    """``tissue_mask`` once per slide and process (checking a slide and tiling it share it)."""
    return tissue_mask(open_slide(path, backend), path, max_pixels)


def tile_grid(path: str | Path, mpp: float | None = None, tile_size: int = 224, min_tissue: float = 0.5,
              backend: str = "tiffslide", base_mpp: float | None = None, max_tiles: int | None = None,
              max_pixels: int | None = DEFAULT_MAX_PIXELS) -> list[dict]:
    """Level-0 (x, y) of every tile whose tissue fraction is at least ``min_tissue``."""
    slide = open_slide(str(path), backend)
    plan = plan_tiles(slide, str(path), mpp, tile_size, base_mpp)
    check_declared(path, "tile", {"columns": plan.read_size, "rows": plan.read_size}, max_pixels)
    mask, down = cached_tissue_mask(str(path), backend, max_pixels) if min_tissue > 0 else (None, 1.0)
    w, h = slide.dimensions
    tiles = []
    for y in np.arange(0, h - plan.step0 + 1, plan.step0):
        for x in np.arange(0, w - plan.step0 + 1, plan.step0):
            frac = 1.0
            if mask is not None:
                ys, xs = int(y / down), int(x / down)
                win = mask[ys : max(ys + 1, int((y + plan.step0) / down)), xs : max(xs + 1, int((x + plan.step0) / down))]
                frac = float(win.mean()) if win.size else 0.0
            if frac >= min_tissue:
                tiles.append({"x": int(x), "y": int(y), "tissue": round(frac, 4)})
            if max_tiles and len(tiles) >= max_tiles:
                return tiles
    return tiles


@register_reader("wsi")
def read_wsi(path: Path, x: int = 0, y: int = 0, tile_size: int = 224, mpp: float | None = None,
             backend: str = "tiffslide", base_mpp: float | None = None, stain_normalize: bool = False,
             min_tissue: float = 0.5, max_tiles: int | None = None,
             max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, dict]:
    """One RGB tile (3, tile_size, tile_size), 0..255, whose level-0 top-left is (x, y); the region
    read at the chosen level is checked against ``max_pixels`` first."""
    slide = open_slide(str(path), backend)
    plan = cached_plan(str(path), backend, mpp, tile_size, base_mpp)
    check_declared(path, "tile", {"columns": plan.read_size, "rows": plan.read_size}, max_pixels)
    region = slide.read_region((int(x), int(y)), plan.level, (plan.read_size, plan.read_size), as_array=True) \
        if backend == "tiffslide" else np.asarray(slide.read_region((int(x), int(y)), plan.level, (plan.read_size,) * 2))
    rgb = np.asarray(region)[..., :3]
    if plan.read_size != tile_size:
        from PIL import Image

        rgb = np.asarray(Image.fromarray(rgb).resize((tile_size, tile_size), Image.BILINEAR))
    if stain_normalize:
        rgb = normalize_he(rgb)
    meta = {"modality": "pathology", "units": "rgb255", "mpp": mpp, "level": plan.level, "x": int(x), "y": int(y)}
    return np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32), meta
