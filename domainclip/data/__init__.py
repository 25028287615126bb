"""Card data, datasets and the feature cache. The Lightning DataModule,
``domainclip.data.datamodule.SplitDataModule``, is imported on first use: importing Lightning takes
seconds, and the commands that only read cards and files (cards, doctor, captions, shards,
evaluate, explain) never need it."""
from domainclip.data.card_data import CardData, load_card_data
from domainclip.data.dataset import FeatureDataset, ImageDataset

__all__ = ["CardData", "FeatureDataset", "ImageDataset", "SplitDataModule", "load_card_data"]


def __getattr__(name: str):
    """``domainclip.data.SplitDataModule`` keeps working, importing Lightning only then (PEP 562)."""
    if name == "SplitDataModule":
        from domainclip.data.datamodule import SplitDataModule

        return SplitDataModule
    raise AttributeError(f"module 'domainclip.data' has no attribute '{name}'")
