"""A DICOM file's header, checked before its pixels are decoded.

``pydicom.dcmread`` inflates a deflated file whole and the decoders allocate the declared image
before they find the data short, so a 0.5 MB file declaring 16384 x 16384 pixels costs gigabytes.
Here the header is read first (``stop_before_pixels``; for the deflated transfer syntax, from a
bounded inflated prefix, with the whole stream's inflated size counted without keeping it) and
the declared rows x columns x samples (x frames when all are decoded) is checked against the
reader's ``max_pixels``; only then is the file read in full.
"""
from __future__ import annotations

import zlib
from pathlib import Path

from domainclip.core.errors import ReadError
from domainclip.readers.limits import check_declared

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
HEADER_PREFIX = 4 << 20  # inflated bytes parsed for a deflated file's header (real headers: a few KB)
SLACK = 16 << 20  # inflated bytes allowed beyond the declared pixel data (other elements)
DEFLATED = "1.2.840.10008.1.2.1.99"
PIXEL_TAGS = {0x7FE00008, 0x7FE00009, 0x7FE00010}


def _parse_failure(path, exc: Exception) -> ReadError:
    return ReadError(path, "parse", str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                     "is this a DICOM file? check it with dcmdump")


def read_header(path: Path):
    """``(dataset, has_pixels, inflated_bytes)`` with no pixel decoded. A plain file is read with its
    large values deferred (pydicom reads them from the file only when used, so the dataset serves
    the full read too; ``inflated_bytes`` is None); a deflated one from a bounded inflated prefix."""
    import pydicom

    try:
        meta = pydicom.filereader.read_file_meta_info(path)
        if str(meta.get("TransferSyntaxUID", "")) == DEFLATED:
            return _deflated_header(path, meta)
        ds = pydicom.dcmread(path, defer_size=1024)
        return ds, any(k in ds for k in PIXEL_KEYWORDS), None
    except ReadError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parse failure is a named ReadError
        raise _parse_failure(path, exc) from exc


def _deflated_header(path: Path, meta):
    """Header of a deflated file from a bounded inflated prefix; the whole stream is inflated in
    chunks only to count its size."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filereader import read_dataset

    start = 128 + 4 + 12 + int(meta.get("FileMetaInformationGroupLength", 0) or 0)
    inflater, prefix, total = zlib.decompressobj(-zlib.MAX_WBITS), bytearray(), 0
    with open(path, "rb") as fh:
        fh.seek(start)
        for chunk in iter(lambda: fh.read(1 << 16), b""):
            while chunk:
                out = inflater.decompress(chunk, 1 << 20)
                total += len(out)
                if len(prefix) < HEADER_PREFIX:
                    prefix += out[: HEADER_PREFIX - len(prefix)]
                chunk = inflater.unconsumed_tail
    seen = []

    def at_pixels(tag, vr, length) -> bool:
        seen.append(int(tag) in PIXEL_TAGS)
        return seen[-1]

    ds = read_dataset(DicomBytesIO(bytes(prefix)), False, True, stop_when=at_pixels)
    ds.file_meta = meta
    return ds, any(seen), total


def declared_counts(ds, frame: int | None) -> dict[str, int]:
    """What decoding allocates, as the header declares it: rows x columns x samples, times the
    frames when every frame is decoded (``frame=None``)."""
    counts = {"rows": int(ds.get("Rows", 0) or 0), "columns": int(ds.get("Columns", 0) or 0),
              "samples": int(ds.get("SamplesPerPixel", 1) or 1)}
    frames = int(ds.get("NumberOfFrames", 1) or 1) if "NumberOfFrames" in ds else 1
    if frame is None and frames > 1:
        counts["frames"] = frames
    return counts


def read_checked(path: Path, frame: int | None, max_pixels: int | None):
    """The dataset, once its header passed: pixel data present, a non-empty image, the declared
    size within ``max_pixels`` and, for a deflated file, an inflated size close to what the
    header declares. Nothing is decoded before."""
    import pydicom

    ds, has_pixels, inflated = read_header(path)
    if not has_pixels:
        raise ReadError(path, "pixels", "the file has no Pixel Data (nor Float / Double Float Pixel Data)",
                        "list only image objects in the manifest")
    counts = declared_counts(ds, frame)
    if counts["rows"] == 0 or counts["columns"] == 0:
        raise ReadError(path, "header", f"Rows={counts['rows']}, Columns={counts['columns']}: the header describes "
                        "no image", "the file is damaged or not an image; remove it from the manifest")
    check_declared(path, "header", counts, max_pixels)
    if inflated is None:  # not deflated: the deferred dataset reads its pixels from the file when used
        return ds
    frames = int(ds.get("NumberOfFrames", 1) or 1) if "NumberOfFrames" in ds else 1
    declared_bytes = counts["rows"] * counts["columns"] * counts["samples"] * frames * 8
    if inflated > declared_bytes + SLACK:
        raise ReadError(path, "header", f"the deflated data inflates to {inflated} bytes, far more than the "
                        f"{declared_bytes} its header declares", "the file is damaged or hostile; remove it")
    try:
        return pydicom.dcmread(path)
    except Exception as exc:  # noqa: BLE001
        raise _parse_failure(path, exc) from exc
