"""``ShardStream``: a seeded, exactly-once streaming dataset over a WebDataset shard set.

Per epoch the shard order is a permutation of (seed, epoch); the shards are dealt to the
``world x workers`` slots (each DDP rank's data-loader workers) greedily by sample count, so no
two slots share a shard. Each slot streams its shards through a seeded shuffle buffer and pads
to the same length (a multiple of the batch size) with copies flagged ``valid=False``, which the
losses drop: every rank runs the same number of equal batches and every real sample is seen
exactly once per epoch. ``resume_at`` skips what an interrupted epoch already consumed.
"""
from __future__ import annotations

import io
import json
import math
import random
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from domainclip.core.distributed import world
from domainclip.data.sampler import epoch_permutation


def decode(sample: dict) -> tuple[np.ndarray, dict]:
    """(pixels as float32 0..1, info) of one raw WebDataset sample."""
    arr = np.load(io.BytesIO(sample["pixels.npy"]), allow_pickle=False)
    pixels = arr.astype(np.float32) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float32)
    return pixels, json.loads(sample["json"])


def raw_samples(paths: list[str]):
    """Raw samples of ``paths`` in order (webdataset's tar reader; no splitting of its own)."""
    import webdataset as wds

    if not paths:
        return iter(())
    return iter(wds.WebDataset(paths, shardshuffle=False, nodesplitter=None, workersplitter=None, empty_check=False))


class ShardStream(IterableDataset):
    """One split of a shard set as ``{"pixels", "label", "index", "pool", "valid"}`` items."""

    def __init__(self, directory: Path, manifest: dict, split: str, mean, std, num_classes: int,
                 multi_label: bool = False, pools: list[int] | None = None, seed: int = 0, shuffle: bool = False,
                 buffer: int = 256, batch_size: int = 1, num_workers: int = 0, split_by_rank: bool = False,
                 normalize: bool = True):
        self.directory, self.split = Path(directory), split
        self.shards = manifest["splits"][split]["shards"]
        self.count = int(manifest["splits"][split]["count"])
        self.mean = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)
        self.inv_std = 1.0 / np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)
        self.num_classes, self.multi_label, self.normalize = num_classes, multi_label, normalize
        self.pools = pools if pools is not None else [0] * self.count
        self.seed, self.shuffle, self.buffer = seed, shuffle, max(1, int(buffer))
        self.batch_size, self.workers, self.split_by_rank = max(1, batch_size), max(1, num_workers), split_by_rank
        self.epoch, self._resume = 0, None
        self._rank_world = (0, 1)

    def bind_rank(self) -> None:
        """Record this process's (rank, world) now, in the main process: data-loader workers cannot
        see the process group."""
        self._rank_world = world() if self.split_by_rank else (0, 1)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.bind_rank()

    def resume_at(self, epoch: int, samples_done: int) -> None:
        """Skip the first ``samples_done`` samples this rank consumed in ``epoch`` (once)."""
        self._resume = (int(epoch), int(samples_done) // self.batch_size)

    def _world(self) -> tuple[int, int]:
        return self._rank_world

    def slots(self) -> list[list[dict]]:
        """Shards of each (rank, worker) slot this epoch: greedy by sample count, in shard order."""
        _, size = self._world()
        order = epoch_permutation(len(self.shards), self.seed, self.epoch, self.shuffle)
        slots, loads = [[] for _ in range(size * self.workers)], [0] * (size * self.workers)
        for i in order:
            k = loads.index(min(loads))
            slots[k].append(self.shards[i])
            loads[k] += self.shards[i]["count"]
        return slots

    def per_worker(self) -> int:
        """Items each worker yields: the largest slot, rounded up to whole batches."""
        most = max(sum(s["count"] for s in slot) for slot in self.slots())
        return math.ceil(most / self.batch_size) * self.batch_size

    def __len__(self) -> int:
        return self.per_worker() * self.workers

    def _item(self, pixels: np.ndarray, info: dict, valid: bool) -> dict:
        if self.normalize:  # in place on the float32 copy that decode made
            if pixels.shape[0] == 1:
                pixels = np.repeat(pixels, 3, axis=0)
            pixels -= self.mean
            pixels *= self.inv_std
        x = torch.from_numpy(pixels)
        labels = info["labels"]
        if self.multi_label:
            target = torch.zeros(self.num_classes)
            target[labels] = 1.0
        else:
            target = torch.tensor(labels[0])
        index = int(info["index"])
        item = {"pixels": x, "label": target, "index": torch.tensor(index), "pool": torch.tensor(self.pools[index]),
                "valid": torch.tensor(valid)}
        if "slide" in info:  # a tile of a slide-level shard set: its slide and level-0 position
            item["slide"], item["xy"] = torch.tensor(int(info["slide"])), torch.tensor(info["xy"])
        return item

    def _shuffled(self, stream, rng: random.Random):
        buffer = []
        for sample in stream:
            buffer.append(sample)
            if len(buffer) >= self.buffer:
                yield buffer.pop(rng.randrange(len(buffer)))
        while buffer:
            yield buffer.pop(rng.randrange(len(buffer)))

    def __iter__(self):
        rank, _ = self._world()
        info = get_worker_info()
        worker = info.id if info is not None else 0
        slot = rank * self.workers + worker
        paths = [str(self.directory / s["name"]) for s in self.slots()[slot]]
        stream = raw_samples(paths)
        if self.shuffle:
            stream = self._shuffled(stream, random.Random(f"{self.seed}:{self.epoch}:{slot}"))
        skip = 0
        if self._resume is not None and self._resume[0] == self.epoch:
            done = self._resume[1]  # batches this rank finished; the loader takes them round-robin from workers
            skip = (done - worker + self.workers - 1) // self.workers * self.batch_size if done > worker else 0
            self._resume = None
        yielded, last = 0, None
        for sample in stream:
            last = sample
            if yielded >= skip:
                yield self._item(*decode(sample), valid=True)
            yielded += 1
        if last is None:
            last = next(raw_samples([str(self.directory / self.shards[0]["name"])]))
        for _ in range(max(yielded, skip), self.per_worker()):
            yield self._item(*decode(last), valid=False)
