"""DICOM through pydicom: modality LUT, VOI LUT / windows, MONOCHROME1, frames, colour."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from domainclip.core.errors import ReadError
from domainclip.readers.base import register_reader
from domainclip.readers.dicom_header import read_checked
from domainclip.readers.limits import DEFAULT_MAX_PIXELS
from domainclip.transforms.intensity import apply_window
from domainclip.transforms.spatial import box_reduce, box_sum, reduction_factor

# Named windows as (level, width) in HU.
WINDOW_PRESETS = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "soft_tissue": (40.0, 400.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "liver": (60.0, 160.0),
}
DECODER_HINT = "pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg python-gdcm"


def _pixels(ds, path: Path, frame: int | None) -> np.ndarray:
    """Decode through ``pydicom.pixels.pixel_array`` (what ``ds.pixel_array`` calls, without the
    dataset's array cache, which costs ~15% of a small file's decode)."""
    from pydicom.pixels import pixel_array

    multi_frame = "NumberOfFrames" in ds and int(ds.NumberOfFrames or 1) > 1
    try:
        return pixel_array(ds, index=frame if multi_frame else None)
    except Exception as exc:  # noqa: BLE001
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", str(syntax))
        hint = DECODER_HINT if getattr(syntax, "is_compressed", True) else (
            "the pixel data is shorter or longer than the header says: the file is truncated or damaged; "
            "re-export it or remove it from the manifest")
        raise ReadError(path, f"decode (transfer syntax {name})", str(exc).splitlines()[0], hint) from exc


def _file_window(ds) -> tuple[float, float] | None:
    wc, ww = getattr(ds, "WindowCenter", None), getattr(ds, "WindowWidth", None)
    if wc is None or ww is None:
        return None
    first = lambda v: float(v[0]) if hasattr(v, "__len__") and not isinstance(v, str) else float(v)  # noqa: E731
    return first(wc), first(ww)


def _resolve_window(window, ds) -> tuple[float, float] | None:
    if window in (None, "none"):
        return None
    if window == "file":
        return _file_window(ds) or WINDOW_PRESETS["soft_tissue"]
    if isinstance(window, str):
        if window not in WINDOW_PRESETS:
            raise ValueError(f"unknown window {window!r}; presets: {sorted(WINDOW_PRESETS)}, 'file', or [level, width]")
        return WINDOW_PRESETS[window]
    level, width = window
    return float(level), float(width)


def _meta(ds, path: Path) -> dict:
    spacing = getattr(ds, "PixelSpacing", None)
    return {
        "modality": str(getattr(ds, "Modality", "OT")),
        "spacing": [float(s) for s in spacing] if spacing is not None else None,
        "photometric": str(getattr(ds, "PhotometricInterpretation", "")),
        "frames": int(ds.NumberOfFrames or 1) if "NumberOfFrames" in ds else 1,
        "source": str(path),
    }


def _rescale(ds) -> tuple[float, float]:
    """(slope, intercept) of the linear modality LUT."""
    return float(getattr(ds, "RescaleSlope", 1) or 1), float(getattr(ds, "RescaleIntercept", 0) or 0)


def modality_values(arr: np.ndarray, ds) -> np.ndarray:
    """Modality LUT to float32 (HU for CT). The common linear case (rescale slope/intercept) is
    computed in place in float32; LUT sequences go through pydicom's ``apply_modality_lut``."""
    from pydicom.pixels import apply_modality_lut

    if "ModalityLUTSequence" in ds:
        return apply_modality_lut(arr, ds).astype(np.float32)
    out = arr.astype(np.float32)
    slope, intercept = _rescale(ds)
    if slope != 1.0:
        out *= slope
    if intercept != 0.0:
        out += intercept
    return out


def _clip_stored(arr: np.ndarray, low: float, high: float) -> np.ndarray:
    """Clip stored values to [low, high]: in their own integer dtype when both bounds are whole
    numbers (no float copy of the full image), else straight into float32 (one pass)."""
    if arr.dtype.kind in "iu" and float(low).is_integer() and float(high).is_integer():
        info = np.iinfo(arr.dtype)
        low, high = (arr.dtype.type(min(max(int(b), int(info.min)), int(info.max))) for b in (low, high))
        return np.clip(arr, low, high, out=arr)  # typed bounds: numpy's fast loop (Python ints are ~6x slower)
    return np.clip(arr, np.float32(low), np.float32(high), dtype=np.float32)


