"""Hostile inputs, second round (issue 37): decompression bombs outside PNG/JPEG refused from their
headers with memory bounded by ``resource.setrlimit``, FIFOs refused before opening, 16-bit grey
images read at full depth, float DICOM read, JSON nesting bombs, and card values that used to pass
(NaN fractions, a blank separator, look-alike class names, mistyped JSONL cells)."""
from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pydicom
import pytest
import yaml
from PIL import Image
from test_hostile_cards import tile_collection

from domainclip.cards import load_card
from domainclip.cards.manifest import read_records
from domainclip.core.errors import CardError, ReadError
from domainclip.core.names import file_slug, name_key
from domainclip.core.safe_json import loads_bounded, nesting_depth
from domainclip.readers import read
from domainclip.transforms.intensity import apply_window

HEADROOM = 300 << 20  # address space a bounded read may add to the child's imports


def bounded(body: str, headroom: int = HEADROOM) -> subprocess.CompletedProcess:
    """Run ``body`` in a fresh interpreter whose address space is capped at what its imports use
    plus ``headroom`` (``resource.setrlimit``): a read that allocates a bomb's declared size dies."""
    code = textwrap.dedent(f"""
        import resource
        from domainclip.readers import read
        from domainclip.core.errors import ReadError
        import numpy, pydicom, PIL.Image, rasterio, tiffslide
        vm = next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmSize'))
        resource.setrlimit(resource.RLIMIT_AS, (vm + {headroom}, resource.RLIM_INFINITY))
    """) + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)


def refused_within_memory(path, reader: str, **options) -> str:
    proc = bounded(f"""
        try:
            read({str(path)!r}, reader={reader!r}, **{options!r})
        except ReadError as exc:
            print("REFUSED", exc)
    """)
    assert proc.returncode == 0 and proc.stdout.startswith("REFUSED"), proc.stderr[-2000:] or proc.stdout
    return proc.stdout


# ----- DICOM ------------------------------------------------------------------------------------
def dicom_header(rows: int, cols: int, syntax: str) -> pydicom.Dataset:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.7", generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.Rows, ds.Columns = "OT", rows, cols
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    return ds


