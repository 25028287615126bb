"""LightningDataModule over per-split datasets (image tensors or cached features)."""
from __future__ import annotations

from collections import Counter

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, WeightedRandomSampler

from domainclip.core.distributed import world
from domainclip.data.sampler import EpochShardSampler, PaddedDataset, seed_worker

PIN_MEMORY = torch.cuda.is_available()  # page-locked batches: asynchronous host-to-GPU copies


def dataset_labels(dataset: Dataset) -> list[int]:
    """First label of every sample (class-balanced sampling uses it)."""
    if hasattr(dataset, "records"):
        return [r.label for r in dataset.records]
    labels = dataset.labels
    return (labels.argmax(-1) if labels.ndim == 2 else labels).tolist()


def collate_of(dataset: Dataset):
    """The dataset's own batching (bags of tiles pad to a mask), else PyTorch's default."""
    return getattr(dataset, "collate", None)


def balanced_sampler(dataset: Dataset, generator: torch.Generator) -> WeightedRandomSampler:
    """Draw classes equally often: weight 1 / (class count), with replacement."""
    labels = dataset_labels(dataset)
    counts = Counter(labels)
    weights = torch.tensor([1.0 / counts[y] for y in labels], dtype=torch.double)
    return WeightedRandomSampler(weights, num_samples=len(labels), replacement=True, generator=generator)


class SplitDataModule(pl.LightningDataModule):
    """Serves ready-made train/val/test datasets. Training draws a seeded permutation per epoch,
    sharded over the ranks so that each sample is seen once per epoch (``EpochShardSampler``);
    with ``balanced=True`` it samples classes equally often instead (with replacement)."""

    def __init__(self, datasets: dict[str, Dataset], batch_size: int = 32, num_workers: int = 0, seed: int = 0,
                 balanced: bool = False):
        super().__init__()
        self.datasets, self.batch_size, self.num_workers, self.seed = datasets, batch_size, num_workers, seed
        self.balanced = balanced
        self._resume_position: tuple[int, int] | None = None

    def resume_at(self, epoch: int, samples_done: int) -> None:
        """Continue an interrupted epoch: the next train loader starts ``epoch`` after the
        ``samples_done`` samples it had already served (set by the resume callback)."""
        self._resume_position = (int(epoch), int(samples_done))

    def eval_loader(self, split: str) -> DataLoader:
        """The split in its stored order, for prediction and evaluation."""
        return self._loader(split, shuffle=False)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if isinstance(self.datasets[split], IterableDataset):  # shard streams order and split themselves
            workers = self.num_workers if split == "train" else 0
            return DataLoader(self.datasets[split], batch_size=self.batch_size, num_workers=workers,
                              pin_memory=PIN_MEMORY)
        gen = torch.Generator().manual_seed(self.seed)
        sampler = balanced_sampler(self.datasets[split], gen) if shuffle and self.balanced else None
        return DataLoader(
            self.datasets[split], batch_size=self.batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
            generator=gen, num_workers=self.num_workers, persistent_workers=self.num_workers > 0, drop_last=False,
            pin_memory=PIN_MEMORY, collate_fn=collate_of(self.datasets[split]),
        )

    def train_dataloader(self) -> DataLoader:
        if isinstance(self.datasets["train"], IterableDataset):
            self.train_sampler = self.datasets["train"]  # set_epoch / resume_at live on the stream
            self.train_sampler.bind_rank()
            self._position(self.train_sampler)
            return self._loader("train", shuffle=True)
        if self.balanced:
            return self._loader("train", shuffle=True)
        rank, size = world()
        gen = torch.Generator()
        sampler = EpochShardSampler(self.datasets["train"], num_replicas=size, rank=rank, seed=self.seed,
                                    worker_generator=gen)
        sampler.set_epoch(0)
        pad = sampler.per_rank * size - sampler.n
        dataset = PaddedDataset(self.datasets["train"], pad) if pad else self.datasets["train"]
        self.train_sampler = sampler
        self._position(sampler)
        return DataLoader(dataset, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, drop_last=False, generator=gen,
                          worker_init_fn=seed_worker, pin_memory=PIN_MEMORY, collate_fn=collate_of(dataset))

    def _position(self, sampler) -> None:
        """The epoch (restored on resume) and, after an interruption, the data already consumed:
        set before the loader's first iterator, which may start workers at once."""
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            sampler.set_epoch(trainer.current_epoch)
        if self._resume_position is not None:
            sampler.resume_at(*self._resume_position)
            self._resume_position = None

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
