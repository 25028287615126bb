"""Public import path of the contrastive losses (they live in ``domainclip.training.losses``)."""
from domainclip.training.losses import (
    LOSSES,
    Pairs,
    clip_loss,
    global_mean,
    global_pairs,
    label_aware_loss,
    siglip_loss,
)

__all__ = ["LOSSES", "Pairs", "clip_loss", "global_mean", "global_pairs", "label_aware_loss", "siglip_loss"]
