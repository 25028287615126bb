"""Datasets over card records: read -> domain intensities -> tower tensor."""
from __future__ import annotations

import torch
from torch.utils.data import Dataset

from domainclip.cards.manifest import Record
from domainclip.readers import read_record
from domainclip.transforms.pipeline import DomainOptions, Preprocess, model_input


def record_target(record: Record, num_classes: int, multi_label: bool) -> torch.Tensor:
    """A record's target: its class index, or a multi-hot vector when ``multi_label``."""
    if multi_label:
        t = torch.zeros(num_classes)
        t[list(record.labels)] = 1.0
        return t
    return torch.tensor(record.labels[0])


class ImageDataset(Dataset):
    """Yields ``{"pixels", "label", "index"}`` for each record; ``label`` is multi-hot when
    ``multi_label`` is set, else the class index."""

    def __init__(self, records: list[Record], reader: str, reader_options: dict, domain: DomainOptions,
                 preprocess: Preprocess, num_classes: int, multi_label: bool = False, pools: list[int] | None = None):
        self.records = records
        self.pools = pools if pools is not None else [0] * len(records)
        self.reader, self.reader_options = reader, dict(reader_options)
        self.domain, self.preprocess = domain, preprocess
        self.num_classes, self.multi_label = num_classes, multi_label

    def __len__(self) -> int:
        return len(self.records)

    def load(self, i: int) -> torch.Tensor:
        """The normalised (C, S, S) tensor of record ``i``."""
        rec = self.records[i]
        arr, meta = read_record(rec, self.reader, self.reader_options, self.preprocess.size)
        return model_input(arr, meta, self.domain, self.preprocess)

    def target(self, i: int) -> torch.Tensor:
        return record_target(self.records[i], self.num_classes, self.multi_label)

    def __getitem__(self, i: int) -> dict:
        return {"pixels": self.load(i), "label": self.target(i), "index": torch.tensor(i), "pool": torch.tensor(self.pools[i])}


class FeatureDataset(Dataset):
    """Precomputed image-backbone features with labels (for frozen image towers)."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, pools: list[int] | None = None):
        self.features, self.labels = features, labels
        self.pools = torch.tensor(pools if pools is not None else [0] * len(labels))

    def __len__(self) -> int:
        return self.features.shape[0]

    def __getitem__(self, i: int) -> dict:
        return {"features": self.features[i], "label": self.labels[i], "index": torch.tensor(i), "pool": self.pools[i]}
