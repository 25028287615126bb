"""Image-feature cache for frozen image backbones, keyed by tower, card and transform."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader

from domainclip.core.devices import placed, to_device
from domainclip.core.distributed import computed_once
from domainclip.data.dataset import FeatureDataset, ImageDataset


def file_stamps(records) -> list[list[int]]:
    """(size, modification time in ns) of each record's file, read once per distinct path."""
    stamps: dict[str, list[int]] = {}
    for r in records:
        key = str(r.path)
        if key not in stamps:
            st = Path(r.path).stat()
            stamps[key] = [st.st_size, st.st_mtime_ns]
    return [stamps[str(r.path)] for r in records]


def cache_key(tower_digest: str, card_digest: str, dataset: ImageDataset) -> str:
    """Digest of everything that determines the features of ``dataset``."""
    spec = {
        "tower": tower_digest,
        "card": card_digest,
        "reader": dataset.reader,
        "reader_options": dataset.reader_options,
        "domain": repr(dataset.domain),
        "preprocess": repr(dataset.preprocess),
        "files": [[str(r.path), r.extra.get("read_options", {})] for r in dataset.records],
        "contents": file_stamps(dataset.records),  # a file replaced in place gets new features
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:32]


@torch.inference_mode()
def compute_features(tower, dataset, batch_size: int = 64, num_workers: int = 0,
                     device: torch.device | None = None) -> FeatureDataset:
    """Run the (frozen) image backbone once over ``dataset``, on ``device`` (``None``: where the
    tower is; see ``core.devices.compute_device``); the features come back on the CPU."""
    was_training = tower.training
    tower.eval()
    feats, labels = [], []
    iterable = isinstance(dataset, torch.utils.data.IterableDataset)  # shard streams keep index order in one process
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=0 if iterable else num_workers)
    with placed(tower, device):
        for batch in loader:
            keep = batch["valid"] if "valid" in batch else slice(None)
            feats.append(tower.image_features(to_device(batch["pixels"][keep], device)).float().cpu())
            labels.append(batch["label"][keep])
    tower.train(was_training)
    return FeatureDataset(torch.cat(feats), torch.cat(labels), dataset.pools)


def cached_features(tower, dataset: ImageDataset, cache_dir: Path | None, key: str, **kwargs) -> tuple[FeatureDataset, bool]:
    """Features from ``cache_dir/<key>.safetensors`` if present, else computed and stored.

    Returns the dataset and whether the cache was hit.
    """
    if not cache_dir:
        return compute_features(tower, dataset, **kwargs), False
    path = Path(cache_dir) / f"{key}.safetensors"
    with computed_once(path):  # under DDP one rank computes, the others wait and read
        return _load_or_compute(tower, dataset, path, **kwargs)


def _load_or_compute(tower, dataset: ImageDataset, path: Path, **kwargs) -> tuple[FeatureDataset, bool]:
    if path.is_file():
        t = load_file(path)
        return FeatureDataset(t["features"], t["labels"], dataset.pools), True
    ds = compute_features(tower, dataset, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({"features": ds.features.contiguous(), "labels": ds.labels.contiguous()}, str(tmp))
    tmp.replace(path)
    return ds, False
