"""What a reader may decode: regular files only, and no more pixels than the loader allows.

A decompression bomb (a small file that declares a huge image) is refused from its header, before
any decoding allocates: the declared rows x columns x frames x samples (DICOM), width x height x
bands (rasters), or the size of each slide region and thumbnail level. The limit belongs to
whoever reads: a data card may raise it for its own collection (``reader.options.max_pixels``),
a received bundle never can (``Predictor`` drops it from the bundle's reader options).
"""
from __future__ import annotations

import stat
from pathlib import Path

from domainclip.core.errors import ReadError

DEFAULT_MAX_PIXELS = 64_000_000  # 8000 x 8000; larger images are slides or scenes, read by tiles or chips
LIMIT_OPTIONS = ("max_pixels",)  # reader options that are limits: never taken from a bundle


def require_regular_file(path: Path) -> None:
    """Refuse a FIFO, socket, device or folder before opening it (a FIFO would block forever)."""
    try:
        mode = Path(path).stat().st_mode
    except FileNotFoundError:
        raise ReadError(path, "open", "file does not exist",
                        "check the path (for a data card: its manifest entry and the card's root)") from None
    if not stat.S_ISREG(mode):
        kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode)
                else "a socket" if stat.S_ISSOCK(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                else "not a regular file")
        raise ReadError(path, "open", f"it is {kind}, not a regular file", "pass image files only")


def check_declared(path, what: str, counts: dict[str, int], max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
    """Refuse a read whose declared size (the product of ``counts``, e.g. rows, columns, frames,
    samples) exceeds ``max_pixels``, naming each factor; ``max_pixels=None`` or 0 means no limit."""
    total = 1
    for n in counts.values():
        total *= max(int(n), 0)
    if max_pixels and total > max_pixels:
        declared = " x ".join(f"{n} {k}" for k, n in counts.items())
        raise ReadError(path, what, f"the file declares {declared} = {total} values, over the limit of {max_pixels}",
                        "if the file is genuine, raise reader.options.max_pixels in the card (a slide or a scene "
                        "is read by tiles or chips: use the wsi or raster reader)")
