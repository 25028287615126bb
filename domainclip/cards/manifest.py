"""Turn a card's manifest (CSV, JSONL or folder-per-class layout) into sample records."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from domainclip.cards.load import confined
from domainclip.cards.schema import DataCard
from domainclip.core.errors import CardError
from domainclip.core.safe_json import loads_bounded

MISSING_GROUP = {"", "nan", "none", "null", "na", "n/a"}  # what spreadsheets write for an empty cell


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


def _manifest_text(manifest: Path) -> str:
    """The manifest's text: UTF-8 (a byte-order mark is dropped), no NUL bytes."""
    raw = manifest.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CardError(f"{manifest}: not UTF-8 text (byte {exc.start}); save the manifest as UTF-8") from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise CardError(f"{manifest}: line {line} contains a NUL byte; remove it")
    return text


def _csv_rows(manifest: Path, text: str) -> list[dict]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = []
    for row in reader:
        if None in row:  # more values than header columns: DictReader would drop them
            raise CardError(f"{manifest}: line {reader.line_num} has {len(reader.fieldnames) + len(row[None])} "
                            f"values but the header names {len(reader.fieldnames)} columns; quote values that "
                            "contain commas or fix the row")
        rows.append(row)
    return rows


def _jsonl_rows(manifest: Path, text: str) -> list[dict]:
    rows = []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        row = loads_bounded(line, f"{manifest}: line {i}", CardError)
        if not isinstance(row, dict):
            raise CardError(f"{manifest}: line {i} is a JSON {type(row).__name__}, not an object; "
                            'write one {"path": ..., "label": ...} object per line')
        rows.append(row)
    return rows


def _read_rows(manifest: Path) -> list[dict]:
    suffix = manifest.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".ndjson"):
        raise CardError(f"{manifest}: manifest must be .csv or .jsonl")
    text = _manifest_text(manifest)
    return _csv_rows(manifest, text) if suffix == ".csv" else _jsonl_rows(manifest, text)


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


SCALAR = (str, int, float)  # what an id, split or path cell may hold (bool is an int: refused below)


def check_cell_types(card: DataCard, row: dict, where: str) -> None:
    """JSONL values of the wrong type are refused, not turned into strings: the path, group and
    split columns hold one string (ids may be numbers), the label column a string (or, for a
    multi-label card, a list of strings)."""
    cols = card.columns
    for key in (cols.path, cols.group, cols.split):
        value = row.get(key) if key else None
        if value is not None and (isinstance(value, bool) or not isinstance(value, SCALAR)
                                  or (key == cols.path and not isinstance(value, str))):
            raise CardError(f"{where}, column '{key}': {type(value).__name__} {str(value)[:60]!r} is not allowed; "
                            f"write {'a string' if key == cols.path else 'a string or a number'}")
    label = row.get(cols.label)
    allowed = isinstance(label, str) or (isinstance(label, list) and card.task == "multi_label"
                                         and all(isinstance(v, str) for v in label))
    if label is not None and not allowed:
        raise CardError(f"{where}, column '{cols.label}': {type(label).__name__} {str(label)[:60]!r} is not a "
                        "class name; write the name as a string"
                        + (" (or a list of strings)" if card.task == "multi_label" else ""))


def _record_from_row(card: DataCard, root: Path, row: dict, i: int, src: Path) -> Record:
    cols = card.columns
    where = f"{src} row {i}"
    check_cell_types(card, row, where)
    for key in (cols.path, cols.label):
        if key not in row or row[key] in (None, ""):
            raise CardError(f"{where}: column '{key}' is missing or empty")
    path = confined(root, str(row[cols.path]), f"{where}, column '{cols.path}'")
    labels = _parse_labels(card, row[cols.label], f"{where}, column '{cols.label}'")
    group = str(row.get(cols.group, "") or "").strip() if cols.group else ""
    if group.lower() in MISSING_GROUP:
        if card.split.level != "image" or (cols.group and group):
            raise CardError(
                f"{where}: split level is '{card.split.level}' but the group id column "
                f"'{cols.group}' is missing, empty or {group!r}; set columns.group in the card and fill it "
                "for every row (rows without an id would all become one group)"
            )
        group = ""
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
    records = [_record_from_row(card, root, row, i, manifest) for i, row in enumerate(rows, start=1)]
    check_duplicates(records, manifest)
    return records


def check_duplicates(records: list[Record], manifest: Path) -> None:
    """The same file on two rows is an error (it would be counted, and maybe split, twice)."""
    first: dict[Path, Record] = {}
    for rec in records:
        seen = first.setdefault(rec.path, rec)
        if seen is not rec:
            labels = "" if seen.labels == rec.labels else f" with different labels ({seen.labels} vs {rec.labels})"
            raise CardError(f"{manifest}: rows {seen.row} and {rec.row} list the same file {rec.path.name}{labels}; "
                            "keep one row per file (multi-label cards list all labels on one row)")
