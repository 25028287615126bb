"""Deterministic group-level splits (patient, study, slide, site or spatial block)."""
from __future__ import annotations

import hashlib
from collections import defaultdict

import numpy as np

from domainclip.cards.manifest import Record
from domainclip.cards.schema import SPLIT_NAMES, SplitSpec
from domainclip.core.errors import CardError


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


def group_label_counts(records: list[Record], n_classes: int) -> dict[str, np.ndarray]:
    """Per group: how many of its samples carry each class."""
    out: dict[str, np.ndarray] = {}
    for r in records:
        row = out.setdefault(r.group, np.zeros(n_classes, np.int64))
        for label in r.labels:
            row[label] += 1
    return out


def stratified_cut(groups: list[str], counts: dict[str, np.ndarray], fractions: dict[str, float]) -> dict[str, str]:
    """Assign whole groups to splits so that each class is spread by the split fractions
    (``StratifiedGroupKFold``'s idea for unequal splits), then repair coverage: every class with
    at least one group per split appears in every split when groups can be moved to make it so.

    Groups are placed rarest class first (hash order within), each into the split whose per-class
    shortfall it fills most."""
    names = [s for s in SPLIT_NAMES if fractions.get(s, 0) > 0]
    if not groups:
        return {}
    share = np.array([fractions[s] for s in names], float)
    total = sum(counts[g] for g in groups)
    target = share[:, None] / share.sum() * total[None, :]
    holders = (np.stack([counts[g] for g in groups]) > 0).sum(0)  # groups per class
    rarity = {g: min((holders[k] for k in np.flatnonzero(counts[g])), default=len(groups)) for g in groups}
    current, assignment = np.zeros_like(target), {}
    for g in sorted(groups, key=lambda g: rarity[g]):  # groups arrive hash-ordered; sort is stable
        need = np.clip(target - current, 0, None)
        gain = np.minimum(need, counts[g][None, :]).sum(1) + 1e-9 * need.sum(1)
        best = int(np.argmax(gain))
        assignment[g] = names[best]
        current[best] += counts[g]
    _repair_coverage(assignment, counts, names, holders)
    return assignment


def _repair_coverage(assignment: dict[str, str], counts: dict[str, np.ndarray], names: list[str],
                     holders: np.ndarray) -> None:
    """Move single groups into splits that lack a class, from splits holding two or more of its
    groups, never emptying another class in the donor split. Presence is kept as a tally of
    groups per (split, class), updated on every move."""
    coverable = [k for k in np.argsort(holders, kind="stable") if holders[k] >= len(names)]
    if not coverable:
        return
    repair = _Coverage(assignment, counts, names, coverable)
    for _ in range(len(assignment)):
        moved = False
        for k in coverable:
            for split in names:
                if not repair.tally[repair.index[split], k]:
                    moved |= repair.move_or_swap(k, split)
        if not moved:
            return


class _Coverage:
    """Groups per (split, class), and the moves that bring a class into a split."""

    def __init__(self, assignment: dict[str, str], counts: dict[str, np.ndarray], names: list[str],
                 coverable: list[int]):
        self.assignment, self.coverable = assignment, coverable
        self.index = {s: i for i, s in enumerate(names)}
        self.has = {g: counts[g] > 0 for g in assignment}
        self.tally = np.zeros((len(names), len(next(iter(counts.values())))), np.int64)
        for g, s in assignment.items():
            self.tally[self.index[s]] += self.has[g]

    def covered(self) -> np.ndarray:
        return self.tally[:, self.coverable] > 0

    def move(self, g: str, split: str) -> None:
        self.tally[self.index[self.assignment[g]]] -= self.has[g]
        self.tally[self.index[split]] += self.has[g]
        self.assignment[g] = split

    def move_or_swap(self, k: int, split: str) -> bool:
        """Bring class ``k`` into ``split``: move one of its groups there from a split holding two or
        more, or swap it with a group of ``split``, whichever first keeps every other class covered."""
        need = self.covered()
        need[self.index[split], self.coverable.index(k)] = True
        donors = [g for d in dict.fromkeys(self.assignment.values()) if self.tally[self.index[d], k] >= 2
                  for g, s in self.assignment.items() if s == d and self.has[g][k]]
        for g in donors:
            donor = self.assignment[g]
            for h in [None, *[h for h, s in self.assignment.items() if s == split]]:
                self.move(g, split)
                if h is not None:
                    self.move(h, donor)
                if self.covered()[need].all():
                    return True
                if h is not None:
                    self.move(h, split)
                self.move(g, donor)
        return False


def assign_splits(records: list[Record], spec: SplitSpec, n_classes: int | None = None) -> dict[str, list[Record]]:
    """Split records by group, stratified by label (unless ``spec.stratify`` is false); an explicit
    split column wins. Fails on leakage."""
    free = sorted({r.group for r in records if r.split is None}, key=lambda g: hash_group(g, spec.seed))
    if spec.stratify and free:
        n_classes = n_classes or 1 + max(label for r in records for label in r.labels)
        counts = group_label_counts([r for r in records if r.split is None], n_classes)
        auto = stratified_cut(free, counts, spec.fractions)
    else:
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
