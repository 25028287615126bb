"""LightningDataModule over per-split datasets (image tensors or cached features)."""
from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset


class SplitDataModule(pl.LightningDataModule):
    """Serves ready-made train/val/test datasets with a seeded shuffling generator."""

    def __init__(self, datasets: dict[str, Dataset], batch_size: int = 32, num_workers: int = 0, seed: int = 0):
        super().__init__()
        self.datasets, self.batch_size, self.num_workers, self.seed = datasets, batch_size, num_workers, seed

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        gen = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            self.datasets[split], batch_size=self.batch_size, shuffle=shuffle, generator=gen,
            num_workers=self.num_workers, persistent_workers=self.num_workers > 0, drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
