"""The Reader contract: ``read(path, **options) -> (float32 channel-first array, meta)``."""
from __future__ import annotations

import inspect
from functools import lru_cache
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from domainclip.core.errors import ReadError
from domainclip.core.registry import Registry
from domainclip.readers.limits import require_regular_file
from domainclip.transforms.spatial import min_side_for


class ReaderFn(Protocol):
    def __call__(self, path: Path, **options) -> tuple[np.ndarray, dict]: ...


READERS: Registry[ReaderFn] = Registry("reader")


def read(path: str | Path, reader: str = "image", min_side: int | None = None, **options) -> tuple[np.ndarray, dict]:
    """Read ``path`` with the reader registered as ``reader``.

    Returns a channel-first float32 array in the reader's natural units and a metadata dict
    (``modality``, ``units``, spacing, ``source``...). Raises ``ReadError`` naming the file.
    ``min_side`` lets a reader that can reduce while decoding (``dicom``) return the image shrunk
    by an integer factor with both sides >= ``min_side``; other readers ignore it.
    """
    fn = READERS.get(reader)
    path = Path(path)
    require_regular_file(path)  # before any open: a FIFO would block, a folder has no pixels
    if min_side is not None and _accepts(fn, "min_side"):
        options["min_side"] = min_side
    try:
        array, meta = fn(path, **options)
    except ReadError:
        raise
    except TypeError as exc:
        raise ReadError(path, "options", str(exc), f"check the options given to reader '{reader}'") from exc
    except Exception as exc:  # noqa: BLE001 - any decoder failure becomes a named ReadError
        raise ReadError(path, "decode", f"{type(exc).__name__}: {exc}") from exc
    meta.setdefault("source", str(path))
    array = ensure_channel_first(array, path)
    check_values(array, meta, path)
    return array, meta


def read_record(record, reader: str, options: dict, size: int | None = None) -> tuple[np.ndarray, dict]:
    """``read`` a card record with the card's reader options and the record's own (tiles, chips,
    frames); with the tower's input ``size``, readers that can may reduce the image while reading."""

    return read(record.path, reader=reader, min_side=min_side_for(size) if size else None, **options,
                **record.extra.get("read_options", {}))


@lru_cache(maxsize=None)
def _accepts(fn: Callable, name: str) -> bool:
    return name in inspect.signature(fn).parameters


def ensure_channel_first(array: np.ndarray, path: Path) -> np.ndarray:
    """Validate the reader output: float32, (C, H, W)."""
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise ReadError(path, "shape", f"expected a (C, H, W) image, got shape {array.shape}")
    return array


def check_values(array: np.ndarray, meta: dict, path: Path) -> None:
    """Refuse NaN/inf pixels (a NaN rescale slope, a broken float file). Where the format has
    nodata (a ``meta['valid']`` mask), non-finite pixels become nodata instead; an image with no
    valid pixel left is refused."""
    if array.size == 0:
        raise ReadError(path, "shape", f"the image is empty (shape {array.shape})", "remove the file from the manifest")
    all_finite = bool(np.isfinite(array.min()) and np.isfinite(array.max()))  # NaN propagates; no mask
    valid = meta.get("valid")
    if valid is not None:
        if not all_finite:
            bad = ~np.isfinite(array).all(axis=0)
            array[:, bad] = 0.0
            meta["valid"] = valid = valid & ~bad
        if not valid.any():
            raise ReadError(path, "nodata", "every pixel is nodata",
                            "remove it from the manifest (chips with too little data are skipped by min_valid)")
    elif not all_finite:
        n = int(array.size - np.isfinite(array).sum())
        raise ReadError(path, "values", f"{n} of {array.size} pixel values are NaN or infinite",
                        "fix or remove the file; for DICOM check RescaleSlope, RescaleIntercept and the window tags")


def register_reader(name: str) -> Callable[[ReaderFn], ReaderFn]:
    """Register a reader function under ``name``."""
    return READERS.register(name)
