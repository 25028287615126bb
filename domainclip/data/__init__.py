"""Card data, datasets, the feature cache and the DataModule."""
from domainclip.data.card_data import CardData, load_card_data
from domainclip.data.datamodule import SplitDataModule
from domainclip.data.dataset import FeatureDataset, ImageDataset

__all__ = ["CardData", "FeatureDataset", "ImageDataset", "SplitDataModule", "load_card_data"]
