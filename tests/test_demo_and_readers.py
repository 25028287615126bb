"""Demo data is deterministic, in real formats, and read correctly by the readers."""
from __future__ import annotations

import csv
import hashlib

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut

from domainclip.core.errors import ReadError
from domainclip.demo import demo_root
from domainclip.readers import read
from domainclip.transforms.intensity import apply_window


def _digest(root, names):
    return hashlib.sha256(b"".join((root / n).read_bytes() for n in names)).hexdigest()


@pytest.mark.parametrize("name", ["pathology", "radiology", "satellite"])
def test_demo_is_deterministic_and_labelled(tmp_path, name):
    a, b = demo_root(name, root=tmp_path / "a"), demo_root(name, root=tmp_path / "b")
    rows = list(csv.DictReader((a / "manifest.csv").open()))
    assert len(rows) >= 200 and len({r["label"] for r in rows}) >= 4
    names = ["manifest.csv"] + [r["path"] for r in rows[:20]]
    assert _digest(a, names) == _digest(b, names)
    assert "SYNTHETIC" in (a / "README.md").read_text()


def test_demo_ct_has_real_headers_and_hu():
    root = demo_root("radiology")
    path = next((root / "dicom").rglob("*.dcm"))
    ds = pydicom.dcmread(path)
    assert ds.Modality == "CT" and ds.PatientID.startswith("DEMO") and float(ds.RescaleIntercept) == -1024
    assert ds.PixelSpacing and ds.WindowCenter is not None
    hu, meta = read(path, reader="dicom")
    assert meta["units"] == "HU" and meta["modality"] == "CT"
    np.testing.assert_allclose(hu[0], apply_modality_lut(ds.pixel_array, ds))
    assert hu.min() < -900 and hu.max() > 0  # air and soft tissue
    win, meta = read(path, reader="dicom", window="lung")
    np.testing.assert_allclose(win[0], apply_window(hu[0], -600, 1500), rtol=0, atol=1e-6)  # float rounding
    assert meta["window"] == [-600.0, 1500.0]


def test_monochrome1_comes_out_inverted(tmp_path):
    from pydicom.data import get_testdata_file

    path = get_testdata_file("MR_small.dcm", download=False)
    ds = pydicom.dcmread(path)
    normal, _ = read(path, reader="dicom", window=[float(ds.WindowCenter), float(ds.WindowWidth)])
    ds.PhotometricInterpretation = "MONOCHROME1"
    out = tmp_path / "m1.dcm"
    ds.save_as(out)
    inverted, meta = read(out, reader="dicom", window=[float(ds.WindowCenter), float(ds.WindowWidth)])
    assert meta["photometric"] == "MONOCHROME1"
    np.testing.assert_allclose(inverted, 1.0 - normal, atol=1e-6)


def test_demo_geotiff_bands_crs_and_nodata():
    root = demo_root("satellite")
    rows = list(csv.DictReader((root / "manifest.csv").open()))
    metas = [read(root / r["path"], reader="raster")[1] for r in rows[:40]]
    assert all(m["crs"] == "EPSG:32633" and m["bands"] == ["R", "G", "B", "NIR"] for m in metas)
    assert any(not m["valid"].all() for m in metas), "some chips should have nodata borders"
    arr, meta = read(root / rows[0]["path"], reader="raster", bands=["NIR", 1])
    assert arr.shape[0] == 2 and meta["bands"] == ["NIR", "R"]


def test_unreadable_file_raises_read_error_naming_it(tmp_path):
    bad = tmp_path / "broken.dcm"
    bad.write_bytes(b"not a dicom at all")
    with pytest.raises(ReadError, match="broken.dcm"):
        read(bad, reader="dicom")
    with pytest.raises(ReadError, match="does not exist"):
        read(tmp_path / "missing.png", reader="image")
