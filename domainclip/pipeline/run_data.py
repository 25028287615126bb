"""Datasets and predictions of the run's stages: per-split datasets (or cached backbone features),
the reader metadata behind preprocessing decisions, and per-split predictions for evaluation."""
from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from domainclip.core.devices import compute_device, placed
from domainclip.core.distributed import computed_once
from domainclip.core.paths import cache_dir
from domainclip.data import CardData, ImageDataset
from domainclip.data.bags import BagDataset, cached_bags, extract_stream, stream_keys
from domainclip.data.datamodule import SplitDataModule
from domainclip.data.features import cache_key, cached_features
from domainclip.evaluation import task_logits
from domainclip.evaluation.clinical import EvalSettings, Predictions
from domainclip.readers import read
from domainclip.shards.source import shard_cache_key, shard_datasets, slide_shard_streams
from domainclip.training.task import ContrastiveTask
from domainclip.transforms.pipeline import DomainOptions


def build_datasets(cfg: DictConfig, data: CardData, task: ContrastiveTask, pool_ids: dict,
                   source: str | None = None) -> tuple[dict, dict]:
    """Per-split datasets; cached backbone features when the method keeps the image tower frozen."""
    card = data.card
    if card.label_level == "slide":
        return slide_datasets(cfg, data, task, pool_ids)
    shards = (source or cfg.data.get("source", "files")) == "shards"
    if shards:
        images = shard_datasets(cfg, data, task.tower, pool_ids)
    else:
        domain = DomainOptions.from_dict(card.transforms)
        images = {s: ImageDataset(recs, card.reader.name, card.reader.options, domain, task.tower.preprocess,
                                  len(card.classes), card.task == "multi_label", pool_ids[s])
                  for s, recs in data.splits.items()}
    if not (cfg.data.cache_features and task.method.image_backbone_frozen and task.model.input_adapter is None):
        return images, {}
    if shards:  # features are computed over every sample once, in index order
        images = shard_datasets(cfg, data, task.tower, pool_ids, ordered=True)
    digest, out, hits = task.tower.weights_digest(), {}, {}
    feat_dir, device = feature_dir(cfg), compute_device(cfg.trainer.accelerator)
    for split, ds in images.items():
        key = shard_cache_key(digest, ds) if shards else cache_key(digest, data.digest, ds)
        out[split], hits[split] = cached_features(task.tower, ds, feat_dir, key, batch_size=cfg.eval.batch_size,
                                                  num_workers=cfg.data.num_workers, device=device)
    return out, hits


def feature_dir(cfg: DictConfig) -> Path:
    """Where cached features live: ``data.feature_cache_dir`` or the domainclip cache."""
    return Path(cfg.data.feature_cache_dir) if cfg.data.feature_cache_dir else cache_dir() / "features"


def slide_datasets(cfg: DictConfig, data: CardData, task: ContrastiveTask, pool_ids: dict) -> tuple[dict, dict]:
    """One bag of cached tile features per slide, per split (tiles extracted once per slide)."""
    card, model, digest, directory = data.card, task.model, task.tower.weights_digest(), feature_dir(cfg) / "slides"
    domain = DomainOptions.from_dict(card.transforms)
    out, hits = {}, {}
    streams = slide_shard_streams(cfg, data, task.tower) if cfg.data.get("source", "files") == "shards" else None
    device = compute_device(cfg.trainer.accelerator)
    with placed(model, device):
        for split, recs in data.splits.items():
            if streams is not None:
                files, hits[split] = shard_bags(model, digest, streams[split], len(recs), directory,
                                                cfg.eval.batch_size, device)
            else:
                files, hits[split] = cached_bags(model.image_features, digest, recs, card.reader.options, domain,
                                                 task.tower.preprocess, directory, batch_size=cfg.eval.batch_size,
                                                 num_workers=cfg.data.num_workers, device=device)
            out[split] = BagDataset(recs, files, len(card.classes), card.task == "multi_label", pool_ids[split])
    return out, hits


def shard_bags(model, tower_digest: str, stream, slides: int, directory: Path, batch_size: int,
               device: torch.device | None = None) -> tuple[list[Path], bool]:
    """The feature file of each slide of a shard split (extracted from the shards where missing);
    returns the files and whether every one was already there."""
    files = [directory / f"{k}.safetensors" for k in stream_keys(tower_digest, [s["sha256"] for s in stream.shards],
                                                                 slides)]
    with computed_once(directory / "extraction"):
        return files, extract_stream(model.image_features, stream, files, batch_size, device) == 0


def sample_meta(data: CardData) -> dict:
    """Reader metadata of the first sample (units, bands) for preprocessing decisions."""

    first = next(r for recs in data.splits.values() for r in recs)
    opts = {**data.card.reader.options, **first.extra.get("read_options", {})}
    return read(first.path, reader=data.card.reader.name, **opts)[1]


def input_adapter_spec(data: CardData) -> dict | None:
    """A learnable band projection when the card asks for one: all bands in, RGB out."""
    domain = DomainOptions.from_dict(data.card.transforms)
    if not domain.band_projection:
        return None
    bands = sample_meta(data).get("bands") or []
    pick = domain.bands_to_rgb or [0, 1, 2]
    return {"in_channels": len(bands), "init": [b if isinstance(b, int) else bands.index(b) for b in pick]}


def predictions(task: ContrastiveTask, dm: SplitDataModule, data: CardData, splits: list[str],
                zero_shot: bool = False, device: torch.device | None = None) -> dict[str, Predictions]:
    """Per split: the method's logits (always the template zero-shot ensemble with ``zero_shot``),
    targets, group ids and the card's subgroup columns; computed on ``device`` (``None``: where
    the task is), the task put back afterwards."""
    out = {}
    with placed(task, device):
        for split in splits:
            logits, targets = task_logits(task, dm.eval_loader(split), zero_shot)
            recs = data.splits[split]
            extra = [{c: r.extra.get(c) for c in data.card.subgroups} for r in recs]
            out[split] = Predictions(logits, targets, [r.group for r in recs], extra)
    return out


def eval_settings(cfg: DictConfig, data: CardData) -> EvalSettings:
    """Evaluation settings from ``cfg.eval`` plus the card's subgroup columns."""
    e = cfg.eval
    return EvalSettings(bootstrap=int(e.bootstrap), seed=int(e.seed), calibrate=bool(e.calibrate),
                        operating_point=e.operating_point, target_sensitivity=float(e.target_sensitivity),
                        aggregate=e.aggregate, topk=int(e.topk), group_label=e.get("group_label", "unanimous"),
                        subgroups=[*data.card.subgroups, *e.subgroups],
                        conformal_alpha=float(e.get("conformal_alpha", 0.1)))
