"""Card data, datasets and the feature cache. The Lightning DataModule is
``domainclip.data.datamodule.SplitDataModule``: importing Lightning takes seconds, and the commands
that only read cards and files (cards, doctor, captions, shards, evaluate, explain) never need it."""
from domainclip.data.card_data import CardData, load_card_data
from domainclip.data.dataset import FeatureDataset, ImageDataset

__all__ = ["CardData", "FeatureDataset", "ImageDataset", "load_card_data"]
