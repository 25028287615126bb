"""``data.source=shards``: per-split ``ShardStream`` datasets for a run, checked against its card."""
from __future__ import annotations

import hashlib
from pathlib import Path

from domainclip.core.errors import ConfigError
from domainclip.shards.dataset import ShardStream
from domainclip.shards.manifest import load_manifest, transform_digest
from domainclip.transforms.pipeline import DomainOptions


def checked_manifest(cfg, data, tower) -> tuple[Path, dict]:
    """``data.shards`` and its manifest, verified against the card's digest and the transform the
    tower's preprocessing implies."""
    if not cfg.data.get("shards"):
        raise ConfigError("data.source=shards needs data.shards=DIR (build it: python -m domainclip.shards build CARD out=DIR)")
    directory, card, pre = Path(cfg.data.shards), data.card, tower.preprocess
    dtype = load_manifest(directory, verify=False, card_ref=str(cfg.data.card)).get("dtype", "float16")
    expected = transform_digest(card.reader.name, card.reader.options, card.transforms, pre.size, dtype,
                                f"{pre.resize_mode}/{pre.interpolation}")
    return directory, load_manifest(directory, data.digest, expected, card_ref=str(cfg.data.card))


def shard_datasets(cfg, data, tower, pool_ids: dict, ordered: bool = False) -> dict[str, ShardStream]:
    """One stream per split of ``cfg.data.shards``. Training shuffles (shard order + buffer, seeded)
    and is split over ranks and workers; evaluation splits (and ``ordered=True``, used to compute
    cached features) stream every sample in index order."""

    directory, manifest = checked_manifest(cfg, data, tower)
    card, pre, domain = data.card, tower.preprocess, DomainOptions.from_dict(data.card.transforms)
    out = {}
    for split in data.splits:
        train = split == "train" and not ordered
        out[split] = ShardStream(directory, manifest, split, pre.mean, pre.std, len(card.classes),
                                 card.task == "multi_label", pool_ids[split], seed=int(cfg.seed), shuffle=train,
                                 buffer=int(cfg.data.get("shuffle_buffer", 256)),
                                 batch_size=int(cfg.data.batch_size) if train else 1,
                                 num_workers=int(cfg.data.num_workers) if train else 1, split_by_rank=train,
                                 normalize=not domain.band_projection)
    return out


def slide_shard_streams(cfg, data, tower) -> dict[str, ShardStream]:
    """Slide-level cards: per split, the shard set's tiles in order (each with its slide and
    level-0 position), checked against the card (same digest, transform and slide counts)."""
    directory, manifest = checked_manifest(cfg, data, tower)
    card, pre = data.card, tower.preprocess
    if manifest.get("label_level") != "slide":
        raise ConfigError(f"data.shards={directory}: built from tiles labelled per tile; rebuild it from this "
                          "slide-level card (python -m domainclip.shards build CARD out=DIR)")
    for split, recs in data.splits.items():
        if manifest["splits"].get(split, {}).get("slides") != len(recs):
            raise ConfigError(f"data.shards={directory}: split '{split}' holds other slides than the card's; rebuild it")
    return {split: ShardStream(directory, manifest, split, pre.mean, pre.std, len(card.classes),
                               card.task == "multi_label", seed=int(cfg.seed),
                               normalize=not DomainOptions.from_dict(card.transforms).band_projection)
            for split in data.splits}


def shard_cache_key(tower_digest: str, stream: ShardStream) -> str:
    """Feature-cache key of a split of a shard set: the tower and the split's shard checksums."""
    shas = ",".join(s["sha256"] for s in stream.shards)
    return hashlib.sha256(f"{tower_digest}:{stream.split}:{shas}".encode()).hexdigest()[:32]