def window_stored(arr: np.ndarray, ds, level: float, width: float, k: int = 1) -> np.ndarray:
    """Linear modality LUT + window to 0..1 with a k x k box reduction, from stored values.

    The window's clip is moved to stored units (the modality LUT is monotone), the k x k block
    sums run on the clipped stored values, and one affine map then gives 0..1 on the reduced image:
    equal to ``apply_window(modality_values(arr))`` followed by the block mean, to float rounding,
    with a fraction of its passes over the full image. Needs ``width > 1``: a width-1 window is a
    threshold, which the full-size path computes exactly.
    """
    slope, intercept = _rescale(ds)
    low, span = level - 0.5 - (width - 1) / 2, max(width - 1, 1e-6)  # apply_window's line
    bounds = sorted(((low - intercept) / slope, (low + span - intercept) / slope))
    clipped = _clip_stored(arr, *bounds)
    out = box_sum(clipped, k) if k > 1 else clipped.astype(np.float32, copy=False)
    out *= slope / (span * k * k)
    out += (intercept - low) / span
    return np.clip(out, 0.0, 1.0, out=out)


def _colour(arr: np.ndarray, ds, meta: dict, k: int) -> tuple[np.ndarray, dict]:
    """Palette or RGB (pydicom converts YBR) pixels as RGB 0..255, channel first."""
    if meta["photometric"] == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        rgb = apply_color_lut(arr, ds).astype(np.float32)
        rgb = rgb / 257.0 if rgb.max() > 255 else rgb  # 16-bit LUT entries -> 0..255
    else:
        rgb = arr.astype(np.float32)
    return box_reduce(rgb.transpose(2, 0, 1), k), {**meta, "units": "rgb255"}


def _invert_monochrome1(out: np.ndarray, meta: dict) -> np.ndarray:
    """MONOCHROME1 (dense tissue dark) flipped so that dense tissue is bright."""
    if meta["photometric"] != "MONOCHROME1":
        return out
    unit = meta["units"] == "unit"
    return np.subtract(1.0, out, out=out) if unit else out.max() + out.min() - out


def _grey(arr: np.ndarray, ds, meta: dict, window, multi_window, voi_lut: bool, k: int) -> np.ndarray:
    """Grey pixels: windowed to 0..1, VOI LUT, several windows, or modality units; MONOCHROME1
    inverted; reduced by k."""
    from pydicom.pixels import apply_voi_lut

    win = None if multi_window or voi_lut else _resolve_window(window, ds)
    if win is not None and win[1] > 1 and "ModalityLUTSequence" not in ds:  # width 1 is a threshold: exact path
        meta.update(units="unit", window=list(win))
        return _invert_monochrome1(window_stored(arr, ds, *win, k=k), meta)[None]
    hu = modality_values(arr, ds)
    if multi_window:
        meta.update(units="unit", windows=[list(_resolve_window(w, ds)) for w in multi_window])
        out = np.stack([apply_window(hu, *_resolve_window(w, ds)) for w in multi_window])
    elif voi_lut:
        out = apply_voi_lut(hu, ds).astype(np.float32)
        out, meta["units"] = (out - out.min()) / max(float(out.max() - out.min()), 1e-6), "unit"
    elif win is not None:
        out, meta["units"], meta["window"] = apply_window(hu, *win, inplace=True), "unit", list(win)
    else:
        out, meta["units"] = hu, ("HU" if meta["modality"] == "CT" else "raw")
    out = _invert_monochrome1(out, meta)  # before reducing: uses min and max
    return box_reduce(out if multi_window else out[None], k)


@register_reader("dicom")
def read_dicom(
    path: Path,
    window=None,
    multi_window: list | None = None,
    frame: int | None = 0,
    voi_lut: bool = False,
    min_side: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> tuple[np.ndarray, dict]:
    """Read one DICOM image.

    Grey images come out in modality units (HU for CT) unless ``window`` (a preset name,
    ``'file'`` or ``[level, width]``) or ``voi_lut=True`` maps them to 0..1, with MONOCHROME1
    inverted so that dense tissue is bright. ``multi_window`` stacks three windows as channels.
    Colour images (RGB, YBR, palette) come out as RGB 0..255. With ``min_side``, a large image is
    box-reduced by the largest integer factor k that keeps both sides >= ``min_side``
    (``meta['reduced_by'] = k``, spacing scaled by k). The header is read and its declared size
    checked against ``max_pixels`` before any pixel is decoded (see ``dicom_header``).
    """
    ds = read_checked(path, frame, max_pixels)
    arr = _pixels(ds, path, frame)  # first: decoding converts the pixel-module tags _meta reads again
    meta = _meta(ds, path)
    colour = meta["photometric"] == "PALETTE COLOR" or (arr.ndim == 3 and arr.shape[-1] == 3)
    k = reduction_factor(arr.shape[:2] if colour else arr.shape, min_side)
    if k > 1:
        meta["reduced_by"] = k
        meta["spacing"] = [s * k for s in meta["spacing"]] if meta["spacing"] else None
    if colour:
        return _colour(arr, ds, meta, k)
    return _grey(arr, ds, meta, window, multi_window, voi_lut, k), meta
