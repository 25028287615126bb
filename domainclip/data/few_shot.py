"""K-shot training subsets: stratified per class, group-aware, seeded."""
from __future__ import annotations

import hashlib

from domainclip.cards.manifest import Record


def _order(seed: int, rec: Record) -> str:
    key = f"{seed}:{rec.path}:{rec.extra.get('read_options', {})}"
    return hashlib.sha256(key.encode()).hexdigest()


def few_shot_subset(records: list[Record], shots: int, seed: int) -> list[Record]:
    """``shots`` records per class (by first label), drawn in a seeded order that takes each
    group (patient, slide...) once before taking any group twice."""
    by_class: dict[int, list[Record]] = {}
    for rec in sorted(records, key=lambda r: _order(seed, r)):
        by_class.setdefault(rec.label, []).append(rec)
    chosen = []
    for _, recs in sorted(by_class.items()):
        picked, used = [], set()
        for rec in recs:  # first pass: distinct groups
            if len(picked) < shots and rec.group not in used:
                picked.append(rec)
                used.add(rec.group)
        for rec in recs:  # second pass: fill from groups already used
            if len(picked) < shots and rec not in picked:
                picked.append(rec)
        chosen += picked
    return chosen


def short_classes(data, shots: int) -> list[str]:
    """One warning per class with fewer than ``shots`` training samples (it trains on all it has)."""
    counts = data.counts().get("train", {})
    return [f"data.shots={shots} but class '{c}' has only {n} training sample(s); it trains on {n}"
            for c, n in counts.items() if n < shots]
