"""Few-shot subsets, class-balanced sampling and the feature cache's keys."""
from __future__ import annotations

import dataclasses
import json
import os
from collections import Counter
from pathlib import Path

import torch

from domainclip.cards.manifest import Record
from domainclip.data import FeatureDataset, ImageDataset, load_card_data
from domainclip.data.datamodule import SplitDataModule
from domainclip.data.features import cache_key, cached_features
from domainclip.data.few_shot import few_shot_subset
from domainclip.transforms.pipeline import DomainOptions, Preprocess


def recs(n_groups=6, per_group=4, classes=3):
    return [Record(path=Path(f"g{g}_{i}.png"), labels=((g + i) % classes,), group=f"g{g}")
            for g in range(n_groups) for i in range(per_group)]


def test_few_shot_is_stratified_group_aware_and_seeded():
    records = recs()
    sub = few_shot_subset(records, 2, seed=0)
    counts = Counter(r.label for r in sub)
    assert counts == {0: 2, 1: 2, 2: 2}
    for k in range(3):
        groups = [r.group for r in sub if r.label == k]
        assert len(set(groups)) == len(groups)  # distinct patients before repeating one
    assert [r.path for r in few_shot_subset(records, 2, 0)] == [r.path for r in sub]
    assert [r.path for r in few_shot_subset(records, 2, 1)] != [r.path for r in sub]


def test_few_shot_protocol_aggregates_seeds(make_cfg, tiny_tower):
    from domainclip.pipeline.run import run

    result = run(make_cfg("recipe=satellite", *tiny_tower, "method=linear_probe", "data.shots=2", "data.seeds=[0,1]",
                          "trainer.enable_progress_bar=false"))
    saved = json.loads((result.run_dir / "metrics.json").read_text())["few_shot"]
    after = saved["top1"]["zero_shot_after"]["test"]
    assert saved["shots"] == 2 and len(after["values"]) == 2
    assert abs(after["mean"] - sum(after["values"]) / 2) < 1e-9
    for d in saved["per_seed_dirs"]:
        train = json.loads((Path(d) / "metrics.json").read_text())["counts"]["train"]
        assert set(train.values()) == {2}


def test_balanced_sampling_draws_classes_equally():
    labels = torch.tensor([0] * 90 + [1] * 10)
    ds = FeatureDataset(torch.randn(100, 4), labels)
    dm = SplitDataModule({"train": ds}, batch_size=100, balanced=True, seed=0)
    drawn = torch.cat([b["label"] for _ in range(20) for b in dm.train_dataloader()])
    share = (drawn == 1).float().mean().item()
    assert 0.4 < share < 0.6  # vs 0.1 without balancing


def test_feature_cache_hits_and_is_invalidated_by_a_changed_transform(tmp_path):
    from domainclip.towers import build_tower

    tower = build_tower({"name": "two_tower", "image": {"size": 64}})
    data = load_card_data("demo_satellite")
    card = data.card
    recs_ = data.splits["val"][:8]

    def dataset(domain: dict):
        return ImageDataset(recs_, card.reader.name, card.reader.options, DomainOptions.from_dict(domain),
                            tower.preprocess, 4)

    base = dataset(card.transforms)
    key = cache_key(tower.weights_digest(), data.digest, base)
    first, hit1 = cached_features(tower, base, tmp_path, key)
    second, hit2 = cached_features(tower, base, tmp_path, key)
    assert (hit1, hit2) == (False, True) and torch.equal(first.features, second.features)
    changed = dataset({**card.transforms, "scale_range": [0, 3000]})
    assert cache_key(tower.weights_digest(), data.digest, changed) != key
    other_size = ImageDataset(recs_, card.reader.name, card.reader.options, base.domain, Preprocess(size=96), 4)
    assert cache_key(tower.weights_digest(), data.digest, other_size) != key


def test_feature_cache_misses_when_a_file_is_replaced_in_place(tmp_path):
    """Same paths, same card, new pixels (a regenerated or re-exported image): never stale features."""
    import shutil

    from domainclip.towers import build_tower

    tower = build_tower({"name": "two_tower", "image": {"size": 64}})
    data = load_card_data("demo_pathology")
    recs_ = [dataclasses.replace(r, path=tmp_path / "files" / Path(r.path).name) for r in data.splits["val"][:4]]
    (tmp_path / "files").mkdir()
    for r, src in zip(recs_, data.splits["val"][:4]):
        shutil.copy(src.path, r.path)
    card = data.card
    dataset = ImageDataset(recs_, card.reader.name, card.reader.options, DomainOptions.from_dict(card.transforms),
                           tower.preprocess, 4)
    key = cache_key(tower.weights_digest(), data.digest, dataset)
    first, _ = cached_features(tower, dataset, tmp_path / "cache", key)
    shutil.copy(data.splits["val"][10].path, recs_[0].path)  # another tile under the same name
    os.utime(recs_[0].path, ns=(1, 1))
    new_key = cache_key(tower.weights_digest(), data.digest, dataset)
    assert new_key != key
    second, hit = cached_features(tower, dataset, tmp_path / "cache", new_key)
    assert not hit and not torch.equal(first.features[0], second.features[0])
    assert torch.equal(first.features[1:], second.features[1:])
