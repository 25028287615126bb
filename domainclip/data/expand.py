"""Expand whole slides into tissue tiles and large rasters into chips (one record each)."""
from __future__ import annotations

from dataclasses import replace

from domainclip.cards.manifest import Record
from domainclip.readers.limits import require_regular_file
from domainclip.readers.raster import chip_grid
from domainclip.readers.wsi import cached_plan, tile_grid

GRID_OPTIONS = {
    "wsi": ("mpp", "tile_size", "min_tissue", "backend", "base_mpp", "max_tiles", "max_pixels"),
    "raster": ("chip_size", "stride", "min_valid", "nodata", "max_pixels"),
}


def _grid(reader: str, path, options: dict) -> list[dict]:
    require_regular_file(path)
    opts = {k: v for k, v in options.items() if k in GRID_OPTIONS[reader]}
    if reader == "wsi":
        return tile_grid(path, **opts)

    return chip_grid(path, **opts)


def file_cells(reader: str, path, options: dict) -> list[dict]:
    """The tiles (tissue-filtered) or chips (enough valid pixels) a run reads from one file, as the
    read options of each (``x``/``y`` or ``col``/``row``)."""
    keys = ("x", "y", "col", "row")
    return [{k: v for k, v in cell.items() if k in keys} for cell in _grid(reader, path, options)]


def has_cells(reader: str, path, options: dict) -> bool:
    """True when the file gives at least one tile or chip."""
    return bool(_grid(reader, path, {**options, "max_tiles": 1} if reader == "wsi" else options))


def needs_expansion(reader: str, options: dict) -> bool:
    """Slides are always tiled; rasters only when the card sets ``chip_size``."""
    return reader == "wsi" or (reader == "raster" and bool(options.get("chip_size")))


def expand_records(records: list[Record], reader: str, options: dict) -> list[Record]:
    """One record per tile/chip, inheriting the parent's labels and group (slide, scene)."""
    if not needs_expansion(reader, options):
        return records
    out = []
    for rec in records:
        for cell in _grid(reader, rec.path, options):
            location = {k: v for k, v in cell.items() if k in ("x", "y", "col", "row")}
            out.append(replace(rec, extra={**rec.extra, "read_options": location, "grid": cell}))
    return out


def cell_side(reader: str, path, options: dict) -> int:
    """The side, in the file's full-resolution pixels, that one tile or chip covers."""
    if reader == "wsi":
        plan = cached_plan(str(path), options.get("backend", "tiffslide"), options.get("mpp"),
                           int(options.get("tile_size", 224)), options.get("base_mpp"))
        return int(round(plan.step0))
    return int(options["chip_size"])


def cell_origin(cell: dict) -> tuple[int, int]:
    """(column, row) of a tile's or chip's top-left corner in full-resolution pixels."""
    return (int(cell["x"]), int(cell["y"])) if "x" in cell else (int(cell["col"]), int(cell["row"]))
