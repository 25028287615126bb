"""Bad-file policy: read every file once before training; ``fail`` lists them all, ``skip``
quarantines them (counted and reported, never dropped silently)."""
from __future__ import annotations

import json
from pathlib import Path

from domainclip.cards.manifest import Record
from domainclip.core.errors import DomainClipError, ReadError
from domainclip.core.fileio import atomic_write_text
from domainclip.data.identifiers import IdentifierMatcher, recorded_path
from domainclip.readers import read_record

ON_ERROR = ("fail", "skip")


class UnreadableFilesError(DomainClipError):
    """Some files could not be read and the policy is ``fail``."""


def find_unreadable(records: list[Record], reader: str, options: dict) -> list[dict]:
    """One entry (path, row, stage, error) per record whose file cannot be read."""
    bad = []
    for rec in records:
        try:
            read_record(rec, reader, options)
        except ReadError as exc:
            bad.append({"path": str(rec.path), "row": rec.row, "stage": exc.stage, "error": str(exc)})
    return bad


def apply_policy(splits: dict[str, list[Record]], reader: str, options: dict, on_error: str) -> tuple[dict, list[dict]]:
    """Check every split's files; returns the kept records per split and the quarantine list."""
    if on_error not in ON_ERROR:
        raise DomainClipError(f"data.on_error={on_error!r}: allowed values are {list(ON_ERROR)}")
    quarantine = []
    for split, recs in splits.items():
        quarantine += [{**b, "split": split} for b in find_unreadable(recs, reader, options)]
    if quarantine and on_error == "fail":
        listing = "\n".join(f"  - {q['error']}" for q in quarantine)  # each error names its file once
        raise UnreadableFilesError(
            f"{len(quarantine)} file(s) cannot be read; nothing was trained:\n{listing}\n"
            "Fix or remove them, or set data.on_error=skip to quarantine them."
        )
    bad = {(q["path"], q["row"]) for q in quarantine}
    kept = {s: [r for r in recs if (str(r.path), r.row) not in bad] for s, recs in splits.items()}
    return kept, quarantine


def recorded_quarantine(quarantine: list[dict], root, identifiers: dict[str, str]) -> list[dict]:
    """The quarantine as run-level records hold it: each path relative to the card's root (or its
    pseudonym where it names an identifier), in the entry and in its error text."""
    out, identifying, root = [], IdentifierMatcher(identifiers), Path(root).resolve()
    for q in quarantine:
        shown = recorded_path(q["path"], root, identifying)
        out.append({k: (str(v).replace(str(q["path"]), shown) if isinstance(v, str) else v) for k, v in q.items()})
    return out


def write_quarantine(path: Path, quarantine: list[dict]) -> None:
    """``quarantine.jsonl``: one JSON object (path, row, split, stage, error) per skipped file,
    written whole (pass :func:`recorded_quarantine`'s entries)."""
    atomic_write_text(path, "".join(json.dumps(q) + "\n" for q in quarantine))
