"""Hostile image files: non-finite pixels, empty headers, all-nodata rasters, decompression-bomb
sized images. Readers refuse (or mask) them, and preflight, quarantine and doctor see it."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pydicom
import pytest
import yaml
from PIL import Image

from domainclip.core.errors import ReadError
from domainclip.data import load_card_data
from domainclip.data.preflight import UnreadableFilesError
from domainclip.demo.radiology import _write_dicom
from domainclip.readers import read
from domainclip.transforms.spatial import box_reduce


def dicom_card(root, broken: dict[int, dict]):
    """12 CT slices of 6 patients; ``broken`` maps a slice index to header changes."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        patient = f"P{i // 2}"
        path = root / f"{i}.dcm"
        _write_dicom(path, rng.normal(-500, 200, (32, 32)).astype(np.float32), patient, f"1.2.{i}", f"1.2.{i}.1", i, rng)
        if i in broken:
            ds = pydicom.dcmread(path)
            for tag, value in broken[i].items():
                setattr(ds, tag, value)
            ds.save_as(path)
        rows.append(f"{i}.dcm,{'a' if i % 2 else 'b'},{patient}\n")
    (root / "labels.csv").write_text("path,label,patient\n" + "".join(rows))
    card = {"name": "ct", "modality": "CT", "license": "test", "reader": {"name": "dicom", "options": {"window": "lung"}},
            "manifest": "labels.csv", "columns": {"path": "path", "label": "label", "group": "patient"},
            "classes": [{"name": "a"}, {"name": "b"}]}
    (root / "card.yaml").write_text(yaml.safe_dump(card))
    return root / "card.yaml"


def test_nan_rescale_slope_is_refused_and_quarantined(tmp_path):
    card = dicom_card(tmp_path, {3: {"RescaleSlope": "NaN"}})
    with pytest.raises(ReadError, match="NaN or infinite"):
        read(tmp_path / "3.dcm", reader="dicom", window="lung")
    with pytest.raises(UnreadableFilesError, match="3.dcm"):
        load_card_data(card, on_error="fail")
    data = load_card_data(card, on_error="skip")
    assert [q["path"] for q in data.quarantine] == [str(tmp_path / "3.dcm")]
    assert data.quarantine[0]["stage"] == "values"
    assert sum(len(r) for r in data.splits.values()) == 11
    proc = subprocess.run([sys.executable, "-m", "domainclip.doctor", str(card)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1 and "3.dcm" in proc.stdout and "NaN or infinite" in proc.stdout


def test_dicom_with_no_rows_says_so_not_install_a_decoder(tmp_path):
    dicom_card(tmp_path, {1: {"Rows": 0}})
    with pytest.raises(ReadError) as err:
        read(tmp_path / "1.dcm", reader="dicom")
    assert "Rows=0" in str(err.value) and "pylibjpeg" not in str(err.value)


def geotiff(path, data, nodata=None):
    import rasterio

    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype=data.dtype, nodata=nodata) as dst:
        dst.write(data)


def test_nan_geotiff_pixels_become_nodata_and_an_all_nodata_chip_is_refused(tmp_path):
    data = np.full((4, 16, 16), 1000.0, np.float32)
    data[:, :4, :4] = np.nan
    geotiff(tmp_path / "partial.tif", data)
    arr, meta = read(tmp_path / "partial.tif", reader="raster")
    assert np.isfinite(arr).all() and not meta["valid"][:4, :4].any() and meta["valid"][4:, 4:].all()
    geotiff(tmp_path / "empty.tif", np.full((4, 16, 16), np.nan, np.float32))
    with pytest.raises(ReadError, match="every pixel is nodata"):
        read(tmp_path / "empty.tif", reader="raster")
    geotiff(tmp_path / "declared.tif", np.zeros((4, 16, 16), np.uint16), nodata=0)
    with pytest.raises(ReadError, match="every pixel is nodata"):
        read(tmp_path / "declared.tif", reader="raster")


def raster_card(root, empty: set[int], chip_size=None):
    rows = []
    for i in range(12):
        data = np.full((4, 16, 16), np.nan if i in empty else 500.0 + i, np.float32)
        geotiff(root / f"s{i}.tif", data, nodata=float("nan"))
        rows.append(f"s{i}.tif,{'water' if i % 2 else 'forest'},B{i // 2}\n")
    (root / "labels.csv").write_text("path,label,block\n" + "".join(rows))
    options = {"chip_size": chip_size} if chip_size else {}
    card = {"name": "geo", "modality": "satellite", "license": "test", "reader": {"name": "raster", "options": options},
            "manifest": "labels.csv", "columns": {"path": "path", "label": "label", "group": "block"},
            "split": {"level": "spatial"}, "classes": [{"name": "forest"}, {"name": "water"}]}
    (root / "card.yaml").write_text(yaml.safe_dump(card))
    return root / "card.yaml"


@pytest.mark.parametrize("chip_size", [None, 8])
def test_all_nodata_rasters_fail_or_are_quarantined(tmp_path, chip_size):
    card = raster_card(tmp_path, {4}, chip_size)
    with pytest.raises(UnreadableFilesError, match="s4.tif"):
        load_card_data(card, on_error="fail")
    data = load_card_data(card, on_error="skip")
    assert [q["path"] for q in data.quarantine] == [str(tmp_path / "s4.tif")]
    assert all(r.path.name != "s4.tif" for recs in data.splits.values() for r in recs)


def test_image_over_the_pixel_cap_is_refused_before_decoding(tmp_path):
    Image.new("1", (9000, 9000)).save(tmp_path / "bomb.png")  # 81 MP, a few KB on disk
    with pytest.raises(ReadError, match="over the limit"):
        read(tmp_path / "bomb.png", reader="image")
    Image.new("RGB", (300, 200)).save(tmp_path / "small.png")
    with pytest.raises(ReadError, match="max_pixels"):
        read(tmp_path / "small.png", reader="image", max_pixels=10_000)


def test_large_image_is_reduced_while_reading(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (1000, 900, 3), dtype=np.uint8)).save(tmp_path / "big.png")
    full, _ = read(tmp_path / "big.png", reader="image")
    small, meta = read(tmp_path / "big.png", reader="image", min_side=100)
    assert meta["reduced_by"] == 9 and small.shape == (3, 111, 100)
    np.testing.assert_allclose(small, box_reduce(full, 9), rtol=0, atol=1e-4)


def test_bands_to_rgb_naming_a_missing_band_is_one_error(tmp_path, make_cfg):
    from domainclip.core.errors import CardError
    from domainclip.pipeline.run import setup

    card = raster_card(tmp_path, set())
    spec = yaml.safe_load(card.read_text())
    spec["transforms"] = {"bands_to_rgb": ["NIR", "R", "G"]}  # these files have band1..band4
    card.write_text(yaml.safe_dump(spec))
    with pytest.raises(CardError, match=r"transforms.bands_to_rgb.*not found: \['NIR', 'R', 'G'\]") as err:
        setup(make_cfg("recipe=satellite", f"data.card={card}", "tower.image.size=32"))
    assert "band1" in str(err.value) and "\n" not in str(err.value)


def test_untagged_fill_value_can_be_declared_nodata(tmp_path):
    from domainclip.readers.raster import chip_grid

    data = np.full((4, 32, 32), 700, np.uint16)
    data[:, :, :16] = 0  # a Landsat-style zero border the file does not tag as nodata
    geotiff(tmp_path / "scene.tif", data)
    _, meta = read(tmp_path / "scene.tif", reader="raster")
    assert meta["valid"].all()  # untagged zeros are data unless the card says otherwise
    _, meta = read(tmp_path / "scene.tif", reader="raster", nodata=0)
    assert not meta["valid"][:, :16].any() and meta["valid"][:, 16:].all()
    assert [c["col"] for c in chip_grid(tmp_path / "scene.tif", chip_size=16, nodata=0)] == [16, 16]
    assert len(chip_grid(tmp_path / "scene.tif", chip_size=16)) == 4
