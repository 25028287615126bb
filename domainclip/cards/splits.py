"""Deterministic group-level splits (patient, study, slide, site or spatial block)."""
from __future__ import annotations

import hashlib
from collections import defaultdict

from domainclip.cards.manifest import Record
from domainclip.cards.schema import SPLIT_NAMES, SplitSpec
from domainclip.errors import CardError


def hash_group(group: str, seed: int) -> str:
    """Seeded SHA-256 of a group id; split order depends on it, never on raw ids."""
    return hashlib.sha256(f"{seed}:{group}".encode()).hexdigest()


def _cut(groups: list[str], fractions: dict[str, float]) -> dict[str, str]:
    """Cut hash-ordered groups by fraction; every non-empty split gets a group when possible."""
    names = [s for s in SPLIT_NAMES if fractions.get(s, 0) > 0]
    n = len(groups)
    minimum = 1 if n >= len(names) else 0
    counts = [max(minimum, round(fractions[s] * n)) for s in names]
    counts[0] = n - sum(counts[1:])  # the first split (train) takes the remainder
    assignment, start = {}, 0
    for name, count in zip(names, counts):
        for g in groups[start : start + count]:
            assignment[g] = name
        start += count
    return assignment


def assign_splits(records: list[Record], spec: SplitSpec) -> dict[str, list[Record]]:
    """Split records by group; an explicit split column wins. Fails on leakage."""
    free = sorted({r.group for r in records if r.split is None}, key=lambda g: hash_group(g, spec.seed))
    auto = _cut(free, spec.fractions)
    out: dict[str, list[Record]] = {s: [] for s in SPLIT_NAMES}
    for r in records:
        split = r.split or auto[r.group]
        if split not in out:
            raise CardError(f"row {r.row}: split {split!r} is not one of {list(SPLIT_NAMES)}")
        out[split].append(r)
    check_no_leakage(out)
    return out


def check_no_leakage(splits: dict[str, list[Record]]) -> None:
    """Raise if any group id appears in more than one split."""
    seen: dict[str, set[str]] = defaultdict(set)
    for name, recs in splits.items():
        for r in recs:
            seen[r.group].add(name)
    leaked = {g: sorted(s) for g, s in seen.items() if len(s) > 1}
    if leaked:
        example = ", ".join(f"{g} in {s}" for g, s in list(leaked.items())[:5])
        raise CardError(f"{len(leaked)} group(s) cross splits (leakage): {example}; fix the split column")
