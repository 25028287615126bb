"""Reduction while reading and the fast window: same values as the full-size path, fewer passes."""
from __future__ import annotations

import numpy as np
import pydicom
import pytest
import torch
import torch.nn.functional as F
from pydicom.data import get_testdata_file

from domainclip.readers import read
from domainclip.readers.dicom import modality_values, window_stored
from domainclip.transforms.intensity import apply_window
from domainclip.transforms.pipeline import resize
from domainclip.transforms.spatial import box_reduce, min_side_for, reduction_factor


def pooled(arr: np.ndarray, k: int) -> np.ndarray:
    return F.avg_pool2d(torch.from_numpy(arr)[None], k)[0].numpy()


@pytest.mark.parametrize("shape,k", [((1, 37, 53), 2), ((3, 100, 61), 3), ((2, 64, 64), 4)])
def test_box_reduce_equals_avg_pool_including_integer_input(shape, k):
    arr = np.random.default_rng(0).integers(0, 4096, shape).astype(np.uint16)
    np.testing.assert_allclose(box_reduce(arr, k), pooled(arr.astype(np.float32), k), rtol=1e-6)
    assert box_reduce(arr, 1) is arr


def test_reduction_factor_keeps_both_sides_at_least_min_side():
    assert reduction_factor((1955, 1841), 448) == 4 and 1841 // 4 >= 448
    assert reduction_factor((1, 512, 512), 448) == 1 and reduction_factor((512, 512), None) == 1
    assert min_side_for(224) == 448


@pytest.mark.parametrize("options", [{"window": "file"}, {"window": [41, 81]}, {"window": [700, 1]}, {},
                                     {"multi_window": ["lung", "bone", "brain"]}])
@pytest.mark.parametrize("name,k", [("MR2_UNCI.dcm", 2), ("RG3_UNCI.dcm", 3)])  # MONOCHROME2 MR, MONOCHROME1 CR
def test_dicom_read_with_min_side_equals_pooling_the_full_read(name, k, options):
    path = get_testdata_file(name, download=False)
    full, meta_full = read(path, reader="dicom", **options)
    small, meta = read(path, reader="dicom", min_side=448, **options)
    assert meta["reduced_by"] == k and small.shape[-2:] == (full.shape[-2] // k, full.shape[-1] // k)
    scale = max(1.0, float(np.abs(full).max()))
    np.testing.assert_allclose(small / scale, pooled(full, k) / scale, rtol=0, atol=1e-6)
    if meta_full["spacing"]:
        assert meta["spacing"] == [s * k for s in meta_full["spacing"]]


def test_min_side_is_ignored_by_readers_that_cannot_reduce(tmp_path):
    import rasterio

    with rasterio.open(tmp_path / "big.tif", "w", driver="GTiff", width=900, height=900, count=3,
                       dtype="uint8") as dst:
        dst.write(np.ones((3, 900, 900), np.uint8))
    arr, meta = read(tmp_path / "big.tif", reader="raster", min_side=448)
    assert arr.shape == (3, 900, 900) and "reduced_by" not in meta


class Rescaled:
    """The attributes window_stored reads from a dataset."""

    def __init__(self, slope, intercept):
        self.RescaleSlope, self.RescaleIntercept = slope, intercept


@pytest.mark.parametrize("slope,intercept", [(1, -1024), (3.774114, 0.5), (-2.0, 100.0)])
@pytest.mark.parametrize("level,width", [(40, 400), (40.5, 81), (-600, 1500), (0, 2)])
@pytest.mark.parametrize("dtype", [np.int16, np.uint16])
def test_window_stored_equals_modality_then_window_then_pooling(slope, intercept, level, width, dtype):
    stored = np.random.default_rng(1).integers(0, 3000, (1, 96, 80)).astype(dtype)
    ds = Rescaled(slope, intercept)
    hu = stored.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    ref = apply_window(hu, level, width)
    for k in (1, 2, 4):
        got = window_stored(stored.copy(), ds, level, width, k=k)
        want = pooled(ref, k) if k > 1 else ref
        assert got.min() >= 0 and got.max() <= 1
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)


def test_modality_values_agrees_with_pydicom_on_a_rescaled_mr():
    from pydicom.pixels import apply_modality_lut

    ds = pydicom.dcmread(get_testdata_file("MR2_UNCI.dcm", download=False))
    np.testing.assert_allclose(modality_values(ds.pixel_array, ds), apply_modality_lut(ds.pixel_array, ds), rtol=1e-6)


def test_upsampling_skips_the_antialias_kernel_without_changing_values():
    small = np.random.default_rng(2).random((1, 128, 96), dtype=np.float32)
    x = torch.from_numpy(small)[None]
    antialiased = F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
    np.testing.assert_allclose(resize(small, 224), antialiased, atol=1e-5)