def deflated_bomb(path, side: int = 16384) -> None:
    """A deflated DICOM declaring side x side 16-bit pixels, all zero: a few hundred KB on disk.
    The file meta is pydicom's; the deflated body is streamed here (never held whole)."""
    from pydicom.filewriter import write_dataset, write_file_meta_info

    ds = dicom_header(side, side, "1.2.840.10008.1.2.1.99")
    head = io.BytesIO()
    head.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(pydicom.filebase.DicomFileLike(head), ds.file_meta, enforce_standard=True)
    body = pydicom.filebase.DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    plain = pydicom.Dataset({k: ds[k] for k in ds.keys()})
    write_dataset(body, plain)
    n = side * side * 2
    pixel_header = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, n)
    deflater = zlib.compressobj(1, zlib.DEFLATED, -zlib.MAX_WBITS)  # fast; ~2.3 MB
    with open(path, "wb") as fh:
        fh.write(head.getvalue())
        fh.write(deflater.compress(body.getvalue() + pixel_header))
        zeros = bytes(1 << 22)
        for _ in range(n // len(zeros)):
            fh.write(deflater.compress(zeros))
        fh.write(deflater.flush())


def test_deflated_dicom_bomb_is_refused_from_its_header_within_bounded_memory(tmp_path):
    path = tmp_path / "bomb.dcm"
    deflated_bomb(path)
    assert path.stat().st_size < 4 << 20  # ~2 MB declaring 512 MB of pixels
    out = refused_within_memory(path, "dicom")
    assert "16384 rows x 16384 columns x 1 samples" in out and "over the limit" in out


def test_rle_dicom_declaring_a_huge_image_is_refused_before_allocating(tmp_path):
    from pydicom.encaps import encapsulate

    ds = dicom_header(20000, 20000, "1.2.840.10008.1.2.5")  # RLE Lossless
    header = struct.pack("<16I", 1, 64, *([0] * 14))  # one segment, far too short
    ds.PixelData = encapsulate([header + b"\x00" * 64])
    ds["PixelData"].VR = "OB"
    ds.save_as(tmp_path / "rle.dcm", enforce_file_format=True)
    out = refused_within_memory(tmp_path / "rle.dcm", "dicom")
    assert "20000 rows x 20000 columns" in out


def test_a_genuine_large_dicom_passes_when_the_card_raises_the_limit(tmp_path):
    ds = dicom_header(300, 200, pydicom.uid.ExplicitVRLittleEndian)
    ds.PixelData = np.arange(60000, dtype="<u2").tobytes()
    ds.save_as(tmp_path / "ok.dcm", enforce_file_format=True)
    with pytest.raises(ReadError, match="max_pixels"):
        read(tmp_path / "ok.dcm", reader="dicom", max_pixels=10_000)
    arr, _ = read(tmp_path / "ok.dcm", reader="dicom", max_pixels=60_000)
    np.testing.assert_array_equal(arr[0], np.arange(60000, dtype=np.float32).reshape(300, 200))


def test_float_pixel_data_dicom_is_read_not_called_pixel_less(tmp_path):
    ds = dicom_header(4, 5, pydicom.uid.ExplicitVRLittleEndian)
    ds.BitsAllocated, ds.PixelRepresentation = 32, 0
    del ds.BitsStored, ds.HighBit
    values = np.linspace(-1.5, 2.5, 20, dtype="<f4").reshape(4, 5)
    ds.FloatPixelData = values.tobytes()
    ds.save_as(tmp_path / "float.dcm", enforce_file_format=True)
    arr, meta = read(tmp_path / "float.dcm", reader="dicom")
    np.testing.assert_array_equal(arr[0], values)
    assert meta["units"] == "raw"


# ----- rasters and slides -------------------------------------------------------------------------
def test_sparse_geotiff_declaring_a_huge_scene_is_refused_within_bounded_memory(tmp_path):
    import rasterio

    path = tmp_path / "sparse.tif"
    with rasterio.open(path, "w", driver="GTiff", width=60000, height=60000, count=1, dtype="uint8", tiled=True,
                       compress="deflate", sparse_ok=True):
        pass  # nothing written: every block is sparse
    assert path.stat().st_size < 1 << 20
    out = refused_within_memory(path, "raster")
    assert "60000 columns x 60000 rows x 1 bands" in out
    from domainclip.data.expand import file_cells

    with pytest.raises(ReadError, match="grid.*60000 columns x 60000 rows"):
        file_cells("raster", path, {"chip_size": 64})


def test_slide_without_a_pyramid_is_refused_before_its_thumbnail_is_decoded(tmp_path):
    import tifffile

    path = tmp_path / "flat.tif"
    tile = np.full((512, 512, 3), 230, np.uint8)
    side = 9216  # 85 MP at level 0, no other level: a thumbnail would decode all of it
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write((tile for _ in range((side // 512) ** 2)), shape=(side, side, 3), dtype=np.uint8, tile=(512, 512),
                  photometric="rgb", compression="zlib", resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER")
    tile = bounded(f"arr, meta = read({str(path)!r}, reader='wsi', x=512, y=512, tile_size=64); print('READ', arr.shape)")
    assert "READ (3, 64, 64)" in tile.stdout, tile.stderr[-2000:]  # one tile is a small read: allowed
    grid = bounded(f"""
        from domainclip.data.expand import file_cells
        try:
            file_cells('wsi', {str(path)!r}, {{'tile_size': 64}})
        except ReadError as exc:
            print('REFUSED', exc)
    """)
    assert "thumbnail): the file declares 9216 columns x 9216 rows" in grid.stdout, grid.stderr[-2000:]


# ----- FIFOs ------------------------------------------------------------------------------------
@pytest.mark.parametrize("reader", ["image", "dicom", "raster", "tiles"])
def test_a_fifo_is_refused_before_it_is_opened(tmp_path, reader):
    fifo = tmp_path / "input.png"
    os.mkfifo(fifo)  # opening it for reading would block until a writer came
    with pytest.raises(ReadError, match="FIFO"):
        read(fifo, reader=reader)
    folder = tmp_path / "folder.png"
    folder.mkdir()
    with pytest.raises(ReadError, match="a folder, not a regular file"):
        read(folder, reader=reader)


# ----- 16-bit grey ------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_sixteen_bit_grey_image_is_read_at_full_depth(tmp_path, suffix):
    source = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 4096)  # 0..4095, a CT/X-ray export
    path = tmp_path / f"ct{suffix}"
    Image.fromarray(source).save(path)
    assert Image.open(path).mode.startswith("I;16")
    arr, meta = read(path, reader="image")
    np.testing.assert_array_equal(arr[0], source.astype(np.float32))
    assert meta["units"] == "raw" and len(np.unique(arr)) == 4096  # before: 256 of 4096 values survived
    windowed, meta = read(path, reader="image", window=[2048, 4096])
    np.testing.assert_allclose(windowed[0], apply_window(source.astype(np.float32), 2048, 4096), atol=1e-6)
    assert meta["units"] == "unit"
    reduced, meta = read(path, reader="image", min_side=16)
    assert meta["reduced_by"] == 4 and reduced.shape == (1, 16, 16)
    np.testing.assert_allclose(reduced[0, 0, 0], source[:4, :4].mean(), rtol=1e-6)


# ----- JSON nesting -----------------------------------------------------------------------------
def test_json_nesting_bomb_is_one_line_not_a_recursion_error(tmp_path):
    bomb = "[" * 100_000 + "]" * 100_000
    assert nesting_depth(bomb) == 100_000 and nesting_depth('{"a": "[[[[", "b": [1, {"c": 2}]}') == 3
    assert json.loads('{"a": "[[[[", "b": [1, {"c": 2}]}') == loads_bounded('{"a": "[[[[", "b": [1, {"c": 2}]}', "x",
                                                                             CardError)
    with pytest.raises(CardError, match="nested 100000 levels deep"):
        loads_bounded(bomb, "x", CardError)
    card = tile_collection(tmp_path, n=4)
    spec = yaml.safe_load(card.read_text())
    rows = [{"path": f"t{i}.png", "label": "tumour" if i % 2 else "benign", "patient": f"p{i}"} for i in range(4)]
    lines = [json.dumps(r) for r in rows] + ['{"path": ' + bomb + "}"]
    (tmp_path / "rows.jsonl").write_text("\n".join(lines) + "\n")
    spec["manifest"] = "rows.jsonl"
    card.write_text(yaml.safe_dump(spec))
    with pytest.raises(CardError, match=r"rows.jsonl: line 5: JSON nested 100001 levels deep"):
        read_records(load_card(card)[0], tmp_path)


# ----- card values ------------------------------------------------------------------------------
def card_with(tmp_path, **changes):
    card = tile_collection(tmp_path, n=4)
    spec = yaml.safe_load(card.read_text())
    spec.update(changes)
    card.write_text(yaml.safe_dump(spec, allow_unicode=True))
    return card


@pytest.mark.parametrize("changes, match", [
    ({"split": {"fractions": {"train": float("nan"), "val": 0.5, "test": 0.5}}}, "fractions must be >= 0"),
    ({"label_separator": ""}, "label_separator"),
    ({"label_separator": "  "}, "label_separator"),
    ({"classes": [{"name": "Tumour"}, {"name": "tumour "}]}, "differ only by case, spacing or invisible"),
    ({"classes": [{"name": "tumour"}, {"name": "tu\u200bmour"}]}, "differ only by case, spacing or invisible"),
    ({"classes": [{"name": "ﬁbrosis"}, {"name": "FIBROSIS"}]}, "differ only by case, spacing or invisible"),
])
def test_card_values_that_used_to_pass_are_refused(tmp_path, changes, match):
    with pytest.raises(CardError, match=match):
        load_card(card_with(tmp_path, **changes))


def test_look_alike_names_share_a_key_and_file_names_stay_distinct():
    looks = ["Tumour", "tumour ", "tu\u200bmour", "TUMOUR"]
    assert {name_key(n) for n in looks} == {"tumour"}
    assert len({file_slug(i, n) for i, n in enumerate(looks)}) == 4
    assert file_slug(3, "Ground-glass opacity") == "03_ground_glass_opacity" and file_slug(0, "\u200b") == "00"


@pytest.mark.parametrize("row, match", [
    ({"path": ["t0.png"], "label": "benign", "patient": "p0"}, "column 'path': list"),
    ({"path": "t0.png", "label": True, "patient": "p0"}, "column 'label': bool 'True' is not a class name"),
    ({"path": "t0.png", "label": ["benign"], "patient": "p0"}, "column 'label': list"),
    ({"path": "t0.png", "label": "benign", "patient": {"id": 1}}, "column 'patient': dict"),
    ({"path": "t0.png", "label": "benign", "patient": False}, "column 'patient': bool"),
])
def test_jsonl_cells_of_the_wrong_type_are_refused_naming_row_and_column(tmp_path, row, match):
    card = tile_collection(tmp_path, n=4)
    spec = yaml.safe_load(card.read_text())
    good = [{"path": f"t{i}.png", "label": "tumour" if i % 2 else "benign", "patient": f"p{i}"} for i in range(1, 4)]
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in [*good, row]) + "\n")
    spec["manifest"] = "rows.jsonl"
    card.write_text(yaml.safe_dump(spec))
    with pytest.raises(CardError, match=rf"rows.jsonl row 4, {match}"):
        read_records(load_card(card)[0], tmp_path)
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in [*good, {"path": "t0.png", "label": "benign", "patient": 7}]))
    assert [r.group for r in read_records(load_card(card)[0], tmp_path)][-1] == "7"  # a numeric id is fine
