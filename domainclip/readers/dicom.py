"""DICOM through pydicom: modality LUT, VOI LUT / windows, MONOCHROME1, frames, colour."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from domainclip.errors import ReadError
from domainclip.readers.base import register_reader
from domainclip.transforms.intensity import apply_window

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
IDENTIFYING_TAGS = ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "StudyDate")


def _pixels(ds, path: Path, frame: int | None) -> np.ndarray:
    try:
        if frame is not None and int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
            from pydicom.pixels import pixel_array

            return pixel_array(ds, index=frame)
        return ds.pixel_array
    except Exception as exc:  # noqa: BLE001
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", str(syntax))
        raise ReadError(path, f"decode (transfer syntax {name})", str(exc).splitlines()[0], DECODER_HINT) from exc


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
        "frames": int(getattr(ds, "NumberOfFrames", 1) or 1),
        "ids": {t: str(getattr(ds, t, "")) for t in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID")},
        "source": str(path),
    }


def modality_values(arr: np.ndarray, ds) -> np.ndarray:
    """Modality LUT to float32 (HU for CT). The common linear case (rescale slope/intercept) is
    computed in place in float32; LUT sequences go through pydicom's ``apply_modality_lut``."""
    from pydicom.pixels import apply_modality_lut

    if "ModalityLUTSequence" in ds:
        return apply_modality_lut(arr, ds).astype(np.float32)
    out = arr.astype(np.float32)
    slope, intercept = float(getattr(ds, "RescaleSlope", 1) or 1), float(getattr(ds, "RescaleIntercept", 0) or 0)
    if slope != 1.0:
        out *= slope
    if intercept != 0.0:
        out += intercept
    return out


@register_reader("dicom")
def read_dicom(
    path: Path,
    window=None,
    multi_window: list | None = None,
    frame: int | None = 0,
    voi_lut: bool = False,
) -> tuple[np.ndarray, dict]:
    """Read one DICOM image.

    Grey images come out in modality units (HU for CT) unless ``window`` (a preset name,
    ``'file'`` or ``[level, width]``) or ``voi_lut=True`` maps them to 0..1, with MONOCHROME1
    inverted so that dense tissue is bright. ``multi_window`` stacks three windows as channels.
    Colour images (RGB, YBR, palette) come out as RGB 0..255.
    """
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:  # noqa: BLE001
        raise ReadError(path, "parse", str(exc).splitlines()[0], "is this a DICOM file? check it with dcmdump") from exc
    if "PixelData" not in ds:
        raise ReadError(path, "pixels", "the file has no Pixel Data", "list only image objects in the manifest")
    meta = _meta(ds, path)
    arr = _pixels(ds, path, frame)
    photometric = meta["photometric"]
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        rgb = apply_color_lut(arr, ds).astype(np.float32)
        rgb = rgb / 257.0 if rgb.max() > 255 else rgb  # 16-bit LUT entries -> 0..255
        return rgb.transpose(2, 0, 1), {**meta, "units": "rgb255"}
    if arr.ndim == 3 and arr.shape[-1] == 3:  # pydicom already converts YBR to RGB
        return arr.astype(np.float32).transpose(2, 0, 1), {**meta, "units": "rgb255"}
    hu = modality_values(arr, ds)
    if multi_window:
        chans = [apply_window(hu, *_resolve_window(w, ds)) for w in multi_window]
        return np.stack(chans), {**meta, "units": "unit", "windows": [list(_resolve_window(w, ds)) for w in multi_window]}
    if voi_lut:
        out = apply_voi_lut(hu, ds).astype(np.float32)
        out = (out - out.min()) / max(float(out.max() - out.min()), 1e-6)
        meta.update(units="unit")
    elif (win := _resolve_window(window, ds)) is not None:
        out, meta["window"] = apply_window(hu, *win, inplace=True), list(win)  # hu is our own float32 copy
        meta["units"] = "unit"
    else:
        out, meta["units"] = hu, ("HU" if meta["modality"] == "CT" else "raw")
    if photometric == "MONOCHROME1":
        out = np.subtract(1.0, out, out=out) if meta["units"] == "unit" else out.max() + out.min() - out
    return out[None], meta
