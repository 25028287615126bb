"""Identifying values in a card's data (manifest PHI columns, DICOM header tags), each with the
place it came from: what the PHI audits of captions, runs and bundles look for."""
from __future__ import annotations

import re

from domainclip.cards.schema import SPLIT_LEVELS, SPLIT_NAMES

DATE_TAGS = ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate", "PatientBirthDate")
UID_TAGS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
ALWAYS_TAGS = ("PatientName", "PatientID", "AccessionNumber", "InstitutionName", "ReferringPhysicianName")


def norm(text: str) -> str:
    """Lower-case, underscores to spaces, collapsed whitespace."""
    return " ".join(text.lower().replace("_", " ").split())


def identifier_pattern(value: str) -> re.Pattern:
    """Whole-word match of an identifying value in :func:`norm`-ed text."""
    return re.compile(r"(?<![a-z0-9])" + re.escape(norm(value)) + r"(?![a-z0-9])")


def names_identifier(text: str, identifiers: dict[str, str]) -> bool:
    """Whether ``text`` (a file path, a group id) holds one of ``identifiers`` as a whole word, or
    a generic PHI pattern (a date, a record number, a UID, an e-mail, a phone number)."""
    from domainclip.captions.validate import PHI_PATTERNS

    low = norm(text)
    return (any(norm(v) and identifier_pattern(v).search(low) for v in identifiers)
            or any(p.search(text) for p in PHI_PATTERNS.values()))


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
