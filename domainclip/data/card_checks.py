"""Checks of a loaded card that need the readers and transforms: reader options against each
reader's own signature, ``transforms:`` keys, and that every class can be evaluated."""
from __future__ import annotations

import inspect
from pathlib import Path

from domainclip.cards.schema import DataCard
from domainclip.core.errors import CardError
from domainclip.data.expand import GRID_OPTIONS
from domainclip.readers import READERS
from domainclip.transforms.pipeline import DomainOptions

PER_RECORD = {"path", "min_side", "x", "y", "col", "row"}  # set by the pipeline per tile/chip, not by cards
TRANSFORM_KEYS = sorted(k for k in DomainOptions.__dataclass_fields__ if k != "extra")


def reader_parameters(name: str) -> set[str]:
    """Option names a card may set for reader ``name``."""
    params = inspect.signature(READERS.get(name)).parameters
    return (set(params) | set(GRID_OPTIONS.get(name, ()))) - PER_RECORD


def check_reader_options(card: DataCard, path: Path) -> None:
    """Every ``reader.options`` key must be a parameter of the reader (typos are errors)."""
    try:
        allowed = reader_parameters(card.reader.name)
    except Exception as exc:  # noqa: BLE001 - the registry names what exists
        raise CardError(f"{path}: field 'reader.name': {exc}") from None
    unknown = sorted(set(card.reader.options) - allowed)
    if unknown:
        raise CardError(f"{path}: field 'reader.options': unknown option(s) {unknown} for reader "
                        f"'{card.reader.name}'; allowed: {sorted(allowed)}")
    bands = card.reader.options.get("bands", None)
    if bands is not None and (not isinstance(bands, list) or not bands):
        raise CardError(f"{path}: field 'reader.options.bands': give a non-empty list of band names or "
                        f"1-based indexes, or leave it out to read every band (got {bands!r})")


def check_label_level(card: DataCard, path: Path) -> None:
    """Slide-level labels need a reader that tiles whole slides."""
    if card.label_level == "slide" and card.reader.name != "wsi":
        raise CardError(f"{path}: field 'label_level': 'slide' needs reader 'wsi' (whole slides cut into tissue "
                        f"tiles), got '{card.reader.name}'; use label_level: image for tile or image collections")


def check_transforms(card: DataCard, path: Path) -> None:
    """``transforms:`` takes only the options the intensity pipeline knows."""
    unknown = sorted(set(card.transforms) - set(TRANSFORM_KEYS))
    if unknown:
        raise CardError(f"{path}: field 'transforms': unknown key(s) {unknown}; allowed: {TRANSFORM_KEYS}")
    try:
        DomainOptions.from_dict(card.transforms)
    except (TypeError, ValueError) as exc:
        raise CardError(f"{path}: field 'transforms': {exc}") from None


def check_bands_to_rgb(card: DataCard, path: Path, bands: list[str]) -> None:
    """``transforms.bands_to_rgb`` must name bands (or 0-based indexes) the reader returns."""
    pick = card.transforms.get("bands_to_rgb")
    if not pick:
        return
    bad = [b for b in pick if not ((isinstance(b, int) and 0 <= b < len(bands)) or b in bands)]
    if bad or len(pick) != 3:
        raise CardError(f"{path}: field 'transforms.bands_to_rgb': {pick} must be 3 of this data's bands "
                        f"{bands} (names, or 0-based indexes below {len(bands)}); not found: {bad}")


def missing_classes(counts: dict[str, dict[str, int]], splits: list[str]) -> dict[str, list[str]]:
    """Per split among ``splits``: the classes with no sample there."""
    return {s: [c for c, n in counts.get(s, {}).items() if n == 0] for s in splits
            if any(n == 0 for n in counts.get(s, {}).values())}
