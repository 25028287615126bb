"""Identifying values in a card's data (manifest PHI columns, DICOM header tags), each with the
place it came from: what the PHI audits of captions, runs and bundles look for."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

from domainclip.cards.schema import SPLIT_LEVELS, SPLIT_NAMES

# Generic identifying patterns: dates, MRN-like numbers, DICOM UID roots, e-mails, phone numbers.
PHI_PATTERNS = {
    "date": re.compile(r"\b(\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}|(19|20)\d{6})\b"),
    "mrn": re.compile(r"\b(MRN|ID|#)?\s*:?\s*\d{6,}\b", re.IGNORECASE),
    "uid": re.compile(r"\b\d+(\.\d+){4,}\b"),
    "email": re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.]+\b"),
    "phone": re.compile(r"\+?\d[\d\s().-]{8,}\d"),
}

DATE_TAGS = ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate", "PatientBirthDate")
UID_TAGS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
ALWAYS_TAGS = ("PatientName", "PatientID", "AccessionNumber", "InstitutionName", "ReferringPhysicianName")


def norm(text: str) -> str:
    """Lower-case, underscores to spaces, collapsed whitespace."""
    return " ".join(text.lower().replace("_", " ").split())


def identifier_pattern(value: str) -> re.Pattern:
    """Whole-word match of an identifying value in :func:`norm`-ed text."""
    return re.compile(r"(?<![a-z0-9])" + re.escape(norm(value)) + r"(?![a-z0-9])")


WORD = re.compile(r"[a-z0-9]+")


class IdentifierMatcher:
    """Whether a text (a file path, a group id) holds one of the data's identifying values as a
    whole word, or a generic PHI pattern (a date, a record number, a UID, an e-mail, a phone
    number). A collection has thousands of values (a UID per DICOM file), so each value is indexed
    by its first alphanumeric word, which a whole-word match always shows as a word of the text:
    only the values whose first word a text contains are matched exactly."""

    def __init__(self, identifiers):
        self._by_word: dict[str, list[re.Pattern]] = {}
        self._without_words: list[re.Pattern] = []
        for value in identifiers:
            normed = norm(value)
            if normed:
                words = WORD.findall(normed)
                bucket = self._by_word.setdefault(words[0], []) if words else self._without_words
                bucket.append(identifier_pattern(value))

    def __call__(self, text: str) -> bool:
        low = norm(text)
        candidates = [p for w in set(WORD.findall(low)) for p in self._by_word.get(w, ())] + self._without_words
        return any(p.search(low) for p in candidates) or any(p.search(text) for p in PHI_PATTERNS.values())


PSEUDONYM = "phi-"  # what a run-level record writes in place of a path naming an identifier


def pseudonym(rel: str) -> str:
    """The stand-in for a relative path that names an identifier: a digest of the path."""
    return PSEUDONYM + hashlib.sha256(rel.encode()).hexdigest()[:24]


def recorded_path(path, root: Path, identifying: IdentifierMatcher) -> str:
    """``path`` as run-level records (capsule, metrics.json, quarantine.jsonl) write it: relative to
    the card's resolved ``root``, and replaced by its :func:`pseudonym` when ``identifying`` finds
    an identifying value in it (a patient name in a file name, as clinical exports often write)
    or a generic PHI pattern (dates, record numbers)."""
    try:
        rel = Path(path).relative_to(root).as_posix()
    except ValueError:
        rel = Path(path).name  # outside the root (never for card records): keep the name only
    return pseudonym(rel) if identifying(rel) else rel


def controlled_vocabulary() -> set[str]:
    """Words domainclip itself writes as values (split levels and names, task and layout kinds):
    a part of a real name that equals one of them (``NAME^PATIENT^NAME``) is not a finding."""
    words = {*SPLIT_LEVELS, *SPLIT_NAMES, "single_label", "multi_label", "manifest", "folders", "name"}
    return {norm(w) for w in words}


def identifying_values(data, max_files: int | None = None) -> dict[str, str]:
    """Identifying values found in the data (manifest PHI columns, DICOM header tags), each with
    where it came from; the card's ``phi.allow`` values and domainclip's own vocabulary are left out."""
    values: dict[str, str] = {}
    card = data.card
    cols = set(card.phi.columns)
    records = [r for rs in data.splits.values() for r in rs]
    for rec in records:
        if card.columns.group in cols:
            values[rec.group] = f"manifest column '{card.columns.group}'"
        for k, v in rec.extra.items():
            if k in cols and v:
                values[str(v)] = f"manifest column '{k}'"
    if card.reader.name == "dicom":
        values.update(_dicom_values(sorted({r.path for r in records})[:max_files], card.phi.dicom_tags))
    skip = controlled_vocabulary() | {norm(v) for v in card.phi.allow}
    return {v: src for v, src in values.items() if len(v.strip()) >= 3 and norm(v) not in skip}


def _dicom_values(paths, tags) -> dict[str, str]:
    import pydicom

    out = {}
    wanted = set(tags) | set(ALWAYS_TAGS) | set(DATE_TAGS) | set(UID_TAGS)
    for p in paths:
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True, specific_tags=sorted(wanted))
        except Exception:  # noqa: BLE001 - unreadable files are the readers' business
            continue
        for tag in wanted:
            value = str(getattr(ds, tag, "") or "").strip()
            if value:
                source = f"DICOM tag {tag} of {p.name}"
                out.setdefault(value, source)
                if tag == "PatientName" and "^" in value:
                    for part in value.split("^"):
                        if len(part) >= 3:
                            out.setdefault(part, source)
    return out
