"""Turn a card's manifest (CSV, JSONL or folder-per-class layout) into sample records."""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from domainclip.cards.load import confined
from domainclip.cards.schema import DataCard
from domainclip.errors import CardError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".svs", ""}


@dataclass
class Record:
    """One labelled file listed by a card."""

    path: Path
    labels: tuple[int, ...]
    group: str
    split: str | None = None
    row: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def label(self) -> int:
        return self.labels[0]


def _read_rows(manifest: Path) -> list[dict]:
    if manifest.suffix.lower() == ".csv":
        with manifest.open(newline="") as fh:
            return list(csv.DictReader(fh))
    if manifest.suffix.lower() in (".jsonl", ".ndjson"):
        rows = []
        for i, line in enumerate(manifest.read_text().splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise CardError(f"{manifest}: line {i} is not valid JSON: {exc}") from None
        return rows
    raise CardError(f"{manifest}: manifest must be .csv or .jsonl")


def _parse_labels(card: DataCard, value, where: str) -> tuple[int, ...]:
    index = {c.name: i for i, c in enumerate(card.classes)}
    names = value if isinstance(value, list) else str(value).split(card.label_separator)
    names = [str(n).strip() for n in names if str(n).strip()]
    if card.task == "single_label" and len(names) != 1:
        raise CardError(f"{where}: a single-label card needs exactly one label, got {names}")
    unknown = [n for n in names if n not in index]
    if unknown:
        raise CardError(f"{where}: unknown label(s) {unknown}; the card's classes are {card.class_names}")
    return tuple(index[n] for n in names)


def _record_from_row(card: DataCard, root: Path, row: dict, i: int, src: Path) -> Record:
    cols = card.columns
    where = f"{src} row {i}"
    for key in (cols.path, cols.label):
        if key not in row or row[key] in (None, ""):
            raise CardError(f"{where}: column '{key}' is missing or empty")
    path = confined(root, str(row[cols.path]), f"{where}, column '{cols.path}'")
    labels = _parse_labels(card, row[cols.label], f"{where}, column '{cols.label}'")
    group = str(row.get(cols.group, "") or "") if cols.group else ""
    if card.split.level != "image" and not group:
        raise CardError(
            f"{where}: split level is '{card.split.level}' but the group id column "
            f"'{cols.group}' is missing or empty; set columns.group in the card and fill it for every row"
        )
    split = (str(row.get(cols.split) or "").strip() or None) if cols.split else None
    used = {cols.path, cols.label, cols.group, cols.split}
    extra = {k: v for k, v in row.items() if k not in used}
    return Record(path=path, labels=labels, group=group or path.name, split=split, row=i, extra=extra)


def _folder_records(card: DataCard, root: Path) -> list[Record]:
    records = []
    for ci, cls in enumerate(card.classes):
        folder = root / cls.name
        if not folder.is_dir():
            raise CardError(f"{root}: layout 'folders' needs a sub-folder per class; '{cls.name}/' is missing")
        for i, f in enumerate(sorted(p for p in folder.rglob("*") if p.is_file())):
            path = confined(root, str(f.relative_to(root)), f"{folder}")
            records.append(Record(path=path, labels=(ci,), group=path.name, row=i))
    return records


def read_records(card: DataCard, root: Path) -> list[Record]:
    """All records of a card, validated; errors name the manifest row and column."""
    if card.layout == "folders":
        return _folder_records(card, root)
    manifest = confined(root, card.manifest, "field 'manifest'")
    if not manifest.is_file():
        raise CardError(f"manifest {manifest} not found; put the file there or fix the card's 'manifest' field")
    rows = _read_rows(manifest)
    if not rows:
        raise CardError(f"{manifest}: the manifest has no rows")
    return [_record_from_row(card, root, row, i, manifest) for i, row in enumerate(rows, start=1)]
