"""Whole slides as bags of tile features: tiles stream through the image backbone in batches that
span slides, each slide's features (with the tiles' level-0 coordinates) are cached in its own
safetensors file, and a dataset serves one slide per sample, padded into batches with a mask.

The cache key of a slide covers the backbone's weights, the file's size and modification time,
the reader options (resolution, tile size, tissue threshold, stain normalisation) and the
preprocessing, so a second epoch, a second method or a second run reads no pixels. Files are
written whole (temp file, then rename), so a killed extraction resumes at the next slide.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Dataset

from domainclip.cards.manifest import Record
from domainclip.core.devices import to_device
from domainclip.core.distributed import computed_once
from domainclip.data.dataset import record_target
from domainclip.data.expand import file_cells
from domainclip.readers import read
from domainclip.transforms.pipeline import DomainOptions, Preprocess, model_input

TILE_MASK = "tile_mask"  # a batch holding this key is a batch of bags (B, N, F) with valid tiles marked


def slide_key(tower_digest: str, path: Path, reader_options: dict, domain: DomainOptions, preprocess: Preprocess) -> str:
    """Digest of everything that determines a slide's tile features."""
    st = Path(path).stat()
    spec = {"tower": tower_digest, "file": [Path(path).name, st.st_size, st.st_mtime_ns],
            "reader_options": reader_options, "domain": repr(domain), "preprocess": repr(preprocess)}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:32]


class SlideTiles(Dataset):
    """The tissue tiles of slides, in slide order: pixels, slide index and level-0 ``xy``
    (``grids[i]`` holds slide ``i``'s tiles; an empty grid skips the slide)."""

    def __init__(self, paths: list[Path], grids: list[list[dict]], reader_options: dict, domain: DomainOptions,
                 preprocess: Preprocess):
        self.paths, self.options, self.domain, self.preprocess = paths, dict(reader_options), domain, preprocess
        self.items = [(s, cell) for s, grid in enumerate(grids) for cell in grid]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        slide, cell = self.items[i]
        arr, meta = read(self.paths[slide], reader="wsi", **{**self.options, **cell})
        return {"pixels": model_input(arr, meta, self.domain, self.preprocess), "slide": torch.tensor(slide),
                "xy": torch.tensor([cell["x"], cell["y"]])}


def _write_slide(path: Path, features: list[torch.Tensor], coords: list[torch.Tensor], feature_dim: int) -> None:
    feats = torch.cat(features) if features else torch.zeros(0, feature_dim)
    xy = torch.cat(coords) if coords else torch.zeros(0, 2, dtype=torch.long)
    tmp = path.with_suffix(".tmp")
    save_file({"features": feats.float().contiguous(), "coords": xy.long().contiguous()}, str(tmp))
    tmp.replace(path)


def _extract_in_order(backbone, batches, targets: list[Path], todo: set[int], device: torch.device | None = None) -> int:
    """Features of tiles arriving in slide order (batches of ``pixels``, ``slide``, ``xy`` and
    optionally ``valid``) for the slides in ``todo``, the pixels sent to ``device`` (the
    backbone's; ``None``: left where they are); each slide's file is written once its tiles have
    passed, so only slides in progress are held. Returns the feature width."""
    pending: dict[int, tuple[list, list]] = {}
    feature_dim = 1
    for batch in batches:
        slides = batch["slide"]
        rows = torch.tensor([int(s) in todo for s in slides], dtype=torch.bool)
        if "valid" in batch:  # a stream's padding copies
            rows &= batch["valid"]
        for done in [s for s in pending if s < int(slides.min())]:
            _write_slide(targets[done], *pending.pop(done), feature_dim)
        if not rows.any():
            continue
        feats = backbone(to_device(batch["pixels"][rows], device)).float().cpu()
        feature_dim = feats.shape[-1]
        for s in slides[rows].unique().tolist():
            pick = slides[rows] == s
            buf = pending.setdefault(s, ([], []))
            buf[0].append(feats[pick])
            buf[1].append(batch["xy"][rows][pick])
    for s, buf in pending.items():
        _write_slide(targets[s], *buf, feature_dim)
    return feature_dim


