"""The DICOM reader over every test file shipped by pydicom and pydicom-data (no downloads)."""
from __future__ import annotations

import glob
import os
import warnings

import numpy as np
import pydicom
import pydicom.data
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from domainclip.core.errors import ReadError
from domainclip.readers import read

SKIP_SUFFIXES = (".py", ".pyc", ".txt", ".json", ".gz", ".bz2", ".zip", ".md", ".xml", ".csv")


def shipped_names() -> list[str]:
    dirs = [os.path.join(os.path.dirname(pydicom.data.__file__), "test_files")]
    try:
        import data_store  # the pydicom-data package

        dirs.append(os.path.join(os.path.dirname(data_store.__file__), "data"))
    except ImportError:
        pass
    return sorted({os.path.basename(p) for d in dirs for p in glob.glob(f"{d}/**/*", recursive=True)
                   if os.path.isfile(p) and not p.endswith(SKIP_SUFFIXES)})


def pydicom_decodes(path: str) -> bool:
    try:
        pydicom.dcmread(path).pixel_array
        return True
    except Exception:  # noqa: BLE001
        return False


def test_every_shipped_file_reads_or_raises_a_named_read_error():
    names = shipped_names()
    assert len(names) > 150, "pydicom-data should be installed with the dev extras"
    decoded = refused = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in names:
            path = get_testdata_file(name, download=False)
            try:
                arr, _ = read(path, reader="dicom")
            except ReadError as exc:
                assert name in str(exc)
                assert not pydicom_decodes(path), f"pydicom decodes {name} but the reader refused it: {exc}"
                refused += 1
                continue
            assert np.isfinite(arr).all(), name
            decoded += 1
    assert decoded > 100 and refused > 10


@pytest.mark.parametrize("name", ["CT_small.dcm", "693_J2KR.dcm", "693_UNCR.dcm", "JPEG-LL.dcm"])
def test_ct_values_match_apply_modality_lut(name):
    path = get_testdata_file(name, download=False)
    ds = pydicom.dcmread(path)
    hu, meta = read(path, reader="dicom")
    ref = apply_modality_lut(ds.pixel_array, ds)
    rng = np.random.default_rng(0)
    ys, xs = rng.integers(0, ref.shape[0], 50), rng.integers(0, ref.shape[1], 50)
    np.testing.assert_allclose(hu[0][ys, xs], ref[ys, xs])


def test_voi_lut_matches_apply_voi_lut():
    path = get_testdata_file("CT_small.dcm", download=False)
    ds = pydicom.dcmread(path)
    out, meta = read(path, reader="dicom", voi_lut=True)
    ref = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds).astype(np.float32)
    ref = (ref - ref.min()) / (ref.max() - ref.min())
    np.testing.assert_allclose(out[0], ref, atol=1e-6)


def test_monochrome1_chest_radiograph_has_bright_bone():
    path = get_testdata_file("RG1_UNCI.dcm", download=False)
    img, meta = read(path, reader="dicom", window="file")
    assert meta["photometric"] == "MONOCHROME1"
    a = img[0]
    h, w = a.shape
    spine = a[int(0.1 * h) : int(0.4 * h), int(0.47 * w) : int(0.53 * w)].mean()
    lungs = np.mean([a[int(0.3 * h) : int(0.5 * h), int(fx * w) - 40 : int(fx * w) + 40].mean() for fx in (0.3, 0.7)])
    assert spine > lungs + 0.15, (spine, lungs)


def test_multi_window_stacks_three_channels():
    path = get_testdata_file("CT_small.dcm", download=False)
    img, meta = read(path, reader="dicom", multi_window=["lung", "mediastinum", "bone"])
    assert img.shape[0] == 3 and 0 <= img.min() and img.max() <= 1
    assert not np.allclose(img[0], img[1])


def test_palette_and_multiframe_give_rgb_and_select_frames():
    path = get_testdata_file("OBXXXX1A_2frame.dcm", download=False)
    f0, meta = read(path, reader="dicom", frame=0)
    f1, _ = read(path, reader="dicom", frame=1)
    assert f0.shape[0] == 3 and meta["units"] == "rgb255" and meta["frames"] == 2
    assert 0 <= f0.min() and f0.max() <= 255 and not np.array_equal(f0, f1)


def test_undecodable_file_names_transfer_syntax_and_fix(tmp_path):
    path = get_testdata_file("JPEG2000.dcm", download=False)
    ds = pydicom.dcmread(path)
    ds.PixelData = ds.PixelData[:200]  # truncated codestream
    bad = tmp_path / "truncated_j2k.dcm"
    ds.save_as(bad)
    with pytest.raises(ReadError) as err:
        read(bad, reader="dicom")
    msg = str(err.value)
    assert "truncated_j2k.dcm" in msg and "JPEG 2000" in msg and "pip install" in msg
