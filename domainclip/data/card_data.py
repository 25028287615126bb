"""Everything the pipeline needs from a data card: root, records, splits, captions."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from domainclip.cards.load import card_digest, confined, load_card
from domainclip.cards.manifest import Record, read_records
from domainclip.cards.schema import DataCard
from domainclip.cards.splits import assign_splits
from domainclip.data.card_checks import check_label_level, check_reader_options, check_transforms
from domainclip.data.expand import expand_records, has_cells
from domainclip.data.preflight import UnreadableFilesError, apply_policy
from domainclip.demo import demo_root


@dataclass
class CardData:
    """A loaded card with its resolved root, records split by group, and digest."""

    card: DataCard
    path: Path
    root: Path
    digest: str
    splits: dict[str, list[Record]]
    quarantine: list[dict] = field(default_factory=list)

    @property
    def class_names(self) -> list[str]:
        return self.card.class_names

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per class per split."""
        out = {}
        for split, recs in self.splits.items():
            row = {c: 0 for c in self.class_names}
            for r in recs:
                for li in r.labels:
                    row[self.class_names[li]] += 1
            out[split] = row
        return out


def card_root(card: DataCard, path: Path, demo_dir: Path | None = None) -> Path:
    """A demo card's generated folder, or the card's ``root`` relative to the card file."""
    if card.demo:  # ``demo_dir`` holds one folder per demo (a recipe's site B sits beside site A)
        return demo_root(card.demo, seed=0, root=demo_dir / f"{card.demo}-seed0" if demo_dir else None)
    return confined(path.parent, card.root, f"{path}: field 'root'") if card.root != "." else path.parent


def load_card_data(ref: str | Path, demo_dir: Path | None = None, on_error: str | None = None) -> CardData:
    """Load and validate a card, generate demo data if needed, read the manifest, split.

    Splits are assigned before any file is checked, so skipping bad files (``on_error='skip'``)
    leaves every other sample exactly where a clean run puts it. ``on_error=None`` skips the check.
    """
    card, path = load_card(ref)
    check_reader_options(card, path)
    check_transforms(card, path)
    check_label_level(card, path)
    root = card_root(card, path, demo_dir)
    reader, options = card.reader.name, card.reader.options
    splits = assign_splits(read_records(card, root), card.split, len(card.classes))
    quarantine = []
    if on_error is not None:
        splits, quarantine = apply_policy(splits, reader, options, on_error)
    before = {s: list(recs) for s, recs in splits.items()}
    if card.label_level == "slide":  # one slide is one sample: keep slides that have tissue tiles
        splits = {s: [r for r in recs if has_cells(reader, r.path, options)] for s, recs in splits.items()}
    else:
        splits = {s: expand_records(recs, reader, options) for s, recs in splits.items()}
    if on_error is not None:
        quarantine += empty_files(before, splits, on_error)
    return CardData(card=card, path=path, root=root, digest=card_digest(path), splits=splits, quarantine=quarantine)


def empty_files(before: dict[str, list[Record]], after: dict[str, list[Record]], on_error: str) -> list[dict]:
    """Slides or rasters that gave no tile or chip (no tissue, all nodata): an error with
    ``on_error=fail``, otherwise quarantine entries (counted and listed like unreadable files)."""
    kept = {(r.path, r.row) for recs in after.values() for r in recs}
    lost = [{"path": str(r.path), "row": r.row, "split": s, "stage": "grid",
             "error": f"{r.path}: no tile or chip passed the tissue / valid-pixel threshold (all background or nodata)"}
            for s, recs in before.items() for r in recs if (r.path, r.row) not in kept]
    if lost and on_error == "fail":
        names = ", ".join(q["path"] for q in lost[:5])
        raise UnreadableFilesError(f"{len(lost)} file(s) gave no tile or chip ({names}); lower min_tissue / "
                                   "min_valid, remove them, or set data.on_error=skip to quarantine them")
    return lost
