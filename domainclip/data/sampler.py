"""Training order: a seeded permutation per epoch, sharded across ranks so that every sample is
seen exactly once per epoch, and resumable mid-epoch.

``torch.utils.data.DistributedSampler`` pads each rank's share with repeated samples, so some
samples count twice per epoch. Here the padding indices point past the dataset; ``PaddedDataset``
serves them as copies flagged ``valid=False``, and the losses drop them. Every rank therefore
gets the same number of equal-sized batches (no collective hangs) and the real samples are an
exact partition of the dataset.
"""
from __future__ import annotations

import math

import torch
from torch.utils.data import Dataset, DistributedSampler


def epoch_permutation(n: int, seed: int, epoch: int, shuffle: bool = True) -> list[int]:
    """The global order of epoch ``epoch``: a pure function of (seed, epoch)."""
    if not shuffle:
        return list(range(n))
    gen = torch.Generator().manual_seed(int(seed) * 100_003 + int(epoch))
    return torch.randperm(n, generator=gen).tolist()


class EpochShardSampler(DistributedSampler):
    """Rank ``r`` of ``world`` takes positions ``r, r + world, ...`` of the epoch's permutation,
    padded to a multiple of ``world`` with indices ``>= len(dataset)`` (see ``PaddedDataset``).

    A subclass of ``DistributedSampler`` so that Lightning uses it as is and calls ``set_epoch``.
    ``resume_at(epoch, skip)`` leaves out the first ``skip`` samples of this rank's share in
    that epoch (the batches an interrupted run already consumed). ``len`` stays the full share,
    as Lightning's restored batch counter expects.
    """

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, seed: int = 0, shuffle: bool = True,
                 worker_generator: torch.Generator | None = None):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self.worker_generator = worker_generator  # the loader's: its draw seeds the workers each epoch
        self.n = len(dataset) if not isinstance(dataset, PaddedDataset) else dataset.n
        self.per_rank = math.ceil(self.n / num_replicas) if self.n else 0
        self._resume: tuple[int, int] | None = None

    def indices(self) -> list[int]:
        """This rank's indices for the current epoch (padding indices included)."""
        order = epoch_permutation(self.n, self.seed, self.epoch, self.shuffle)
        order += list(range(self.n, self.per_rank * self.num_replicas))  # padding, flagged invalid
        return order[self.rank :: self.num_replicas]

    def resume_at(self, epoch: int, skip: int) -> None:
        """Skip the first ``skip`` samples of this rank's share of epoch ``epoch`` (once)."""
        self._resume = (int(epoch), int(skip))

    def __iter__(self):
        skip = 0
        if self._resume is not None and self._resume[0] == self.epoch:
            skip, self._resume = self._resume[1], None
        yield from self.indices()[skip:]

    def __len__(self) -> int:
        return self.per_rank

    def set_epoch(self, epoch: int) -> None:
        """Select epoch ``epoch``; the loader's worker seeds become a function of (seed, rank, epoch)."""
        super().set_epoch(epoch)
        if self.worker_generator is not None:
            self.worker_generator.manual_seed((int(self.seed) * 1_000_003 + epoch) * 1_009 + self.rank)


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: numpy and python RNGs from the worker's torch seed (which
    PyTorch sets to the loader's base seed + worker id), so augmentations differ per worker and
    repeat across reruns."""
    import random

    import numpy as np

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class PaddedDataset(Dataset):
    """``dataset`` plus padding indices ``n .. n + pad - 1`` served as copies with ``valid=False``."""

    def __init__(self, dataset: Dataset, pad: int):
        self.dataset, self.n, self.pad = dataset, len(dataset), pad

    def __len__(self) -> int:
        return self.n + self.pad

    def __getitem__(self, i: int) -> dict:
        item = dict(self.dataset[i % self.n])
        item["valid"] = torch.tensor(i < self.n)
        return item

    def __getattr__(self, name):  # records, labels, pools of the wrapped dataset
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)