@torch.inference_mode()
def extract_features(backbone, paths: list[Path], targets: list[Path], reader_options: dict, domain: DomainOptions,
                     preprocess: Preprocess, batch_size: int = 64, num_workers: int = 0,
                     device: torch.device | None = None) -> int:
    """Tile features of every slide in ``paths`` whose ``targets`` file is missing, written to it;
    returns how many slides were extracted. ``backbone`` maps pixels (B, C, S, S) to features
    (B, F) on ``device`` (where its module lies; ``None``: the pixels' own). Batches span slides;
    only the features of slides in progress are held."""
    todo = {i for i, t in enumerate(targets) if not t.is_file()}
    if not todo:
        return 0
    grids = [file_cells("wsi", p, reader_options) if i in todo else [] for i, p in enumerate(paths)]
    tiles = SlideTiles(paths, grids, reader_options, domain, preprocess)
    feature_dim = _extract_in_order(backbone, DataLoader(tiles, batch_size=batch_size, num_workers=num_workers),
                                    targets, todo, device)
    for i in todo:  # slides without any tissue tile
        if not targets[i].is_file():
            _write_slide(targets[i], [], [], feature_dim)
    return len(todo)


@torch.inference_mode()
def extract_stream(backbone, stream, targets: list[Path], batch_size: int = 64, device: torch.device | None = None) -> int:
    """The same from a slide-level shard split, whose tiles arrive in slide order with their
    slide index and ``xy``: features of the slides whose ``targets`` file is missing; returns how
    many slides were extracted."""
    todo = {i for i, t in enumerate(targets) if not t.is_file()}
    if todo:
        _extract_in_order(backbone, DataLoader(stream, batch_size=batch_size), targets, todo, device)
    return len(todo)


def stream_keys(tower_digest: str, shard_shas: list[str], slides: int) -> list[str]:
    """Cache keys of a shard split's slides: the tower, the split's shard checksums, the slide."""
    base = hashlib.sha256(f"{tower_digest}:{','.join(shard_shas)}".encode()).hexdigest()
    return [hashlib.sha256(f"{base}:{i}".encode()).hexdigest()[:32] for i in range(slides)]


def cached_bags(backbone, tower_digest: str, records: list[Record], reader_options: dict, domain: DomainOptions,
                preprocess: Preprocess, cache_dir: Path, **kwargs) -> tuple[list[Path], bool]:
    """The feature file of each record's slide under ``cache_dir`` (extracted first where missing);
    returns the files and whether every one was already there."""
    cache_dir = Path(cache_dir)
    targets = [cache_dir / f"{slide_key(tower_digest, r.path, reader_options, domain, preprocess)}.safetensors"
               for r in records]
    with computed_once(cache_dir / "extraction"):  # under DDP one rank extracts, the others read
        extracted = extract_features(backbone, [Path(r.path) for r in records], targets, reader_options, domain,
                                     preprocess, **kwargs)
    return targets, extracted == 0


class BagDataset(Dataset):
    """One slide per sample: ``features`` (n, F), ``coords`` (n, 2) level-0 (x, y), ``label``."""

    def __init__(self, records: list[Record], files: list[Path], num_classes: int, multi_label: bool = False,
                 pools: list[int] | None = None):
        self.records, self.files = records, files
        self.num_classes, self.multi_label = num_classes, multi_label
        self.pools = pools if pools is not None else [0] * len(records)

    def __len__(self) -> int:
        return len(self.records)

    def bag(self, i: int) -> dict[str, torch.Tensor]:
        """The slide's cached features and coordinates."""
        return load_file(str(self.files[i]))

    def target(self, i: int) -> torch.Tensor:
        return record_target(self.records[i], self.num_classes, self.multi_label)

    def __getitem__(self, i: int) -> dict:
        bag = self.bag(i)
        return {"features": bag["features"], "coords": bag["coords"], "label": self.target(i),
                "index": torch.tensor(i), "pool": torch.tensor(self.pools[i])}

    @staticmethod
    def collate(items: list[dict]) -> dict:
        """Bags padded to the longest one, with ``tile_mask`` marking the real tiles."""
        longest = max(1, max(len(it["features"]) for it in items))
        dim = max(it["features"].shape[-1] for it in items)
        feats = torch.zeros(len(items), longest, dim)
        coords = torch.zeros(len(items), longest, 2, dtype=torch.long)
        mask = torch.zeros(len(items), longest, dtype=torch.bool)
        for b, it in enumerate(items):
            n = len(it["features"])
            feats[b, :n], coords[b, :n], mask[b, :n] = it["features"], it["coords"], True
        out = {"features": feats, "coords": coords, TILE_MASK: mask}
        for key in ("label", "index", "pool", "valid"):
            if key in items[0]:
                out[key] = torch.stack([it[key] for it in items])
        return out
