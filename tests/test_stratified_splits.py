"""Label-stratified group splits: groups stay whole, every class with at least one group per split
reaches every split, and the class shares follow the fractions (simulation over random collections)."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from domainclip.cards.manifest import Record
from domainclip.cards.schema import SplitSpec
from domainclip.cards.splits import assign_splits


def collection(seed: int, multi_label: bool = False) -> tuple[list[Record], int]:
    rng = random.Random(seed)
    k, n_groups = rng.randint(2, 6), rng.randint(6, 60)
    records = []
    for g in range(n_groups):
        main = rng.randrange(k) if rng.random() < 0.8 else 0  # unbalanced: class 0 is common
        for i in range(rng.randint(1, 5)):  # correlated labels within a patient
            label = main if rng.random() < 0.7 else rng.randrange(k)
            labels = (label,) if not multi_label else tuple(sorted({label, rng.randrange(k)}))
            records.append(Record(Path(f"p{g}/{i}.png"), labels, f"patient{g}", row=len(records)))
    return records, k


def placement(records, k, seed):
    splits = assign_splits(records, SplitSpec(seed=seed), k)
    where = {}
    for name, recs in splits.items():
        for r in recs:
            assert where.setdefault(r.group, name) == name, "a group crossed splits"
    assert sum(len(r) for r in splits.values()) == len(records)
    return [(c, s) for c in range(k) if len({r.group for r in records if c in r.labels}) >= 3
            for s, recs in splits.items() if not any(c in r.labels for r in recs)]


def test_groups_never_cross_and_every_class_with_three_groups_is_in_every_split():
    for seed in range(250):
        records, k = collection(seed)
        assert placement(records, k, seed) == [], seed


def test_multi_label_groups_never_cross_and_classes_are_covered_where_possible():
    """With several labels per patient, covering every class in every split can be impossible
    (a tiny collection whose few patients each carry most classes); the run then stops before
    training with the fix. Here it is reached in nearly every random collection."""
    missed = sum(bool(placement(*collection(seed, multi_label=True), seed)) for seed in range(250))
    assert missed <= 5, missed


def test_class_shares_follow_the_fractions_on_a_large_collection():
    rng = np.random.default_rng(0)
    records = []
    for g in range(600):
        label = int(rng.choice(4, p=[0.55, 0.25, 0.15, 0.05]))
        for i in range(int(rng.integers(1, 4))):
            records.append(Record(Path(f"{g}/{i}"), (label,), f"g{g}", row=len(records)))
    splits = assign_splits(records, SplitSpec(seed=1), 4)
    for c in range(4):
        total = sum(c in r.labels for r in records)
        for name, fraction in {"train": 0.6, "val": 0.2, "test": 0.2}.items():
            share = sum(c in r.labels for r in splits[name]) / total
            assert abs(share - fraction) < 0.05, (c, name, share)


def test_unstratified_split_stays_available():
    records, k = collection(3)
    plain = assign_splits(records, SplitSpec(seed=3, stratify=False), k)
    assert sum(len(r) for r in plain.values()) == len(records)
