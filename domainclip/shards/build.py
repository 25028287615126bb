"""``build_shards``: run a card's reader and domain transforms once and write WebDataset shards.

Each split is cut into shards of a fixed number of samples (sized to about ``shard_mb``), so
shard ``i`` always holds the same records: shards are built in parallel processes, each written to
``NAME.tmp`` and renamed when complete, and a rebuild skips the shards already present (resume
without duplicates). Memory stays flat: a worker holds one sample at a time.

A sample is ``{key}.pixels.npy`` (C, S, S) in float16 0..1 (before the tower's mean/std) and
``{key}.json`` with the label(s), a pseudonymous group id, the caption candidates of its label set
and non-identifying reader metadata (no paths, no DICOM identifiers).
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np

from domainclip.captions.build import prepare_captions
from domainclip.core.fileio import sha256_file as file_sha256
from domainclip.data import load_card_data
from domainclip.data.expand import file_cells
from domainclip.readers import read_record
from domainclip.shards.manifest import FORMAT, SAFE_META, transform_digest
from domainclip.transforms.pipeline import DomainOptions, Preprocess, resize, to_unit_range

DTYPES = {"float16": np.float16, "uint8": np.uint8}


def pseudonym(group: str, salt: str) -> str:
    """A stable, non-reversible group id (the card digest salts it)."""
    return hashlib.sha256(f"{salt}:{group}".encode()).hexdigest()[:16]


def encode_pixels(arr01: np.ndarray, dtype: str) -> bytes:
    """``.npy`` bytes of the 0..1 pixels in the compact dtype (uint8 = round(255 x))."""
    arr = np.round(arr01 * 255).astype(np.uint8) if dtype == "uint8" else arr01.astype(np.float16)
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def sample_pixels(record, reader: str, options: dict, transforms: dict, size: int,
                  geometry: str = "squash/bilinear") -> np.ndarray:
    """Reader + domain transforms + resize (``geometry``: resize mode/interpolation): the
    (C, S, S) 0..1 pixels training would compute."""

    domain = DomainOptions.from_dict(transforms)
    arr, meta = read_record(record, reader, options, size)
    mode, interpolation = geometry.split("/")
    pixels = resize(to_unit_range(arr, meta, domain), size, mode, interpolation)[0].numpy()
    return pixels, {k: v for k, v in meta.items() if k in SAFE_META}


def write_shard(job: dict) -> dict:
    """Write one shard (skipped when complete already); returns its manifest entry."""
    import webdataset as wds

    path = Path(job["path"])
    if not path.is_file():
        tmp = path.with_name(path.name + ".tmp")
        with wds.TarWriter(str(tmp)) as sink:
            for index, record, captions, *tile in job["items"]:
                pixels, meta = sample_pixels(record, job["reader"], job["options"], job["transforms"], job["size"],
                                             job["geometry"])
                info = {"index": index, "labels": list(record.labels), "group": pseudonym(record.group, job["salt"]),
                        "split": job["split"], "captions": captions, "meta": meta, **(tile[0] if tile else {})}
                sink.write({"__key__": f"{job['split']}-{index:08d}", "pixels.npy": encode_pixels(pixels, job["dtype"]),
                            "json": json.dumps(info).encode()})
        tmp.replace(path)

    return {"name": path.name, "count": len(job["items"]), "first": job["items"][0][0], "sha256": file_sha256(path),
            "bytes": path.stat().st_size}


def slide_tile_items(items: list[tuple], options: dict) -> list[tuple]:
    """Slide-level cards: one shard sample per tissue tile, in slide order, each knowing its slide
    (index in the split) and its level-0 ``xy``, so that runs rebuild each slide's bag."""
    out = []
    for slide, record, captions in items:
        for cell in file_cells("wsi", record.path, options):
            tile = replace(record, extra={**record.extra, "read_options": cell})
            out.append((len(out), tile, captions, {"slide": slide, "xy": [cell["x"], cell["y"]]}))
    return out


def plan_jobs(data, bank, out: Path, size: int, dtype: str, shard_mb: float,
              geometry: str = "squash/bilinear") -> dict[str, list[dict]]:
    """Per split, the shard jobs: consecutive record ranges of a fixed count."""
    card = data.card
    channels = 3
    per_sample = channels * size * size * np.dtype(DTYPES[dtype]).itemsize + 2048
    per_shard = max(1, int(shard_mb * 1e6 // per_sample))
    jobs = {}
    for split, records in data.splits.items():
        pools = bank.pool_ids[split]
        items = [(i, r, [bank.texts[row] for row in bank.pools[pools[i]]]) for i, r in enumerate(records)]
        if card.label_level == "slide":
            items = slide_tile_items(items, card.reader.options)
        n = math.ceil(len(items) / per_shard)
        jobs[split] = [{"path": str(out / f"{split}-{k:05d}.tar"), "items": items[k * per_shard : (k + 1) * per_shard],
                        "split": split, "reader": card.reader.name, "options": card.reader.options,
                        "transforms": card.transforms, "size": size, "dtype": dtype, "salt": data.digest,
                        "geometry": geometry}
                       for k in range(n)]
    return jobs


def build_shards(card_ref: str, out: Path, size: int = 224, dtype: str = "float16", shard_mb: float = 200.0,
                 workers: int = 1, demo_dir: Path | None = None, template_set: str | None = None,
                 resize_mode: str = "squash", interpolation: str = "bilinear") -> dict:
    """Build (or finish building) the shard set of a card in ``out``; returns the manifest.
    ``resize_mode``/``interpolation`` must match the tower's preprocessing (open_clip towers:
    ``shortest``/``bicubic`` unless their config says otherwise)."""

    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r}: use one of {sorted(DTYPES)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_card_data(card_ref, demo_dir)
    bank, _ = prepare_captions(data, template_set)
    geometry = f"{resize_mode}/{interpolation}"
    Preprocess(size=size, resize_mode=resize_mode, interpolation=interpolation)  # refuses unknown modes
    jobs = plan_jobs(data, bank, out, size, dtype, shard_mb, geometry)
    flat = [j for split_jobs in jobs.values() for j in split_jobs]
    if workers > 1:  # spawn, not fork: forking a process with live threads (loggers, torch) can deadlock
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            entries = list(pool.map(write_shard, flat))
    else:
        entries = [write_shard(j) for j in flat]
    by_name = {e["name"]: e for e in entries}
    card = data.card
    manifest = {"format": FORMAT, "card": card.name, "card_digest": data.digest, "size": size, "dtype": dtype,
                "transform_digest": transform_digest(card.reader.name, card.reader.options, card.transforms, size, dtype,
                                                     geometry),
                "label_level": card.label_level,
                "splits": {s: {"count": sum(len(j["items"]) for j in js), "slides": len(data.splits[s]),
                               "shards": [by_name[Path(j["path"]).name] for j in js]} for s, js in jobs.items()}}
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2))
    tmp.replace(out / "manifest.json")
    return manifest
