"""Clinician review of captions: export a CSV, mark ``approved``, import it back."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from domainclip.core.fileio import atomic_write_text
from domainclip.core.paths import cache_dir

TRUE = {"1", "true", "yes", "y", "x", "approved"}


def review_store(card_name: str) -> Path:
    """Where the approved captions of a card are kept."""
    return cache_dir() / "captions" / "review" / f"{card_name}.json"


def load_approved(card_name: str) -> set[str] | None:
    """Approved caption texts, or ``None`` if the card was never reviewed."""
    path = review_store(card_name)
    return set(json.loads(path.read_text())["approved"]) if path.is_file() else None


def export_review(bank, class_names: list[str], out: Path, approved: set[str] | None = None) -> int:
    """Write ``class,caption,source,approved`` rows (one per caption); returns the row count."""
    rows = []
    for pool in bank.pools:
        for row in pool:
            rows.append(row)
    for prompts in bank.class_prompts:
        rows.extend(prompts)
    label_of = {}
    for k, prompts in enumerate(bank.class_prompts):
        for r in prompts:
            label_of.setdefault(r, class_names[k])
    unique = list(dict.fromkeys(rows))
    buffer = io.StringIO(newline="")
    w = csv.writer(buffer)
    w.writerow(["class", "caption", "source", "approved"])
    for r in unique:
        text = bank.texts[r]
        cls = label_of.get(r) or next((c for c in class_names if c.replace("_", " ").lower() in text.lower()), "")
        w.writerow([cls, text, bank.provenance[r]["source"], "yes" if approved and text in approved else ""])
    atomic_write_text(Path(out), buffer.getvalue())  # whole or not at all
    return len(unique)


def import_review(card_name: str, csv_path: Path) -> tuple[int, int]:
    """Store the approved rows of a reviewed CSV; returns (approved, total)."""
    with Path(csv_path).open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    missing = {"caption", "approved"} - set(rows[0] if rows else {})
    if missing:
        raise ValueError(f"{csv_path}: missing column(s) {sorted(missing)}; expected class,caption,source,approved")
    approved = sorted({r["caption"] for r in rows if str(r["approved"]).strip().lower() in TRUE})
    store = review_store(card_name)
    store.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(store, json.dumps({"card": card_name, "approved": approved}, indent=1))
    return len(approved), len(rows)
